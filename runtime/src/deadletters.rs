//! `dreampipe deadletters list|show|handle`: a Projection's poison events read from (and
//! marked handled in) the projector's Postgres database, for on-call. The queries are the
//! projector's own (`projector::database::dead_letters`); this module parses, connects and
//! prints.

#![allow(
    clippy::print_stdout,
    reason = "a command line tool: its tables and records are its output"
)]

use crate::sql::Schema;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio_util::sync::CancellationToken;

use crate::projector::database::{
    self, DatabaseError, DeadLetterFilter, DeadLetterPage, DeadLetterRecord, DeadLetterSummary,
    Handled,
};

/// Flags of `dreampipe deadletters`.
#[derive(Clone, Debug, PartialEq, Eq, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: DeadLettersCommand,
}

/// What to do with the dead letters.
#[derive(Clone, Debug, PartialEq, Eq, clap::Subcommand)]
pub enum DeadLettersCommand {
    /// A table of a Projection's dead letters, oldest first, a page at a time.
    List(ListArgs),
    /// One dead letter with its event.
    Show(ShowArgs),
    /// Marks dead letters handled (after the cause was fixed or the event judged harmless).
    Handle(HandleArgs),
}

/// Which Projection, in which database.
#[derive(Clone, Debug, PartialEq, Eq, clap::Args)]
pub struct Target {
    /// Postgres URL of the projector's database (a role that may read `dp_dead_letters`;
    /// `handle` also updates it).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    /// Namespace of the Projection.
    #[arg(long, env = "DREAMPIPE_NAMESPACE", default_value = "default")]
    pub namespace: String,
    /// Name of the Projection.
    pub projection: String,
}

/// Flags of `dreampipe deadletters list`.
#[derive(Clone, Debug, PartialEq, Eq, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub target: Target,
    /// Only this generation's dead letters.
    #[arg(long)]
    pub generation: Option<String>,
    /// Only those nobody marked handled.
    #[arg(long)]
    pub unhandled: bool,
    /// Only ids above this one (the previous page's last id).
    #[arg(long)]
    pub after_id: Option<i64>,
    /// Dead letters per page.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: u32,
    /// `table` for a terminal, `json` for scripts.
    #[arg(long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// Flags of `dreampipe deadletters show`.
#[derive(Clone, Debug, PartialEq, Eq, clap::Args)]
pub struct ShowArgs {
    #[command(flatten)]
    pub target: Target,
    /// The dead letter's id (the ID column of `list`).
    pub id: i64,
    /// `text` for a terminal, `json` for scripts.
    #[arg(long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// Flags of `dreampipe deadletters handle`.
#[derive(Clone, Debug, PartialEq, Eq, clap::Args)]
pub struct HandleArgs {
    #[command(flatten)]
    pub target: Target,
    /// Ids of the dead letters to mark handled.
    #[arg(required = true, num_args = 1..)]
    pub ids: Vec<i64>,
    /// Who handled them (recorded with the mark).
    #[arg(long, env = "USER", default_value = "dreampipe")]
    pub by: String,
}

/// How results are printed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// A table (`list`) or a block of fields (`show`).
    #[default]
    #[value(alias = "text")]
    Table,
    Json,
}

/// Why a dead-letter command failed.
#[derive(Debug, thiserror::Error)]
pub enum DeadLettersError {
    #[error("invalid --database-url")]
    DatabaseUrl(#[source] sqlx::Error),
    #[error("cannot reach the database at --database-url")]
    Unreachable(#[source] sqlx::Error),
    #[error(
        "the database has no dp_dead_letters table in the namespace's schema: no projector of \
         that namespace has run against it (is --database-url the projectors' database, and \
         --namespace the Projection's?)"
    )]
    NoTable(#[source] DatabaseError),
    #[error(
        "dp_dead_letters predates handled marks: start a projector of this release once (it \
         adds the columns)"
    )]
    OldTable(#[source] DatabaseError),
    #[error(transparent)]
    Database(DatabaseError),
    #[error("projection {projection} has no dead letter {id}")]
    UnknownId { projection: String, id: i64 },
    #[error("could not write JSON")]
    Json(#[source] serde_json::Error),
}

impl From<DatabaseError> for DeadLettersError {
    fn from(error: DatabaseError) -> Self {
        let code = match &error {
            DatabaseError::Query { source, .. } => database::sqlstate(source),
            _ => None,
        };
        match code.as_deref() {
            Some("42P01") => DeadLettersError::NoTable(error),
            Some("42703") => DeadLettersError::OldTable(error),
            _ => DeadLettersError::Database(error),
        }
    }
}

/// Runs one dead-letter command; `shutdown` cuts it short.
pub async fn run(args: Args, shutdown: CancellationToken) -> Result<(), DeadLettersError> {
    tokio::select! {
        result = run_command(args.command) => result,
        () = shutdown.cancelled() => Ok(()),
    }
}

async fn run_command(command: DeadLettersCommand) -> Result<(), DeadLettersError> {
    match command {
        DeadLettersCommand::List(ListArgs {
            target,
            generation,
            unhandled,
            after_id,
            limit,
            output,
        }) => {
            let (pool, schema, projection) = connect(&target).await?;
            let filter = DeadLetterFilter {
                generation,
                unhandled_only: unhandled,
                after_id,
                limit,
            };
            let page = database::list_dead_letters(&pool, &schema, &projection, &filter).await?;
            match output {
                Output::Table => print!("{}", render_page(&page)),
                Output::Json => println!("{}", to_json(&page)?),
            }
        }
        DeadLettersCommand::Show(ShowArgs { target, id, output }) => {
            let (pool, schema, projection) = connect(&target).await?;
            let record = database::dead_letter(&pool, &schema, &projection, id)
                .await?
                .ok_or(DeadLettersError::UnknownId { projection, id })?;
            match output {
                Output::Table => print!("{}", render_record(&record)),
                Output::Json => println!("{}", to_json(&record)?),
            }
        }
        DeadLettersCommand::Handle(HandleArgs { target, ids, by }) => {
            let (pool, schema, projection) = connect(&target).await?;
            // Every id is checked before any is marked, so a typo marks nothing.
            for &id in &ids {
                if database::dead_letter(&pool, &schema, &projection, id)
                    .await?
                    .is_none()
                {
                    return Err(DeadLettersError::UnknownId { projection, id });
                }
            }
            for id in ids {
                match database::mark_handled(&pool, &schema, &projection, id, &by).await? {
                    Some(Handled::Now(letter)) => {
                        tracing::info!(%projection, id, by, "dead letter marked handled");
                        println!("{}", handled_line(&letter, false));
                    }
                    Some(Handled::Before(letter)) => println!("{}", handled_line(&letter, true)),
                    None => return Err(DeadLettersError::UnknownId { projection, id }),
                }
            }
        }
    }
    Ok(())
}

/// A pool of one connection, connected now so that an unreachable database is said at once;
/// and the Projection's id in the bookkeeping tables (`<namespace>/<name>`).
/// A pool on the target database, the namespace's schema and the projection's id in it.
async fn connect(target: &Target) -> Result<(PgPool, Schema, String), DeadLettersError> {
    let options: sqlx::postgres::PgConnectOptions = target
        .database_url
        .parse()
        .map_err(DeadLettersError::DatabaseUrl)?;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
        .map_err(DeadLettersError::Unreachable)?;
    Ok((
        pool,
        Schema::of_namespace(&target.namespace),
        format!("{}/{}", target.namespace, target.projection),
    ))
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, DeadLettersError> {
    serde_json::to_string_pretty(value).map_err(DeadLettersError::Json)
}

/// At most `max` characters of `text` on one line, `…` where it was cut.
fn one_line(text: &str, max: usize) -> String {
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if line.chars().count() <= max {
        return line;
    }
    let mut cut: String = line.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// `list` as a table, with a line saying how to get the next page.
pub fn render_page(page: &DeadLetterPage) -> String {
    if page.dead_letters.is_empty() {
        return format!("no dead letters of {} match\n", page.projection);
    }
    let header = [
        "ID",
        "GENERATION",
        "PARTITION",
        "SEQUENCE",
        "KEY",
        "VERSION",
        "RECORDED",
        "HANDLED",
        "REASON",
    ];
    let rows: Vec<[String; 9]> = page
        .dead_letters
        .iter()
        .map(|d| {
            [
                d.id.to_string(),
                d.generation.clone(),
                d.partition.to_string(),
                d.sequence.to_string(),
                one_line(d.key.as_deref().unwrap_or("-"), 32),
                d.version.map_or_else(|| "-".to_owned(), |v| v.to_string()),
                short_time(&d.recorded_at),
                d.handled_at.as_deref().map_or_else(
                    || "no".to_owned(),
                    |at| {
                        format!(
                            "{} by {}",
                            short_time(at),
                            d.handled_by.as_deref().unwrap_or("?")
                        )
                    },
                ),
                one_line(&d.reason, 80),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .enumerate()
            .map(|(i, (cell, width))| {
                if i + 1 == cells.len() {
                    cell.clone()
                } else {
                    format!("{cell:<width$}")
                }
            })
            .collect();
        format!("{}\n", padded.join("  "))
    };
    let mut out = line(&header.map(str::to_owned));
    for row in &rows {
        out.push_str(&line(row));
    }
    if let Some(after) = page.next_after_id {
        out.push_str(&format!("more: add --after-id {after}\n"));
    }
    out
}

/// `2026-12-02T19:16:18.123456+00:00` as `2026-12-02 19:16:18`.
fn short_time(time: &str) -> String {
    let seconds = time.get(..19).unwrap_or(time);
    seconds.replacen('T', " ", 1)
}

/// `show` as a block of fields and the event.
pub fn render_record(record: &DeadLetterRecord) -> String {
    let d = &record.summary;
    let mut out = String::new();
    let mut field = |name: &str, value: &str| out.push_str(&format!("{name:<11} {value}\n"));
    field("id", &d.id.to_string());
    field("projection", &record.projection);
    field("generation", &d.generation);
    field("partition", &d.partition.to_string());
    field("sequence", &d.sequence.to_string());
    field("key", d.key.as_deref().unwrap_or("-"));
    field(
        "version",
        &d.version.map_or_else(|| "-".to_owned(), |v| v.to_string()),
    );
    field("recorded", &d.recorded_at);
    let handled = match (&d.handled_at, &d.handled_by) {
        (Some(at), by) => format!("{at} by {}", by.as_deref().unwrap_or("?")),
        (None, _) => "no".to_owned(),
    };
    field("handled", &handled);
    field("reason", &d.reason);
    match (&record.event, &record.payload) {
        (Some(event), _) => {
            let pretty = serde_json::to_string_pretty(event).unwrap_or_else(|_| event.to_string());
            out.push_str(&format!("event\n{pretty}\n"));
        }
        (None, Some(payload)) => {
            out.push_str(&format!("payload (not storable as JSON)\n{payload}\n"))
        }
        (None, None) => out.push_str("payload     (not kept)\n"),
    }
    out
}

fn handled_line(letter: &DeadLetterSummary, before: bool) -> String {
    let at = letter.handled_at.as_deref().unwrap_or("?");
    let by = letter.handled_by.as_deref().unwrap_or("?");
    if before {
        format!(
            "dead letter {} was already handled at {at} by {by}",
            letter.id
        )
    } else {
        format!("dead letter {} marked handled at {at} by {by}", letter.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(id: i64, reason: &str, handled: bool) -> DeadLetterSummary {
        DeadLetterSummary {
            id,
            generation: "a1b2c3".into(),
            partition: 3,
            sequence: 1042,
            key: Some("c-17".into()),
            version: Some(2),
            reason: reason.into(),
            recorded_at: "2026-12-02T19:16:18.123456+00:00".into(),
            handled_at: handled.then(|| "2026-12-02T20:00:00.5+00:00".into()),
            handled_by: handled.then(|| "ada".into()),
        }
    }

    #[test]
    fn the_table_aligns_columns_and_says_how_to_get_the_next_page() {
        let page = DeadLetterPage {
            projection: "shop/customers".into(),
            dead_letters: vec![
                letter(7, "a filter failed:\nno such key: city", false),
                letter(12, "the database rejected the row", true),
            ],
            next_after_id: Some(12),
        };
        let table = render_page(&page);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(
            lines[0].starts_with("ID  GENERATION  PARTITION  SEQUENCE  KEY "),
            "{table}"
        );
        assert!(
            lines[1].starts_with("7   a1b2c3      3          1042      c-17"),
            "{table}"
        );
        assert!(
            lines[1].ends_with("a filter failed: no such key: city"),
            "{table}"
        );
        assert!(lines[2].contains("2026-12-02 20:00:00 by ada"), "{table}");
        assert_eq!(lines[3], "more: add --after-id 12");
        let reason_at = lines[0].find("REASON").unwrap();
        assert_eq!(lines[2].find("the database").unwrap(), reason_at);
    }

    #[test]
    fn an_empty_page_says_so() {
        let page = DeadLetterPage {
            projection: "shop/customers".into(),
            dead_letters: vec![],
            next_after_id: None,
        };
        assert_eq!(
            render_page(&page),
            "no dead letters of shop/customers match\n"
        );
    }

    #[test]
    fn a_record_shows_every_field_and_the_event() {
        let record = DeadLetterRecord {
            projection: "shop/customers".into(),
            summary: letter(7, "out of range for type integer", false),
            event: Some(serde_json::json!({"key": "c-17", "state": {"spend": 1}})),
            payload: None,
            message_base64: None,
        };
        let block = render_record(&record);
        for expected in [
            "id          7\n",
            "projection  shop/customers\n",
            "partition   3\n",
            "sequence    1042\n",
            "key         c-17\n",
            "recorded    2026-12-02T19:16:18.123456+00:00\n",
            "handled     no\n",
            "reason      out of range for type integer\n",
            "event\n{\n  \"key\": \"c-17\",",
        ] {
            assert!(block.contains(expected), "{expected:?} in\n{block}");
        }
    }

    #[test]
    fn long_keys_and_reasons_are_cut_on_one_line() {
        assert_eq!(one_line("a\nb", 10), "a b");
        assert_eq!(one_line("abcdefghij", 5), "abcd…");
    }
}
