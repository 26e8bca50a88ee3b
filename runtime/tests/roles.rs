//! `dreampipe dev` starts each role with the settings the operator gives the role's pod: the
//! Deployments the operator builds for the examples, their args and environment turned into
//! the command line the binary parses, give the very `Args` that `dev::settings` builds from
//! the same inputs. A flag or env name renamed on one side, or a setting one side forgets,
//! fails here.

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{CommandFactory, Parser};
use k8s_openapi::api::apps::v1::Deployment;
use operator::build::{self, CONFIG_DIR, Children, Owner, SECRETS_DIR};
use operator::names::{self, RUNTIME_PORT};
use operator::settings::RuntimeSettings;
use operator::validate;
use runtime::auth::TokenArgs;
use runtime::cli::{Cli, Command};
use runtime::dev::settings::{self, AdapterPlace, ProjectorPlace};
use runtime::role::{ResourceArgs, ServiceArgs};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

const NAMESPACE: &str = "shop";
/// The pod name the downward API gives the containers.
const POD: &str = "pod-0";

fn example(file: &str) -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/salesforce")
        .join(file);
    let text = std::fs::read_to_string(&path).expect("example file");
    serde_yaml::Deserializer::from_str(&text)
        .map(|document| Value::deserialize(document).expect("YAML"))
        .filter(|document| !document.is_null())
        .collect()
}

/// An example resource as the API server stores it after `kubectl apply -n shop`.
fn stored<T: DeserializeOwned>(mut manifest: Value, uid: usize) -> T {
    let metadata = manifest["metadata"].as_object_mut().expect("metadata");
    metadata.insert("namespace".to_owned(), json!(NAMESPACE));
    metadata.insert(
        "uid".to_owned(),
        json!(format!("00000000-0000-4000-8000-{uid:012}")),
    );
    serde_json::from_value(manifest).expect("an example resource matching its CRD type")
}

/// The command line the pod's container runs: its args, then each variable of its environment
/// as the flag that reads it (field references and Secrets resolved as a kubelet would,
/// a Secret to `secret:<name>/<key>`).
fn command_line(deployment: &Deployment) -> Vec<String> {
    let pod = deployment.spec.template.spec.as_ref().unwrap();
    let container = &pod.containers[0];
    assert_eq!(
        container.command.as_deref(),
        Some(&["dreampipe".to_owned()][..])
    );
    let args = container.args.clone().unwrap_or_default();
    let cli = Cli::command();
    let subcommand = cli
        .find_subcommand(&args[0])
        .unwrap_or_else(|| panic!("the runtime has no subcommand {:?}", args[0]));
    let mut line = vec!["dreampipe".to_owned()];
    line.extend(args.iter().cloned());
    for var in container.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (Some(value), _) => value.clone(),
            (None, Some(from)) => match (&from.field_ref, &from.secret_key_ref) {
                (Some(field), _) => match field.field_path.as_str() {
                    "metadata.namespace" => NAMESPACE.to_owned(),
                    "metadata.name" => POD.to_owned(),
                    other => panic!("{}: unexpected field reference {other}", var.name),
                },
                (None, Some(secret)) => format!("secret:{}/{}", secret.name, secret.key),
                (None, None) => panic!("{}: an unexpected value source", var.name),
            },
            (None, None) => String::new(),
        };
        let flag = subcommand
            .get_arguments()
            .chain(cli.get_arguments())
            .find(|arg| arg.get_env() == Some(OsStr::new(&var.name)))
            .and_then(|arg| arg.get_long())
            .unwrap_or_else(|| panic!("`dreampipe {}` reads no {}", args[0], var.name));
        line.push(format!("--{flag}={value}"));
    }
    line
}

fn parse(children: &Children) -> Command {
    let line = command_line(&children.deployment);
    match Cli::try_parse_from(&line) {
        Ok(cli) => cli.command,
        Err(error) => panic!("{line:?} does not parse: {error}"),
    }
}

/// What the operator mounts and sets in every pod, as the flags every role shares.
fn in_pod(settings: &RuntimeSettings) -> ResourceArgs {
    ResourceArgs {
        config: vec![PathBuf::from(CONFIG_DIR)],
        service: ServiceArgs {
            namespace: NAMESPACE.to_owned(),
            nats_url: settings
                .nats_url
                .parse()
                .expect("the operator's NATS URL parses"),
            listen: SocketAddr::from(([0, 0, 0, 0], RUNTIME_PORT)),
        },
    }
}

#[test]
fn dev_starts_each_role_with_the_settings_the_operator_gives_its_pod() {
    let settings = RuntimeSettings::example();
    let entity: crds::Entity = stored(example("entity.yaml").remove(0), 1);
    let owner = Owner::of(&entity).expect("owner");
    let valid = validate::entity(&entity, &owner).expect("a valid Entity");
    let auth = entity
        .spec
        .receiver
        .auth
        .as_ref()
        .expect("the example's receiver has a token");
    let token_file = PathBuf::from(build::secret_file(
        &auth.secret_ref.name,
        &auth.secret_ref.key,
    ));

    let Command::Receiver(receiver) = parse(&build::entity::build(&valid, &settings)) else {
        panic!("the receiver's pod runs another role")
    };
    let tokens = TokenArgs {
        tokens_file: Some(token_file.clone()),
        tokens: None,
    };
    assert_eq!(
        receiver,
        settings::receiver(&entity, in_pod(&settings), tokens)
    );

    let projections = example("projections.yaml");
    assert!(!projections.is_empty());
    for (uid, manifest) in projections.into_iter().enumerate() {
        let projection: crds::Projection = stored(manifest, 10 + uid);
        let owner = Owner::of(&projection).expect("owner");
        let valid = validate::projection(&projection, &owner)
            .and_then(|unresolved| unresolved.resolve(Some(entity.clone())))
            .expect("a valid Projection");
        let Command::Projector(projector) = parse(&build::projection::build(&valid, &settings))
        else {
            panic!("the projector's pod runs another role")
        };
        let place = ProjectorPlace {
            database_url: format!(
                "secret:{}/{}",
                settings.database_secret.name, settings.database_secret.key
            ),
            replica_id: Some(POD.to_owned()),
            reader_role: Some(crds::projection::reader_role(NAMESPACE)),
            reader_members: settings.reader_members.clone(),
        };
        assert_eq!(
            projector,
            settings::projector(&projection, in_pod(&settings), place)
        );
    }

    let adapters = example("adapter.yaml");
    assert!(!adapters.is_empty());
    for (uid, manifest) in adapters.into_iter().enumerate() {
        let adapter: crds::Adapter = stored(manifest, 20 + uid);
        let owner = Owner::of(&adapter).expect("owner");
        let valid = validate::adapter(&adapter, &owner)
            .and_then(|unresolved| unresolved.resolve(Some(entity.clone())))
            .expect("a valid Adapter");
        let Command::Adapter(args) = parse(&build::adapter::build(&valid, &settings)) else {
            panic!("the adapter's pod runs another role")
        };
        let place = AdapterPlace {
            receiver_url: names::service_url(
                &adapter.spec.entity,
                names::Role::Receiver,
                NAMESPACE,
            ),
            receiver_token_file: Some(token_file.clone()),
            secrets_dir: PathBuf::from(SECRETS_DIR),
        };
        assert_eq!(args, settings::adapter(&adapter, in_pod(&settings), place));
    }
}

/// The chart's query Deployment (the operator builds none), as `helm template` renders it.
fn chart_query_deployment() -> Deployment {
    let helm = testbed::locate_binary("helm", None, &[]).expect("helm (run scripts/install-deps)");
    let output = std::process::Command::new(helm)
        .args([
            "template",
            "dreampipe",
            "charts/dreampipe",
            "--namespace",
            NAMESPACE,
        ])
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .output()
        .expect("helm runs");
    assert!(
        output.status.success(),
        "helm template failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("UTF-8");
    let query = serde_yaml::Deserializer::from_str(&text)
        .map(|document| Value::deserialize(document).expect("YAML"))
        .find(|m| m["kind"] == "Deployment" && m["metadata"]["name"] == "dreampipe-query")
        .expect("the chart renders the query Deployment");
    serde_json::from_value(query).expect("a well-formed Deployment")
}

#[test]
fn dev_starts_the_query_service_with_the_settings_the_chart_gives_its_pod() {
    let deployment = chart_query_deployment();
    let line = command_line(&deployment);
    let Command::Query(query) = Cli::try_parse_from(&line)
        .unwrap_or_else(|error| panic!("{line:?} does not parse: {error}"))
        .command
    else {
        panic!("the query pod runs another role")
    };
    let container = &deployment.spec.template.spec.as_ref().unwrap().containers[0];
    let nats_url = container
        .env
        .iter()
        .flatten()
        .find(|var| var.name == "NATS_URL")
        .and_then(|var| var.value.clone())
        .expect("the chart sets NATS_URL");
    let service = ServiceArgs {
        namespace: NAMESPACE.to_owned(),
        nats_url: nats_url.parse().expect("the chart's NATS_URL parses"),
        listen: SocketAddr::from(([0, 0, 0, 0], RUNTIME_PORT)),
    };
    let database_url = format!("secret:{}/reader-url", query_database_secret(container));
    let dev = settings::query(service, Some(database_url), None);
    // Where they differ on purpose (ADR 63): dev serves its one folder's namespace, open, on
    // one machine; the chart serves every namespace the operator watches, behind its tokens.
    assert_eq!(
        query.served,
        runtime::query::namespaces::ServedNamespaces::Every
    );
    assert_eq!(
        query.auth.tokens.as_deref(),
        Some("secret:dreampipe-query-admin-token/token")
    );
    assert_eq!(
        query.scoped_tokens_dir.as_deref(),
        Some(std::path::Path::new("/var/run/dreampipe/query-tokens"))
    );
    // The console is a chart value (query.console.enabled, off by default); dev always has it.
    assert!(!query.console);
    let query = runtime::query::Args {
        served: dev.served.clone(),
        auth: dev.auth.clone(),
        scoped_tokens_dir: dev.scoped_tokens_dir.clone(),
        console: dev.console,
        ..query
    };
    assert_eq!(query, dev);
}

fn query_database_secret(container: &k8s_openapi::api::core::v1::Container) -> String {
    container
        .env
        .iter()
        .flatten()
        .find(|var| var.name == "DATABASE_URL")
        .and_then(|var| var.value_from.as_ref()?.secret_key_ref.as_ref())
        .map(|secret| secret.name.clone())
        .expect("the chart reads DATABASE_URL from a Secret")
}
