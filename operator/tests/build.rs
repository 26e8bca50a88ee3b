//! The pure builders, fed the example resources of `fixtures/shop.yaml`.

mod common;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, EnvVar, PodSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use operator::build::{self, CONFIG_DIR, Children};
use operator::names::CONFIG_HASH_ANNOTATION;
use operator::settings::RuntimeSettings;

fn pod_spec(deployment: &Deployment) -> &PodSpec {
    deployment.spec.template.spec.as_ref().expect("a pod spec")
}

fn container(deployment: &Deployment) -> &Container {
    &pod_spec(deployment).containers[0]
}

fn env_of(deployment: &Deployment) -> BTreeMap<String, EnvVar> {
    container(deployment)
        .env
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|e| (e.name.clone(), e))
        .collect()
}

fn value<'a>(env: &'a BTreeMap<String, EnvVar>, name: &str) -> Option<&'a str> {
    env.get(name).and_then(|e| e.value.as_deref())
}

fn config_hash(deployment: &Deployment) -> String {
    deployment
        .spec
        .template
        .metadata
        .as_ref()
        .unwrap()
        .annotations
        .as_ref()
        .unwrap()[CONFIG_HASH_ANNOTATION]
        .clone()
}

fn receiver() -> Children {
    common::receiver(&common::shop().entity, &RuntimeSettings::example())
}

fn projector() -> Children {
    let shop = common::shop();
    common::projector(&shop.projection, &shop.entity, &RuntimeSettings::example())
}

#[test]
fn receiver_runs_the_receiver_role_with_its_entity_config() {
    let children = receiver();
    let deployment = &children.deployment;
    assert_eq!(
        deployment.metadata.name.as_deref(),
        Some("customer-receiver")
    );
    assert_eq!(deployment.metadata.namespace.as_deref(), Some("shop"));
    assert_eq!(deployment.spec.replicas, Some(2));
    let container = container(deployment);
    assert_eq!(
        container.command.as_deref(),
        Some(&["dreampipe".to_owned()][..])
    );
    assert_eq!(
        container.args.as_deref(),
        Some(&["receiver".to_owned()][..])
    );
    let env = env_of(deployment);
    assert_eq!(value(&env, "DREAMPIPE_CONFIG"), Some(CONFIG_DIR));
    assert_eq!(value(&env, "DREAMPIPE_ENTITY"), Some("customer"));
    assert_eq!(value(&env, "DREAMPIPE_LISTEN"), Some("0.0.0.0:8080"));
    assert_eq!(value(&env, "DREAMPIPE_LOG_FORMAT"), Some("json"));
    assert_eq!(
        value(&env, "NATS_URL"),
        Some(RuntimeSettings::example().nats_url.as_str())
    );
    let namespace = env["DREAMPIPE_NAMESPACE"].value_from.as_ref().unwrap();
    assert_eq!(
        namespace.field_ref.as_ref().unwrap().field_path,
        "metadata.namespace"
    );

    let data = children.config_map.data.as_ref().unwrap();
    assert_eq!(data.keys().collect::<Vec<_>>(), ["entity.yaml"]);
    let entity: crds::Entity = serde_yaml::from_str(&data["entity.yaml"]).unwrap();
    let mut expected = common::shop().entity.spec;
    expected.stream.replicas = Some(RuntimeSettings::example().default_stream_replicas);
    assert_eq!(entity.spec, expected);
    crds::entity::validate_entity(&entity).unwrap();

    let service = children.service.expect("the receiver serves traffic");
    assert_eq!(service.metadata.name.as_deref(), Some("customer-receiver"));
    let spec = service.spec.unwrap();
    assert_eq!(spec.ports.unwrap()[0].port, 8080);
    assert_eq!(spec.selector, deployment.spec.selector.match_labels);
}

/// The receiver creates the stream from its mounted Entity: one that names no replicas gets
/// the operator's default (3 from the chart on a NATS cluster); one that names them keeps them.
#[test]
fn entities_without_stream_replicas_get_the_operators_default() {
    let clustered = RuntimeSettings {
        default_stream_replicas: 3,
        ..RuntimeSettings::example()
    };
    let replicas_in = |entity: &crds::Entity| {
        let children = common::receiver(entity, &clustered);
        let data = children.config_map.data.unwrap();
        let mounted: crds::Entity = serde_yaml::from_str(&data["entity.yaml"]).unwrap();
        mounted.spec.stream.replicas
    };
    let mut entity = common::shop().entity;
    assert_eq!(entity.spec.stream.replicas, None);
    assert_eq!(replicas_in(&entity), Some(3));
    entity.spec.stream.replicas = Some(1);
    assert_eq!(
        replicas_in(&entity),
        Some(1),
        "an Entity's own setting wins"
    );
}

/// With a collector configured every runtime pod exports its traces there, named by the
/// resource it runs for; without one no OTEL variable is set, so nothing is traced.
#[test]
fn runtime_pods_export_traces_only_when_the_operator_has_a_collector() {
    let shop = common::shop();
    let traced = RuntimeSettings {
        otlp_endpoint: Some("http://collector.observability.svc:4318".to_owned()),
        ..RuntimeSettings::example()
    };
    for (settings, expected) in [
        (&traced, Some("http://collector.observability.svc:4318")),
        (&RuntimeSettings::example(), None),
    ] {
        let deployments = [
            common::receiver(&shop.entity, settings).deployment,
            common::projector(&shop.projection, &shop.entity, settings).deployment,
        ];
        for deployment in &deployments {
            let env = env_of(deployment);
            assert_eq!(value(&env, "OTEL_EXPORTER_OTLP_ENDPOINT"), expected);
            let resource = value(&env, "OTEL_RESOURCE_ATTRIBUTES");
            match expected {
                Some(_) => assert!(
                    resource.is_some_and(
                        |r| r.starts_with("k8s.namespace.name=shop,dreampipe.resource=")
                    ),
                    "{resource:?}"
                ),
                None => assert_eq!(resource, None),
            }
        }
    }
}

#[test]
fn receiver_reads_its_tokens_from_the_mounted_secret_key() {
    let deployment = receiver().deployment;
    let env = env_of(&deployment);
    assert_eq!(
        value(&env, "DREAMPIPE_TOKENS_FILE"),
        Some("/var/run/secrets/dreampipe/customer-ingest/tokens")
    );
    let pod = pod_spec(&deployment);
    let volume = pod
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find(|v| v.secret.is_some())
        .expect("a secret volume");
    assert_eq!(
        volume.secret.as_ref().unwrap().secret_name.as_deref(),
        Some("customer-ingest")
    );
    let mount = container(&deployment)
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.name == volume.name)
        .unwrap();
    assert_eq!(
        mount.mount_path,
        "/var/run/secrets/dreampipe/customer-ingest"
    );
}

#[test]
fn an_open_receiver_has_no_tokens_file_and_no_secret_volume() {
    let mut entity = common::shop().entity;
    entity.spec.receiver.auth = None;
    let deployment = common::receiver(&entity, &RuntimeSettings::example()).deployment;
    assert!(!env_of(&deployment).contains_key("DREAMPIPE_TOKENS_FILE"));
    assert!(
        pod_spec(&deployment)
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .all(|v| v.secret.is_none())
    );
}

#[test]
fn every_child_is_owned_by_its_resource_and_labelled() {
    let shop = common::shop();
    let settings = RuntimeSettings::example();
    let built = [
        ("customer", "Entity", "receiver", receiver()),
        ("customers", "Projection", "projector", projector()),
        (
            "crm",
            "Adapter",
            "adapter",
            common::adapter(&shop.adapter, &shop.entity, &settings),
        ),
    ];
    for (name, kind, component, children) in built {
        let mut metas = vec![&children.config_map.metadata, &children.deployment.metadata];
        metas.extend(children.service.as_ref().map(|s| &s.metadata));
        for meta in metas {
            assert_eq!(
                meta.name.as_deref(),
                Some(format!("{name}-{component}").as_str())
            );
            let owner = &meta.owner_references.as_ref().unwrap()[0];
            assert_eq!((owner.kind.as_str(), owner.name.as_str()), (kind, name));
            assert_eq!(owner.controller, Some(true));
            let labels = meta.labels.as_ref().unwrap();
            assert_eq!(labels["app.kubernetes.io/name"], "dreampipe");
            assert_eq!(labels["app.kubernetes.io/instance"], name);
            assert_eq!(labels["app.kubernetes.io/component"], component);
            assert_eq!(labels["app.kubernetes.io/part-of"], "dreampipe");
            assert_eq!(labels["app.kubernetes.io/managed-by"], "dreampipe-operator");
        }
    }
}

#[test]
fn runtime_pods_meet_the_restricted_pod_security_standard() {
    for deployment in [receiver().deployment, projector().deployment] {
        let pod = pod_spec(&deployment);
        let pod_security = pod.security_context.as_ref().unwrap();
        assert_eq!(pod_security.run_as_non_root, Some(true));
        assert_eq!(
            pod_security.seccomp_profile.as_ref().unwrap().type_,
            "RuntimeDefault"
        );
        assert_eq!(pod.automount_service_account_token, Some(false));
        let container = container(&deployment);
        let security = container.security_context.as_ref().unwrap();
        assert_eq!(security.allow_privilege_escalation, Some(false));
        assert_eq!(security.read_only_root_filesystem, Some(true));
        assert_eq!(
            security.capabilities.as_ref().unwrap().drop.as_deref(),
            Some(&["ALL".to_owned()][..])
        );
        let readiness = container
            .readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(readiness.path.as_deref(), Some("/readyz"));
        let liveness = container
            .liveness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(liveness.path.as_deref(), Some("/healthz"));
        let requests = container
            .resources
            .as_ref()
            .unwrap()
            .requests
            .as_ref()
            .unwrap();
        assert!(requests.contains_key("cpu") && requests.contains_key("memory"));
    }
}

#[test]
fn projector_gets_its_database_url_from_a_secret_and_its_replica_id_from_the_pod_name() {
    let deployment = projector().deployment;
    assert_eq!(
        deployment.metadata.name.as_deref(),
        Some("customers-projector")
    );
    assert_eq!(
        container(&deployment).args.as_deref(),
        Some(&["projector".to_owned()][..])
    );
    let env = env_of(&deployment);
    assert_eq!(value(&env, "DREAMPIPE_PROJECTION"), Some("customers"));
    let database = &env["DATABASE_URL"];
    assert!(
        database.value.is_none(),
        "DATABASE_URL must never be inline"
    );
    let secret = database
        .value_from
        .as_ref()
        .unwrap()
        .secret_key_ref
        .as_ref()
        .unwrap();
    assert_eq!(
        (secret.name.as_str(), secret.key.as_str()),
        ("dreampipe-database", "writer-url")
    );
    let pod_name = env["POD_NAME"].value_from.as_ref().unwrap();
    assert_eq!(
        pod_name.field_ref.as_ref().unwrap().field_path,
        "metadata.name"
    );
}

#[test]
fn a_projection_names_its_own_database_secret_and_gets_its_namespaces_reader_role() {
    let shop = common::shop();
    let mut projection = shop.projection.clone();
    // As a user writes it: `database: {secretRef: {name: team-db}}`.
    projection.spec.database = Some(serde_yaml::from_str("secretRef: {name: team-db}").unwrap());
    let settings = RuntimeSettings::example();
    let children = common::projector(&projection, &shop.entity, &settings);
    let env = env_of(&children.deployment);
    let secret = env["DATABASE_URL"]
        .value_from
        .as_ref()
        .and_then(|from| from.secret_key_ref.as_ref())
        .unwrap();
    assert_eq!(
        (secret.name.as_str(), secret.key.as_str()),
        ("team-db", "writer-url"),
        "the key defaults to writer-url"
    );
    assert_eq!(value(&env, "DREAMPIPE_READER_ROLE"), Some("dp_shop_reader"));
    assert_eq!(
        value(&env, "DREAMPIPE_READER_MEMBERS"),
        Some("dreampipe_reader")
    );
    let job = build::projection::drop_job(
        &projection,
        &operator::build::Owner::of(&projection).unwrap(),
        &settings,
    );
    let job_env = job.spec.unwrap().template.spec.unwrap().containers[0]
        .env
        .clone()
        .unwrap();
    let job_secret = job_env
        .iter()
        .find(|e| e.name == "DATABASE_URL")
        .and_then(|e| e.value_from.as_ref())
        .and_then(|from| from.secret_key_ref.as_ref())
        .unwrap();
    assert_eq!(
        job_secret.name, "team-db",
        "the drop Job writes the same database"
    );
}

#[test]
fn projector_config_holds_the_projection_and_its_entity() {
    let children = projector();
    let data = children.config_map.data.unwrap();
    assert_eq!(
        data.keys().collect::<Vec<_>>(),
        ["entity.yaml", "projection.yaml"]
    );
    let projection: crds::Projection = serde_yaml::from_str(&data["projection.yaml"]).unwrap();
    assert_eq!(
        projection.spec.filters,
        common::shop().projection.spec.filters
    );
    crds::projection::validate_projection(&projection).unwrap();
    let entity: crds::Entity = serde_yaml::from_str(&data["entity.yaml"]).unwrap();
    assert_eq!(entity.spec.key, "/id");
}

#[test]
fn a_filter_change_rolls_the_projector_but_scaling_does_not() {
    let shop = common::shop();
    let settings = RuntimeSettings::example();
    let before = config_hash(&projector().deployment);

    let mut scaled = shop.projection.clone();
    scaled.spec.replicas = 5;
    let scaled = common::projector(&scaled, &shop.entity, &settings);
    assert_eq!(config_hash(&scaled.deployment), before);
    assert_eq!(scaled.deployment.spec.replicas, Some(5));

    let mut refiltered = shop.projection.clone();
    refiltered.spec.filters[0].where_ = Some("state.city == 'Paris'".to_owned());
    let refiltered = common::projector(&refiltered, &shop.entity, &settings);
    assert_ne!(config_hash(&refiltered.deployment), before);
    assert_eq!(
        refiltered.deployment.metadata.name.as_deref(),
        Some("customers-projector"),
        "a new generation rolls the same Deployment (ADR 0020)"
    );
}

#[test]
fn a_rebuild_token_reaches_the_projector_and_rolls_it_as_a_filter_change_does() {
    let shop = common::shop();
    let settings = RuntimeSettings::example();
    let before = projector();
    let mut asked = shop.projection.clone();
    asked.spec.rebuild = Some("after-the-crm-fix".to_owned());
    let asked = common::projector(&asked, &shop.entity, &settings);
    assert_ne!(
        config_hash(&asked.deployment),
        config_hash(&before.deployment)
    );
    assert_eq!(
        asked.deployment.metadata.name, before.deployment.metadata.name,
        "the old generation keeps serving from the same Deployment's pods until the new is Live"
    );
    let data = asked.config_map.data.unwrap();
    let configured: crds::Projection = serde_yaml::from_str(&data["projection.yaml"]).unwrap();
    assert_eq!(
        configured.spec.rebuild.as_deref(),
        Some("after-the-crm-fix")
    );
    let unasked: crds::Projection =
        serde_yaml::from_str(&before.config_map.data.unwrap()["projection.yaml"]).unwrap();
    assert_eq!(unasked.spec.rebuild, None);
}

#[test]
fn scaling_the_receiver_does_not_roll_projectors() {
    let shop = common::shop();
    let mut entity = shop.entity.clone();
    entity.spec.receiver.replicas = 7;
    let settings = RuntimeSettings::example();
    let again = common::projector(&shop.projection, &entity, &settings);
    assert_eq!(
        config_hash(&again.deployment),
        config_hash(&projector().deployment)
    );
}

#[test]
fn adapter_mounts_every_referenced_secret_and_the_receivers_token() {
    let shop = common::shop();
    let deployment =
        common::adapter(&shop.adapter, &shop.entity, &RuntimeSettings::example()).deployment;
    assert_eq!(
        container(&deployment).args.as_deref(),
        Some(&["adapter".to_owned()][..])
    );
    let env = env_of(&deployment);
    assert_eq!(value(&env, "DREAMPIPE_ADAPTER"), Some("crm"));
    assert_eq!(
        value(&env, "DREAMPIPE_RECEIVER_URL"),
        Some("http://customer-receiver.shop.svc:8080")
    );
    assert_eq!(
        value(&env, "DREAMPIPE_RECEIVER_TOKEN_FILE"),
        Some("/var/run/secrets/dreampipe/customer-ingest/tokens")
    );
    assert_eq!(
        value(&env, "DREAMPIPE_SECRETS_DIR"),
        Some("/var/run/secrets/dreampipe")
    );
    let mounted: Vec<String> = container(&deployment)
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .map(|m| m.mount_path.clone())
        .filter(|p| p.starts_with("/var/run/secrets/dreampipe/"))
        .collect();
    assert_eq!(
        mounted,
        [
            "/var/run/secrets/dreampipe/crm-api",
            "/var/run/secrets/dreampipe/customer-ingest"
        ]
    );
}

#[test]
fn only_webhook_adapters_get_a_service() {
    let shop = common::shop();
    let settings = RuntimeSettings::example();
    let polling = common::adapter(&shop.adapter, &shop.entity, &settings);
    assert!(polling.service.is_none());
    let webhook = common::adapter(&shop.webhook, &shop.entity, &settings);
    assert_eq!(
        webhook.service.unwrap().metadata.name.as_deref(),
        Some("pushes-adapter")
    );
}

#[test]
fn replicated_roles_get_a_budget_of_one_unavailable_pod_and_single_pods_none() {
    let shop = common::shop();
    let settings = RuntimeSettings::example();
    for children in [receiver(), projector()] {
        let budget = children.disruption_budget.expect("two replicas: a budget");
        assert_eq!(budget.metadata.name, children.deployment.metadata.name);
        assert_eq!(
            budget.metadata.owner_references,
            children.deployment.metadata.owner_references
        );
        let spec = budget.spec.unwrap();
        assert_eq!(spec.max_unavailable, Some(IntOrString::Int(1)));
        assert_eq!(spec.min_available, None);
        assert_eq!(
            spec.selector.unwrap().match_labels,
            children.deployment.spec.selector.match_labels
        );
    }
    let mut single = shop.entity.clone();
    single.spec.receiver.replicas = 1;
    assert!(
        common::receiver(&single, &settings)
            .disruption_budget
            .is_none()
    );
    let mut single = shop.projection.clone();
    single.spec.replicas = 1;
    assert!(
        common::projector(&single, &shop.entity, &settings)
            .disruption_budget
            .is_none()
    );
    let adapter = common::adapter(&shop.adapter, &shop.entity, &settings);
    assert!(adapter.disruption_budget.is_none());
}

#[test]
fn replicated_roles_spread_across_nodes_by_default_whatever_their_replicas() {
    let shop = common::shop();
    let settings = RuntimeSettings::example();
    let mut single = shop.projection.clone();
    single.spec.replicas = 1;
    let single = common::projector(&single, &shop.entity, &settings).deployment;
    for deployment in [receiver().deployment, projector().deployment, single] {
        let spread = pod_spec(&deployment)
            .topology_spread_constraints
            .clone()
            .expect("a default spread");
        assert_eq!(spread.len(), 1);
        let spread = &spread[0];
        assert_eq!(spread.topology_key, "kubernetes.io/hostname");
        assert_eq!(spread.when_unsatisfiable, "ScheduleAnyway");
        assert_eq!(spread.max_skew, 1);
        assert_eq!(
            spread.label_selector.as_ref().unwrap().match_labels,
            deployment.spec.selector.match_labels
        );
    }
    let adapter = common::adapter(&shop.adapter, &shop.entity, &settings).deployment;
    assert!(pod_spec(&adapter).topology_spread_constraints.is_none());
}

/// `object` with `spec.pod` set from YAML, as a user would write it.
fn with_pod<T: serde::Serialize + serde::de::DeserializeOwned>(object: &T, pod: &str) -> T {
    let mut value = serde_json::to_value(object).unwrap();
    value["spec"]["pod"] = serde_yaml::from_str(pod).unwrap();
    serde_json::from_value(value).expect("spec.pod parses")
}

const POD: &str = r#"
resources:
  requests: {cpu: 250m, memory: 256Mi}
  limits: {memory: 1Gi}
nodeSelector: {pool: pipelines}
tolerations:
  - {key: dedicated, operator: Equal, value: pipelines, effect: NoSchedule}
affinity:
  nodeAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      nodeSelectorTerms:
        - matchExpressions: [{key: kubernetes.io/arch, operator: In, values: [amd64]}]
topologySpreadConstraints:
  - {maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: DoNotSchedule,
     labelSelector: {matchLabels: {app.kubernetes.io/instance: x}}}
priorityClassName: pipelines-high
podAnnotations: {prometheus.io/scrape: "true"}
podLabels: {team: data}
imagePullSecrets: [{name: registry}]
serviceAccountName: pipelines
"#;

fn assert_overlaid(deployment: &Deployment, without: &Deployment) {
    let pod = pod_spec(deployment);
    let resources = container(deployment).resources.as_ref().unwrap();
    assert_eq!(
        resources.requests.as_ref().unwrap()["cpu"],
        Quantity("250m".to_owned())
    );
    assert_eq!(
        resources.limits.as_ref().unwrap()["memory"],
        Quantity("1Gi".to_owned())
    );
    assert_eq!(pod.node_selector.as_ref().unwrap()["pool"], "pipelines");
    assert_eq!(
        pod.tolerations.as_ref().unwrap()[0].key.as_deref(),
        Some("dedicated")
    );
    assert!(pod.affinity.as_ref().unwrap().node_affinity.is_some());
    let spread = pod.topology_spread_constraints.as_ref().unwrap();
    assert_eq!(
        spread.len(),
        1,
        "the resource's spread replaces the default"
    );
    assert_eq!(spread[0].topology_key, "topology.kubernetes.io/zone");
    assert_eq!(pod.priority_class_name.as_deref(), Some("pipelines-high"));
    assert_eq!(pod.image_pull_secrets.as_ref().unwrap()[0].name, "registry");
    assert_eq!(pod.service_account_name.as_deref(), Some("pipelines"));
    assert_eq!(pod.automount_service_account_token, Some(false));
    let meta = deployment.spec.template.metadata.as_ref().unwrap();
    let annotations = meta.annotations.as_ref().unwrap();
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(
        config_hash(deployment),
        config_hash(without),
        "pod settings are not configuration: they roll pods through the template only"
    );
    let labels = meta.labels.as_ref().unwrap();
    assert_eq!(labels["team"], "data");
    let selector = deployment.spec.selector.match_labels.as_ref().unwrap();
    for (key, value) in selector {
        assert_eq!(&labels[key], value, "the selector still matches the pods");
    }
    assert_eq!(
        deployment.spec.selector, without.spec.selector,
        "pod labels never reach the selector"
    );
}

#[test]
fn pod_settings_reach_the_pods_of_every_kind() {
    let shop = common::shop();
    let settings = RuntimeSettings::example();
    let entity = with_pod(&shop.entity, POD);
    assert_overlaid(
        &common::receiver(&entity, &settings).deployment,
        &receiver().deployment,
    );
    let projection = with_pod(&shop.projection, POD);
    let projector_children = common::projector(&projection, &shop.entity, &settings);
    assert_overlaid(&projector_children.deployment, &projector().deployment);
    let config = &projector_children.config_map.data.unwrap()["projection.yaml"];
    assert!(!config.contains("pod"), "{config}");
    let adapter = with_pod(&shop.adapter, POD);
    assert_overlaid(
        &common::adapter(&adapter, &shop.entity, &settings).deployment,
        &common::adapter(&shop.adapter, &shop.entity, &settings).deployment,
    );
}

#[test]
fn a_receivers_pod_settings_never_roll_its_projectors() {
    let shop = common::shop();
    let settings = RuntimeSettings::example();
    let placed = with_pod(&shop.entity, POD);
    let again = common::projector(&shop.projection, &placed, &settings);
    assert_eq!(
        config_hash(&again.deployment),
        config_hash(&projector().deployment)
    );
}

#[test]
fn an_empty_spread_list_turns_the_default_spread_off() {
    let shop = common::shop();
    let entity = with_pod(&shop.entity, "topologySpreadConstraints: []");
    let deployment = common::receiver(&entity, &RuntimeSettings::example()).deployment;
    assert!(pod_spec(&deployment).topology_spread_constraints.is_none());
}

#[test]
fn the_deprecated_receiver_resources_still_apply_unless_spec_pod_sets_them() {
    let shop = common::shop();
    let mut entity = shop.entity.clone();
    entity.spec.receiver.resources = Some(serde_yaml::from_str("requests: {cpu: 300m}").unwrap());
    let deployment = common::receiver(&entity, &RuntimeSettings::example()).deployment;
    let requests = container(&deployment)
        .resources
        .clone()
        .unwrap()
        .requests
        .unwrap();
    assert_eq!(requests["cpu"], Quantity("300m".to_owned()));

    let both = with_pod(&entity, "resources: {requests: {cpu: 1}}");
    let owner = build::Owner::of(&both).unwrap();
    let rejection = operator::validate::entity(&both, &owner).unwrap_err();
    assert!(
        rejection.message.contains("spec.receiver.resources"),
        "{}",
        rejection.message
    );
}

#[test]
fn labels_dreampipe_selects_by_cannot_be_set_and_the_path_is_named() {
    let shop = common::shop();
    let pod = r#"podLabels: {app.kubernetes.io/instance: other, team: data}
podAnnotations: {dreampipe.io/config-hash: "0"}"#;
    let entity = with_pod(&shop.entity, pod);
    let owner = build::Owner::of(&entity).unwrap();
    let rejection = operator::validate::entity(&entity, &owner).unwrap_err();
    assert_eq!(rejection.reason, "InvalidSpec");
    assert!(
        rejection
            .message
            .contains(r#"spec.pod.podLabels["app.kubernetes.io/instance"]"#),
        "{}",
        rejection.message
    );
    assert!(
        rejection
            .message
            .contains(r#"spec.pod.podAnnotations["dreampipe.io/config-hash"]"#),
        "{}",
        rejection.message
    );
    assert!(!rejection.message.contains("team"), "{}", rejection.message);

    let projection = with_pod(
        &shop.projection,
        "podLabels: {app.kubernetes.io/component: x}",
    );
    let owner = build::Owner::of(&projection).unwrap();
    let rejection = operator::validate::projection(&projection, &owner).unwrap_err();
    assert!(
        rejection.message.contains("spec.pod.podLabels"),
        "{}",
        rejection.message
    );
    let adapter = with_pod(&shop.adapter, r#"podLabels: {"bad key!": x}"#);
    let owner = build::Owner::of(&adapter).unwrap();
    let rejection = operator::validate::adapter(&adapter, &owner).unwrap_err();
    assert!(
        rejection
            .message
            .contains(r#"spec.pod.podLabels["bad key!"]"#),
        "{}",
        rejection.message
    );
}

#[test]
fn a_resource_without_a_uid_cannot_be_owned() {
    let mut entity = common::shop().entity;
    entity.metadata.uid = None;
    let error = build::Owner::of(&entity).unwrap_err();
    assert!(error.to_string().contains("uid"), "{error}");
}

/// An Adapter of the shop reading `customers.jsonl` from the volume `volume` (YAML).
fn file_adapter(volume: &str, suspend: bool) -> crds::Adapter {
    serde_yaml::from_str(&format!(
        r#"
apiVersion: dreampipe.io/v1alpha1
kind: Adapter
metadata: {{name: export, namespace: shop, uid: 6f1d6c4e-0000-4000-8000-000000000009, generation: 1}}
spec:
  entity: customer
  suspend: {suspend}
  source:
    file:
      path: daily/customers.jsonl
      volume: {volume}
  mapping:
    id: record.id
"#
    ))
    .expect("the adapter parses")
}

#[test]
fn a_file_source_volume_is_mounted_read_only_where_the_adapter_reads() {
    let shop = common::shop();
    let settings = RuntimeSettings::example();
    let cases = [
        ("{configMap: customer-export}", "configMap"),
        ("{secret: customer-export}", "secret"),
        (
            "{persistentVolumeClaim: customer-export}",
            "persistentVolumeClaim",
        ),
    ];
    for (volume, kind) in cases {
        let deployment =
            common::adapter(&file_adapter(volume, false), &shop.entity, &settings).deployment;
        let volumes = pod_spec(&deployment).volumes.as_ref().unwrap();
        let source = volumes
            .iter()
            .find(|v| v.name == "source")
            .expect("a source volume");
        let json = serde_json::to_value(source).unwrap();
        let named = match kind {
            "configMap" => &json["configMap"]["name"],
            "secret" => &json["secret"]["secretName"],
            _ => &json["persistentVolumeClaim"]["claimName"],
        };
        assert_eq!(named, "customer-export", "{kind}: {json}");
        assert_eq!(
            json.as_object().unwrap().len(),
            2,
            "the name and one kind only: {json}"
        );
        if kind == "persistentVolumeClaim" {
            assert_eq!(json["persistentVolumeClaim"]["readOnly"], true);
        }
        let mount = container(&deployment)
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.name == "source")
            .expect("a source mount");
        assert_eq!(mount.mount_path, crds::adapter::FILE_VOLUME_DIR);
        assert_eq!(mount.read_only, Some(true));
    }
    let plain = common::adapter(&shop.adapter, &shop.entity, &settings).deployment;
    assert!(
        !pod_spec(&plain)
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .any(|v| v.name == "source"),
        "no volume for a source that names none"
    );
}

#[test]
fn a_suspended_adapter_runs_no_pod_and_keeps_its_configuration() {
    let shop = common::shop();
    let settings = RuntimeSettings::example();
    let running = common::adapter(
        &file_adapter("{configMap: e}", false),
        &shop.entity,
        &settings,
    );
    let suspended = common::adapter(
        &file_adapter("{configMap: e}", true),
        &shop.entity,
        &settings,
    );
    assert_eq!(running.deployment.spec.replicas, Some(1));
    assert_eq!(suspended.deployment.spec.replicas, Some(0));
    assert_eq!(
        suspended.config_map.data, running.config_map.data,
        "the ConfigMap is kept as it is: suspending changes no configuration"
    );
    assert_eq!(
        config_hash(&suspended.deployment),
        config_hash(&running.deployment),
        "resuming brings back the same pods"
    );
}

/// The receivers' NetworkPolicy lets in exactly the pods of the Entity's adapters (their
/// labels match its selector), the operator and the namespaces listed; other roles have none.
#[test]
fn the_receivers_network_policy_selects_their_adapters_pods() {
    let shop = common::shop();
    let guarded = RuntimeSettings {
        receiver_ingress: Some(operator::settings::ReceiverIngress {
            operator_namespace: "dreampipe".to_owned(),
            from_namespaces: vec!["apps".to_owned()],
        }),
        ..RuntimeSettings::example()
    };
    let receiver = common::receiver(&shop.entity, &guarded);
    let build::IngressPolicy::Applied(policy) = receiver.network_policy else {
        panic!(
            "no NetworkPolicy with the setting on: {:?}",
            receiver.network_policy
        );
    };
    let spec = policy.spec.expect("a policy spec");
    assert_eq!(
        spec.pod_selector.clone().unwrap().match_labels,
        receiver.deployment.spec.selector.match_labels,
        "it guards the receiver pods"
    );
    let rule = &spec.ingress.as_ref().unwrap()[0];
    assert_eq!(
        rule.ports.as_ref().unwrap()[0].port,
        Some(IntOrString::String("http".into()))
    );
    let peers = rule.from.as_ref().unwrap();
    let adapter = common::adapter(&shop.adapter, &shop.entity, &guarded);
    let adapter_labels = adapter
        .deployment
        .spec
        .template
        .metadata
        .unwrap()
        .labels
        .unwrap();
    let wanted = peers[0]
        .pod_selector
        .as_ref()
        .unwrap()
        .match_labels
        .as_ref()
        .unwrap();
    assert!(
        wanted.iter().all(|(k, v)| adapter_labels.get(k) == Some(v)),
        "the adapter's pod labels {adapter_labels:?} match {wanted:?}"
    );
    assert!(
        peers[0].namespace_selector.is_none(),
        "adapters of the Entity's own namespace"
    );
    assert_eq!(
        peers[2]
            .namespace_selector
            .as_ref()
            .unwrap()
            .match_expressions
            .as_ref()
            .unwrap()[0]
            .values,
        Some(vec!["apps".to_owned()])
    );

    let other_entity_adapter = {
        let mut labels = adapter_labels.clone();
        labels.insert("dreampipe.io/entity".to_owned(), "order".to_owned());
        labels
    };
    assert!(
        !wanted
            .iter()
            .all(|(k, v)| other_entity_adapter.get(k) == Some(v)),
        "another Entity's adapters are not let in"
    );
    assert_eq!(adapter.network_policy, build::IngressPolicy::NotApplicable);
    assert_eq!(
        common::receiver(&shop.entity, &RuntimeSettings::example()).network_policy,
        build::IngressPolicy::Off
    );
}

/// A webhook's signing secret reaches its pod by reference, mounted where the adapter reads
/// Secrets, beside the push token's.
#[test]
fn a_webhooks_signing_secret_is_mounted_by_reference() {
    let shop = common::shop();
    let mut webhook = shop.webhook.clone();
    let source = webhook
        .spec
        .source
        .webhook
        .as_mut()
        .expect("a webhook source");
    source.signature = Some(crds::adapter::WebhookSignature {
        header: "X-Hub-Signature-256".to_owned(),
        style: crds::adapter::SignatureStyle::Github,
        algorithm: crds::adapter::HmacAlgorithm::Sha256,
        secret_ref: crds::SecretKeyRef {
            name: "github-hook".to_owned(),
            key: "secret".to_owned(),
        },
        tolerance_seconds: 300,
    });
    let deployment =
        common::adapter(&webhook, &shop.entity, &RuntimeSettings::example()).deployment;
    let mounted: Vec<String> = pod_spec(&deployment)
        .volumes
        .iter()
        .flatten()
        .filter_map(|v| v.secret.as_ref()?.secret_name.clone())
        .collect();
    assert!(mounted.contains(&"github-hook".to_owned()), "{mounted:?}");
}

#[test]
fn an_oauth2_adapter_mounts_each_credential_secret_once() {
    let shop = common::shop();
    let mut adapter = shop.adapter.clone();
    let http = adapter.spec.source.http.as_mut().unwrap();
    http.token_secret_ref = None;
    http.oauth2 = Some(
        serde_json::from_value(serde_json::json!({
            "tokenUrl": "https://login.example.com/services/oauth2/token",
            "grant": "RefreshToken",
            "clientIdRef": {"name": "crm-app", "key": "client-id"},
            "clientSecretRef": {"name": "crm-app", "key": "client-secret"},
            "refreshTokenRef": {"name": "crm-grant", "key": "refresh-token"}
        }))
        .unwrap(),
    );
    crds::adapter::validate_adapter(&adapter).unwrap();
    let deployment =
        common::adapter(&adapter, &shop.entity, &RuntimeSettings::example()).deployment;
    let mounted: Vec<String> = container(&deployment)
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .map(|m| m.mount_path.clone())
        .filter(|p| p.starts_with("/var/run/secrets/dreampipe/"))
        .collect();
    assert_eq!(
        mounted,
        [
            "/var/run/secrets/dreampipe/crm-app",
            "/var/run/secrets/dreampipe/crm-grant",
            "/var/run/secrets/dreampipe/customer-ingest"
        ]
    );
}
