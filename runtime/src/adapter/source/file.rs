//! The `file` source: a file of JSON lines or CSV (a header row, then records whose fields are
//! text), read once from start to end; then the adapter idles.

use std::path::Path;
use tracing::Instrument as _;

use crds::adapter::{FileFormat, FileSource as FileSpec};
use process::Health;
use serde_json::{Map, Value as Json};
use tokio_util::sync::CancellationToken;

use super::super::submit::SubmitError;
use super::{Feed, Source};

/// Why the file could not be read at all, or its records not submitted.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Submit(#[from] SubmitError),
}

/// A file read once.
#[derive(Debug)]
pub struct FileSource {
    spec: FileSpec,
}

impl FileSource {
    pub fn new(spec: &FileSpec) -> Self {
        FileSource { spec: spec.clone() }
    }
}

impl Source for FileSource {
    const KIND: &'static str = "file";
    type Error = FileError;

    /// Submits every record of the file, counting the bad lines as rejected, then idles.
    async fn run(
        &self,
        feed: &Feed,
        health: &Health,
        shutdown: &CancellationToken,
    ) -> Result<(), FileError> {
        health.set_ready(true);
        // With a volume, the operator mounts it at crds::adapter::FILE_VOLUME_DIR.
        let path = self.spec.resolved_path();
        let poll = async {
            let records = read(Path::new(&path), self.spec.format).await?;
            let good: Vec<Json> = records
                .into_iter()
                .filter_map(|record| record.map_err(|error| feed.reject(&error)).ok())
                .collect();
            let items = feed.map(&good);
            feed.submit(&items, shutdown)
                .await
                .or_else(super::ignore_shutdown)?;
            Ok::<_, FileError>(good.len())
        };
        let read_records = poll
            .instrument(crate::span!("adapter.poll", source = "file", path = %path))
            .await?;
        feed.stats().synced();
        tracing::info!(%path, records = read_records, "file read; idle until shut down");
        shutdown.cancelled().await;
        Ok(())
    }
}

/// Why one line or row is not a record.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    #[error("line {line} is not a JSON object")]
    Json {
        line: usize,
        #[source]
        source: serde_json::Error,
    },
    #[error("line {line} is a JSON {kind}, not an object")]
    NotObject { line: usize, kind: &'static str },
    #[error("CSV record {record} cannot be read")]
    Csv {
        record: usize,
        #[source]
        source: csv::Error,
    },
}

/// Every record of the file at `path`, or why each bad one is not a record.
pub async fn read(
    path: &Path,
    format: FileFormat,
) -> Result<Vec<Result<Json, LineError>>, FileError> {
    let bytes = tokio::fs::read(path)
        .await
        .map_err(|source| FileError::Read {
            path: path.display().to_string(),
            source,
        })?;
    Ok(match format {
        FileFormat::JsonLines => json_lines(&bytes),
        FileFormat::Csv => csv_records(&bytes),
    })
}

/// Parses JSON lines; blank lines are skipped.
pub fn json_lines(bytes: &[u8]) -> Vec<Result<Json, LineError>> {
    bytes
        .split(|b| *b == b'\n')
        .enumerate()
        .filter(|(_, line)| !line.iter().all(u8::is_ascii_whitespace))
        .map(|(index, line)| {
            let line_number = index + 1;
            match serde_json::from_slice(line) {
                Ok(record @ Json::Object(_)) => Ok(record),
                Ok(other) => Err(LineError::NotObject {
                    line: line_number,
                    kind: kind_of(&other),
                }),
                Err(source) => Err(LineError::Json {
                    line: line_number,
                    source,
                }),
            }
        })
        .collect()
}

/// Parses CSV with a header row into objects of text fields.
pub fn csv_records(bytes: &[u8]) -> Vec<Result<Json, LineError>> {
    let mut reader = csv::Reader::from_reader(bytes);
    let headers = match reader.headers() {
        Ok(headers) => headers.clone(),
        Err(source) => return vec![Err(LineError::Csv { record: 0, source })],
    };
    reader
        .records()
        .enumerate()
        .map(|(index, row)| {
            let row = row.map_err(|source| LineError::Csv {
                record: index + 1,
                source,
            })?;
            let object: Map<String, Json> = headers
                .iter()
                .zip(row.iter())
                .map(|(name, value)| (name.to_owned(), Json::String(value.to_owned())))
                .collect();
            Ok(Json::Object(object))
        })
        .collect()
}

fn kind_of(value: &Json) -> &'static str {
    match value {
        Json::Null => "null",
        Json::Bool(_) => "boolean",
        Json::Number(_) => "number",
        Json::String(_) => "string",
        Json::Array(_) => "array",
        Json::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_lines_are_records_and_a_bad_line_is_reported_by_number() {
        let records = json_lines(b"{\"id\":\"a\"}\n\nnot json\n[1]\n{\"id\":\"b\"}\n");
        assert_eq!(records.len(), 4);
        assert_eq!(records[0].as_ref().unwrap(), &json!({"id": "a"}));
        assert!(matches!(records[1], Err(LineError::Json { line: 3, .. })));
        assert!(matches!(
            records[2],
            Err(LineError::NotObject {
                line: 4,
                kind: "array"
            })
        ));
        assert_eq!(records[3].as_ref().unwrap(), &json!({"id": "b"}));
    }

    #[test]
    fn csv_rows_become_objects_named_by_the_header() {
        let records = csv_records(b"id,name,city\n1,Ada,\"Oslo, Norway\"\n2,Bo,Graz\n");
        let records: Vec<Json> = records.into_iter().map(Result::unwrap).collect();
        assert_eq!(
            records,
            vec![
                json!({"id": "1", "name": "Ada", "city": "Oslo, Norway"}),
                json!({"id": "2", "name": "Bo", "city": "Graz"}),
            ]
        );
    }
}
