//! The reconcile scenarios played against the scripted API server. Each returns the calls it
//! made, so `scenarios.rs` asserts on them and `chart.rs` checks them against the chart's RBAC.

use std::sync::Arc;

use crds::erasure::{ErasureReply, ErasureStatus, Tombstone};
use crds::{Adapter, Entity, Erasure, Projection};
use kube::runtime::controller::Action;
use operator::controller;
use operator::names::CONFIG_HASH_ANNOTATION;
use serde_json::{Value, json};

use operator::settings::RuntimeSettings;

use super::mock::{
    Call, Expect, FakeEraser, FakeProbe, FakeStreams, Scenario, context, context_erasing,
    context_with,
};
use super::shop;

const CORE: &str = "/api/v1/namespaces/shop";
const APPS: &str = "/apis/apps/v1/namespaces/shop";
const DP: &str = "/apis/dreampipe.io/v1alpha1/namespaces/shop";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/shop/events";
const BATCH: &str = "/apis/batch/v1/namespaces/shop";

/// What a scenario leaves behind for its assertions.
#[derive(Debug)]
pub struct Outcome {
    pub calls: Vec<Call>,
    pub action: Action,
    pub asked: Vec<String>,
    pub deleted_streams: Vec<String>,
}

impl Outcome {
    /// The body of the first call to `path` with `method`.
    pub fn body(&self, method: &str, path: &str) -> &Value {
        &self
            .calls
            .iter()
            .find(|c| c.method == method && c.path == path)
            .unwrap_or_else(|| panic!("no {method} {path}"))
            .body
    }
}

fn deployment_status(replicas: i32, ready: i32) -> Value {
    json!({"metadata": {"generation": 1}, "status": {"observedGeneration": 1, "replicas": replicas,
           "readyReplicas": ready, "updatedReplicas": replicas}})
}

/// The pod list the API server answers, with `pods` as items.
fn pod_list(pods: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "1"},
           "items": pods})
}

/// A pod of `name` that is starting: no problem to report.
fn starting_pod(name: &str) -> Value {
    json!({"metadata": {"name": name}, "status": {"phase": "Pending",
           "containerStatuses": [{"name": "receiver", "image": "i", "imageID": "", "ready": false,
           "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}}]}})
}

fn entity_json(entity: &Entity) -> Value {
    serde_json::to_value(entity).unwrap()
}

const POLICY: &str = "/apis/policy/v1/namespaces/shop";

/// What happens to a resource's PodDisruptionBudget in a reconcile.
#[derive(Clone, Copy, Debug)]
pub enum Budget {
    /// More than one replica: the budget is applied.
    Applied,
    /// One replica and no budget: the DELETE finds nothing.
    Absent,
    /// Scaled down to one replica: the budget left from before is deleted.
    Deleted,
}

fn children(name: &str, service: bool, status: Value, budget: Budget) -> Vec<Expect> {
    let mut script = vec![Expect::apply(
        format!("{CORE}/configmaps/{name}"),
        json!({}),
    )];
    if service {
        script.push(Expect::apply(format!("{CORE}/services/{name}"), json!({})));
    } else {
        // A Service the spec no longer needs (a former webhook's) is deleted; here there is none.
        script.push(Expect::delete_missing(format!("{CORE}/services/{name}")));
    }
    script.push(Expect::apply(format!("{APPS}/deployments/{name}"), status));
    let path = format!("{POLICY}/poddisruptionbudgets/{name}");
    script.push(match budget {
        Budget::Applied => Expect::apply(path, json!({})),
        Budget::Absent => Expect::delete_missing(path),
        Budget::Deleted => Expect::new("DELETE", path, |_| {
            (
                200,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
            )
        }),
    });
    script
}

const NETWORKING: &str = "/apis/networking.k8s.io/v1/namespaces/shop";

/// An Entity's children: the generic ones, then the receivers' NetworkPolicy, applied when
/// `guarded`, else deleted (here there is none left from before).
fn receiver_children(status: Value, budget: Budget, guarded: bool) -> Vec<Expect> {
    let mut script = children("customer-receiver", true, status, budget);
    let path = format!("{NETWORKING}/networkpolicies/customer-receiver");
    script.push(if guarded {
        Expect::apply(path, json!({}))
    } else {
        Expect::delete_missing(path)
    });
    script
}

async fn play_entity(entity: Entity, script: Vec<Expect>, probe: Arc<FakeProbe>) -> Outcome {
    play_entity_with(entity, script, probe, RuntimeSettings::example()).await
}

async fn play_entity_with(
    entity: Entity,
    script: Vec<Expect>,
    probe: Arc<FakeProbe>,
    settings: RuntimeSettings,
) -> Outcome {
    let scenario = Scenario::start(script);
    let streams = Arc::new(FakeStreams::default());
    let ctx = context_with(&scenario, probe.clone(), streams.clone(), settings);
    let action = controller::driver::reconcile(Arc::new(entity), ctx)
        .await
        .expect("the reconcile succeeds");
    finish(scenario, action, &probe, &streams).await
}

async fn finish(
    scenario: Scenario,
    action: Action,
    probe: &FakeProbe,
    streams: &FakeStreams,
) -> Outcome {
    Outcome {
        calls: scenario.finish().await,
        action,
        asked: probe.asked.lock().unwrap().clone(),
        deleted_streams: streams.deleted.lock().unwrap().clone(),
    }
}

fn receiver_report() -> Value {
    json!({"entity": "customer", "stream": "dp_shop_customer", "events": 42, "keys": 7,
           "lastSequence": 42, "lastEventTime": "2026-01-02T03:04:05Z"})
}

/// A new Entity: ConfigMap, Service and Deployment applied, status from the receiver, an Event.
pub async fn entity_created() -> Outcome {
    let mut script = receiver_children(deployment_status(2, 1), Budget::Applied, false);
    script.push(Expect::get(
        format!("{CORE}/pods"),
        pod_list(json!([starting_pod("customer-receiver-2")])),
    ));
    script.push(Expect::apply_onto(
        format!("{DP}/entities/customer/status"),
        entity_json(&shop().entity),
    ));
    script.push(Expect::create(EVENTS));
    let probe = FakeProbe::with(
        "http://customer-receiver.shop.svc:8080/v1/status",
        receiver_report(),
    );
    play_entity(shop().entity, script, probe).await
}

/// A new Entity while the operator runs with NetworkPolicies: the receivers' policy is applied
/// with the Deployment.
pub async fn entity_created_with_network_policy() -> Outcome {
    let mut script = receiver_children(deployment_status(2, 2), Budget::Applied, true);
    script.push(Expect::apply_onto(
        format!("{DP}/entities/customer/status"),
        entity_json(&shop().entity),
    ));
    script.push(Expect::create(EVENTS));
    let settings = RuntimeSettings {
        receiver_ingress: Some(operator::settings::ReceiverIngress {
            operator_namespace: "dreampipe".to_owned(),
            from_namespaces: vec!["monitoring".to_owned()],
        }),
        ..RuntimeSettings::example()
    };
    play_entity_with(
        shop().entity,
        script,
        Arc::new(FakeProbe::default()),
        settings,
    )
    .await
}

/// An Entity whose spec changed (more receivers): the same children re-applied, an Update event.
pub async fn entity_updated() -> Outcome {
    let mut entity = shop().entity;
    entity.metadata.generation = Some(2);
    entity.spec.receiver.replicas = 3;
    entity.status = Some(crds::EntityStatus {
        observed_generation: Some(1),
        ..Default::default()
    });
    let mut script = receiver_children(deployment_status(3, 3), Budget::Applied, false);
    script.push(Expect::apply_onto(
        format!("{DP}/entities/customer/status"),
        entity_json(&shop().entity),
    ));
    script.push(Expect::create(EVENTS));
    play_entity(entity, script, Arc::new(FakeProbe::default())).await
}

/// An Entity scaled down to one receiver: its disruption budget is deleted.
pub async fn entity_scaled_to_one() -> Outcome {
    let mut entity = shop().entity;
    entity.metadata.generation = Some(2);
    entity.spec.receiver.replicas = 1;
    entity.status = Some(crds::EntityStatus {
        observed_generation: Some(1),
        ..Default::default()
    });
    let mut script = receiver_children(deployment_status(1, 1), Budget::Deleted, false);
    script.push(Expect::apply_onto(
        format!("{DP}/entities/customer/status"),
        entity_json(&shop().entity),
    ));
    script.push(Expect::create(EVENTS));
    play_entity(entity, script, Arc::new(FakeProbe::default())).await
}

/// An Entity with `deletionPolicy: Delete` and no finalizer yet: the finalizer is added first.
pub async fn entity_finalizer_added() -> Outcome {
    let mut entity = shop().entity;
    entity.spec.deletion_policy = crds::entity::DeletionPolicy::Delete;
    let with_finalizer = {
        let mut e = entity_json(&entity);
        e["metadata"]["finalizers"] = json!(["dreampipe.io/delete-stream"]);
        e
    };
    let script = vec![Expect::new(
        "PATCH",
        format!("{DP}/entities/customer"),
        move |_| (200, with_finalizer),
    )];
    play_entity(entity, script, Arc::new(FakeProbe::default())).await
}

/// A deleted Entity with `deletionPolicy: Delete`: the stream goes, then the finalizer.
pub async fn entity_deleted() -> Outcome {
    let mut entity = shop().entity;
    entity.spec.deletion_policy = crds::entity::DeletionPolicy::Delete;
    entity.metadata.finalizers = Some(vec!["dreampipe.io/delete-stream".to_owned()]);
    entity.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            "2026-01-01T00:00:00Z".parse().unwrap(),
        ));
    let released = {
        let mut e = entity_json(&entity);
        e["metadata"]["finalizers"] = json!([]);
        e
    };
    let script = vec![
        Expect::create(EVENTS),
        Expect::new("PATCH", format!("{DP}/entities/customer"), move |_| {
            (200, released)
        }),
    ];
    play_entity(entity, script, Arc::new(FakeProbe::default())).await
}

/// An invalid Entity, reconciled twice: status says why, the same Warning is published and
/// then counted as a series (a PATCH of the event); no child is touched.
pub async fn entity_invalid_twice() -> Outcome {
    let mut entity = shop().entity;
    entity.spec.key = "/missing".to_owned();
    let scenario = Scenario::start(vec![
        Expect::apply_onto(
            format!("{DP}/entities/customer/status"),
            entity_json(&shop().entity),
        ),
        Expect::create(EVENTS),
        Expect::apply_onto(
            format!("{DP}/entities/customer/status"),
            entity_json(&shop().entity),
        ),
        Expect::new("PATCH", "", |_| (200, json!({}))).any_path_under(EVENTS),
    ]);
    let probe = Arc::new(FakeProbe::default());
    let streams = Arc::new(FakeStreams::default());
    let ctx = context(&scenario, probe.clone(), streams.clone());
    let entity = Arc::new(entity);
    controller::driver::reconcile(entity.clone(), ctx.clone())
        .await
        .unwrap();
    let action = controller::driver::reconcile(entity, ctx).await.unwrap();
    finish(scenario, action, &probe, &streams).await
}

async fn play_projection(
    projection: Projection,
    script: Vec<Expect>,
    probe: Arc<FakeProbe>,
) -> Outcome {
    let scenario = Scenario::start(script);
    let streams = Arc::new(FakeStreams::default());
    let ctx = context(&scenario, probe.clone(), streams.clone());
    let action = controller::driver::reconcile(Arc::new(projection), ctx)
        .await
        .expect("the reconcile succeeds");
    finish(scenario, action, &probe, &streams).await
}

fn projector_report(active: &str, building: Option<&str>) -> Value {
    let mut generations = vec![
        json!({"generation": active, "state": "live", "phase": "Live",
        "lag": 5, "lastAppliedSequence": 37, "events": 37, "progress": 100, "deadLetters": 1,
        "partitions": []}),
    ];
    if let Some(building) = building {
        generations.push(
            json!({"generation": building, "state": "building", "phase": "Building",
            "lag": 20, "lastAppliedSequence": 22, "events": 22, "progress": 52, "deadLetters": 0,
            "partitions": []}),
        );
    }
    json!({"projection": "customers", "replica": "customers-projector-abc", "ownedPartitions": [0, 1],
           "view": "customers", "activeGeneration": active, "buildingGeneration": building,
           "configuredGeneration": building.unwrap_or(active), "generations": generations,
           "lagSeconds": 1.5})
}

const PROJECTOR_STATUS_URL: &str = "http://customers-projector.shop.svc:8080/v1/status";

/// The calls of a Projection's reconcile; `pods` is the pod list asked for when the
/// Deployment is not fully ready.
fn projection_script(deployment: Value, pods: Option<Value>) -> Vec<Expect> {
    let mut script = vec![Expect::get(
        format!("{DP}/entities/customer"),
        entity_json(&shop().entity),
    )];
    script.extend(children(
        "customers-projector",
        true,
        deployment,
        Budget::Applied,
    ));
    if let Some(pods) = pods {
        script.push(Expect::get(format!("{CORE}/pods"), pod_list(pods)));
    }
    script.push(Expect::apply_onto(
        format!("{DP}/projections/customers/status"),
        serde_json::to_value(shop().projection).unwrap(),
    ));
    script.push(Expect::create(EVENTS));
    script
}

/// A new Projection: the Entity is read, the projector's children applied, status written.
pub async fn projection_created() -> Outcome {
    play_projection(
        shop().projection,
        projection_script(deployment_status(2, 2), None),
        FakeProbe::with(PROJECTOR_STATUS_URL, projector_report("g1", None)),
    )
    .await
}

/// `kubectl scale projection/customers --replicas=4`: the Deployment gets 4 replicas and the
/// status reports the Deployment's replicas and the selector.
pub async fn projection_scaled() -> Outcome {
    let mut projection = shop().projection;
    projection.metadata.generation = Some(2);
    projection.spec.replicas = 4;
    projection.status = Some(crds::ProjectionStatus {
        observed_generation: Some(1),
        active_generation: Some("g1".into()),
        ..Default::default()
    });
    play_projection(
        projection,
        projection_script(
            deployment_status(4, 3),
            Some(json!([starting_pod("customers-projector-4")])),
        ),
        FakeProbe::with(PROJECTOR_STATUS_URL, projector_report("g1", None)),
    )
    .await
}

/// A filter edit: the pod template's config hash changes (the pods roll and build the new
/// generation); once the projector reports the new generation active, a swap Event follows.
pub async fn projection_generation_swapped() -> Outcome {
    let mut projection = shop().projection;
    projection.metadata.generation = Some(3);
    projection.spec.filters[0].where_ = Some("state.city == 'Paris'".to_owned());
    projection.status = Some(crds::ProjectionStatus {
        observed_generation: Some(2),
        active_generation: Some("g1".into()),
        building_generation: Some("g2".into()),
        ..Default::default()
    });
    let mut script = projection_script(deployment_status(2, 2), None);
    script.push(Expect::create(EVENTS));
    play_projection(
        projection,
        script,
        FakeProbe::with(PROJECTOR_STATUS_URL, projector_report("g2", None)),
    )
    .await
}

/// `spec.rebuild` set to a new token, the filters unchanged: the pods roll as for a filter
/// edit, and while the projector builds the new generation the old one is still active.
pub async fn projection_rebuild_asked() -> Outcome {
    let mut projection = shop().projection;
    projection.metadata.generation = Some(2);
    projection.spec.rebuild = Some("2026-12-02".to_owned());
    projection.status = Some(crds::ProjectionStatus {
        observed_generation: Some(1),
        active_generation: Some("g1".into()),
        ..Default::default()
    });
    play_projection(
        projection,
        projection_script(deployment_status(2, 2), None),
        FakeProbe::with(PROJECTOR_STATUS_URL, projector_report("g1", Some("g2"))),
    )
    .await
}

/// A second Projection claims a view another Projection of the namespace owns: the projector
/// reports the conflict, the Projection is not ready naming the owner, and a Warning says so.
pub async fn projection_view_conflict() -> Outcome {
    let report = json!({"projection": "customers", "replica": "customers-projector-abc",
        "ownedPartitions": [], "view": "customers", "configuredGeneration": "g1",
        "generations": [], "viewConflict": {"view": "customers", "owner": "shop/crm-customers"}});
    let mut script = projection_script(deployment_status(2, 2), None);
    script.push(Expect::create(EVENTS));
    play_projection(
        shop().projection,
        script,
        FakeProbe::with(PROJECTOR_STATUS_URL, report),
    )
    .await
}

/// The projector reports 4 unhandled dead letters where the status said 1: the status says 4
/// and a Warning Event says 3 are new (the spec is unchanged, so no other Event).
pub async fn projection_dead_letters_arrive() -> Outcome {
    let mut projection = shop().projection;
    projection.metadata.generation = Some(1);
    projection.status = Some(crds::ProjectionStatus {
        observed_generation: Some(1),
        active_generation: Some("g1".into()),
        dead_letters: 1,
        unhandled_dead_letters: 1,
        ..Default::default()
    });
    let mut report = projector_report("g1", None);
    report["generations"][0]["deadLetters"] = json!(5);
    report["generations"][0]["unhandledDeadLetters"] = json!(4);
    play_projection(
        projection,
        projection_script(deployment_status(2, 2), None),
        FakeProbe::with(PROJECTOR_STATUS_URL, report),
    )
    .await
}

/// A Projection naming its database Secret (`spec.database.secretRef`) that does not exist in
/// its namespace: the projector pods cannot start, and the status names the Secret with the
/// command that creates it.
pub async fn projection_database_secret_missing() -> Outcome {
    let mut projection = shop().projection;
    projection.spec.database = Some(crds::projection::ProjectionDatabase {
        secret_ref: crds::projection::DatabaseSecretRef {
            name: "shop-db".into(),
            key: "url".into(),
        },
    });
    let failing = json!({"metadata": {"name": "customers-projector-7d9f"}, "status": {
        "phase": "Pending", "containerStatuses": [{"name": "projector", "image": "i",
        "imageID": "", "ready": false, "restartCount": 0, "state": {"waiting": {
        "reason": "CreateContainerConfigError",
        "message": "secret \"shop-db\" not found"}}}]}});
    let mut script = projection_script(deployment_status(2, 0), Some(json!([failing])));
    script.push(Expect::create(EVENTS));
    play_projection(projection, script, Arc::new(FakeProbe::default())).await
}

/// `spec.autoscale` {1..4, 10 s} with 2 replicas chosen long ago, and the projector 40 s
/// behind: the Deployment gets 4 (doubling, the most one step adds), the status records the
/// decision, and an Autoscaled Event says so.
pub async fn projection_autoscaled_up() -> Outcome {
    let mut projection = shop().projection;
    projection.metadata.generation = Some(1);
    projection.spec.autoscale = Some(crds::projection::Autoscale {
        min_replicas: 1,
        max_replicas: 4,
        target_lag_seconds: 10,
    });
    projection.status = Some(crds::ProjectionStatus {
        observed_generation: Some(1),
        active_generation: Some("g1".into()),
        autoscale: Some(crds::projection::AutoscaleStatus {
            replicas: 2,
            last_scale_time: Some("2026-01-01T00:00:00Z".into()),
            reason: None,
        }),
        ..Default::default()
    });
    let mut report = projector_report("g1", None);
    report["lagSeconds"] = json!(40.0);
    play_projection(
        projection,
        projection_script(deployment_status(4, 4), None),
        FakeProbe::with(PROJECTOR_STATUS_URL, report),
    )
    .await
}

/// A Projection whose filter does not compile: Ready=False naming the field, a Warning, and
/// nothing applied.
pub async fn projection_invalid() -> Outcome {
    let mut projection = shop().projection;
    projection.spec.filters[0].where_ = Some("state.city ==".to_owned());
    play_projection(
        projection,
        vec![
            Expect::apply_onto(
                format!("{DP}/projections/customers/status"),
                serde_json::to_value(shop().projection).unwrap(),
            ),
            Expect::create(EVENTS),
        ],
        Arc::new(FakeProbe::default()),
    )
    .await
}

/// A Projection of an Entity that does not exist.
pub async fn projection_unknown_entity() -> Outcome {
    play_projection(
        shop().projection,
        vec![
            Expect::not_found(format!("{DP}/entities/customer")),
            Expect::apply_onto(
                format!("{DP}/projections/customers/status"),
                serde_json::to_value(shop().projection).unwrap(),
            ),
            Expect::create(EVENTS),
        ],
        Arc::new(FakeProbe::default()),
    )
    .await
}

async fn play_adapter(adapter: Adapter, script: Vec<Expect>, probe: Arc<FakeProbe>) -> Outcome {
    let scenario = Scenario::start(script);
    let streams = Arc::new(FakeStreams::default());
    let ctx = context(&scenario, probe.clone(), streams.clone());
    let action = controller::driver::reconcile(Arc::new(adapter), ctx)
        .await
        .expect("the reconcile succeeds");
    finish(scenario, action, &probe, &streams).await
}

fn adapter_report() -> Value {
    json!({"lastSyncTime": "2026-01-02T03:04:05Z", "recordsRead": 100, "submitted": 100,
           "changed": 60, "unchanged": 38, "rejected": 2, "lastError": null})
}

/// A polling Adapter: no Service; its status is read from its running pod.
pub async fn adapter_polling() -> Outcome {
    let mut script = vec![Expect::get(
        format!("{DP}/entities/customer"),
        entity_json(&shop().entity),
    )];
    script.extend(children(
        "crm-adapter",
        false,
        deployment_status(1, 1),
        Budget::Absent,
    ));
    script.push(Expect::get(
        format!("{CORE}/pods"),
        json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "1"},
               "items": [{"metadata": {"name": "crm-adapter-1"}, "status": {"podIP": "10.1.2.3"}}]}),
    ));
    script.push(Expect::apply_onto(
        format!("{DP}/adapters/crm/status"),
        serde_json::to_value(shop().adapter).unwrap(),
    ));
    script.push(Expect::create(EVENTS));
    play_adapter(
        shop().adapter,
        script,
        FakeProbe::with("http://10.1.2.3:8080/v1/status", adapter_report()),
    )
    .await
}

/// `suspend: true` on a running polling Adapter: its Deployment is applied with 0 replicas,
/// nothing is deleted but the Service it never had, no pod is asked for a report, and the
/// status says Suspended (with an Updated Event for the new generation).
pub async fn adapter_suspended() -> Outcome {
    let mut adapter = shop().adapter;
    adapter.metadata.generation = Some(2);
    adapter.spec.suspend = true;
    adapter.status = Some(crds::AdapterStatus {
        observed_generation: Some(1),
        records_read: 100,
        ..Default::default()
    });
    let mut script = vec![Expect::get(
        format!("{DP}/entities/customer"),
        entity_json(&shop().entity),
    )];
    script.extend(children(
        "crm-adapter",
        false,
        deployment_status(0, 0),
        Budget::Absent,
    ));
    script.push(Expect::get(format!("{CORE}/pods"), pod_list(json!([]))));
    script.push(Expect::apply_onto(
        format!("{DP}/adapters/crm/status"),
        serde_json::to_value(shop().adapter).unwrap(),
    ));
    script.push(Expect::create(EVENTS));
    play_adapter(adapter, script, Arc::new(FakeProbe::default())).await
}

/// A webhook Adapter: a Service, and its status read through it.
pub async fn adapter_webhook() -> Outcome {
    let mut script = vec![Expect::get(
        format!("{DP}/entities/customer"),
        entity_json(&shop().entity),
    )];
    script.extend(children(
        "pushes-adapter",
        true,
        deployment_status(1, 1),
        Budget::Absent,
    ));
    script.push(Expect::apply_onto(
        format!("{DP}/adapters/pushes/status"),
        serde_json::to_value(shop().webhook).unwrap(),
    ));
    script.push(Expect::create(EVENTS));
    play_adapter(
        shop().webhook,
        script,
        FakeProbe::with(
            "http://pushes-adapter.shop.svc:8080/v1/status",
            adapter_report(),
        ),
    )
    .await
}

/// A deleted Projection with `deletionPolicy: Delete`, in the state `pods` and `job` say.
fn deleted_projection() -> Projection {
    let mut projection = shop().projection;
    projection.spec.deletion_policy = crds::projection::ProjectionDeletionPolicy::Delete;
    projection.metadata.finalizers = Some(vec!["dreampipe.io/drop-views".to_owned()]);
    projection.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            "2026-01-01T00:00:00Z".parse().unwrap(),
        ));
    projection
}

fn deletion_steps(pods: Value) -> Vec<Expect> {
    vec![
        Expect::new(
            "DELETE",
            format!("{APPS}/deployments/customers-projector"),
            |_| {
                (
                    200,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
                )
            },
        ),
        Expect::get(
            format!("{CORE}/pods"),
            json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": pods}),
        ),
    ]
}

/// A deleted Projection with `deletionPolicy: Delete`, its projector gone: the drop Job is
/// applied and has succeeded, an Event says so, and the finalizer is released.
pub async fn projection_deleted() -> Outcome {
    let projection = deleted_projection();
    let released = {
        let mut p = serde_json::to_value(&projection).unwrap();
        p["metadata"]["finalizers"] = json!([]);
        p
    };
    let mut script = deletion_steps(json!([]));
    script.push(Expect::not_found(format!("{BATCH}/jobs/customers-drop")));
    script.push(Expect::apply(
        format!("{BATCH}/jobs/customers-drop"),
        json!({"status": {"succeeded": 1}}),
    ));
    script.push(Expect::create(EVENTS));
    script.push(Expect::new(
        "PATCH",
        format!("{DP}/projections/customers"),
        move |_| (200, released),
    ));
    play_projection(projection, script, Arc::new(FakeProbe::default())).await
}

/// The same deletion while a projector pod is still stopping: the Deployment is deleted, and
/// the reconcile waits (no Job yet, the finalizer stays).
pub async fn projection_deletion_waits() -> (Outcome, operator::error::Error) {
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
                     "metadata": {"name": "customers-projector-abc", "namespace": "shop"}});
    let scenario = Scenario::start(deletion_steps(json!([pod])));
    let probe = Arc::new(FakeProbe::default());
    let streams = Arc::new(FakeStreams::default());
    let ctx = context(&scenario, probe.clone(), streams.clone());
    let error = controller::driver::reconcile(Arc::new(deleted_projection()), ctx)
        .await
        .expect_err("the reconcile waits for the pod");
    (
        finish(scenario, Action::await_change(), &probe, &streams).await,
        error,
    )
}

/// A deleted Projection whose drop Job ran before the projector's pod spec changed (the
/// operator restarted with another NATS URL): the Job is read and, having succeeded, releases
/// the finalizer. Its template is never applied again: this API server would refuse it
/// (`spec.template: field is immutable`), and the script fails on any call it does not list.
pub async fn projection_deleted_after_its_job_completed() -> Outcome {
    let projection = deleted_projection();
    let released = {
        let mut p = serde_json::to_value(&projection).unwrap();
        p["metadata"]["finalizers"] = json!([]);
        p
    };
    let completed = json!({"apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "customers-drop", "namespace": "shop"},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "projector",
                 "image": "dreampipe:old", "env": [{"name": "NATS_URL", "value": "nats://old:4222"}]}]}}},
        "status": {"succeeded": 1}});
    let mut script = deletion_steps(json!([]));
    script.push(Expect::get(
        format!("{BATCH}/jobs/customers-drop"),
        completed,
    ));
    script.push(Expect::create(EVENTS));
    script.push(Expect::new(
        "PATCH",
        format!("{DP}/projections/customers"),
        move |_| (200, released),
    ));
    play_projection(projection, script, Arc::new(FakeProbe::default())).await
}

/// A new Entity whose receiver pods cannot start: the Secret their environment names does not
/// exist. The Ready condition and a Warning carry the kubelet's reason and message.
pub async fn entity_pods_failing() -> Outcome {
    let failing = json!({"metadata": {"name": "customer-receiver-7d9f"}, "status": {
        "phase": "Pending", "containerStatuses": [{"name": "receiver", "image": "i",
        "imageID": "", "ready": false, "restartCount": 0, "state": {"waiting": {
        "reason": "CreateContainerConfigError",
        "message": "secret \"customer-ingest\" not found"}}}]}});
    let mut script = receiver_children(deployment_status(2, 0), Budget::Applied, false);
    script.push(Expect::get(
        format!("{CORE}/pods"),
        pod_list(json!([failing, starting_pod("customer-receiver-8a1b")])),
    ));
    script.push(Expect::apply_onto(
        format!("{DP}/entities/customer/status"),
        entity_json(&shop().entity),
    ));
    script.push(Expect::create(EVENTS));
    script.push(Expect::create(EVENTS));
    play_entity(shop().entity, script, Arc::new(FakeProbe::default())).await
}

/// Every scenario's calls, for the RBAC check.
pub async fn all_calls() -> Vec<Call> {
    let mut calls = Vec::new();
    for outcome in [
        entity_created().await,
        entity_created_with_network_policy().await,
        entity_updated().await,
        entity_scaled_to_one().await,
        entity_finalizer_added().await,
        entity_deleted().await,
        entity_invalid_twice().await,
        projection_created().await,
        projection_scaled().await,
        projection_generation_swapped().await,
        projection_rebuild_asked().await,
        projection_dead_letters_arrive().await,
        projection_autoscaled_up().await,
        projection_invalid().await,
        projection_unknown_entity().await,
        projection_deleted().await,
        projection_deleted_after_its_job_completed().await,
        projection_deletion_waits().await.0,
        entity_pods_failing().await,
        adapter_polling().await,
        adapter_suspended().await,
        adapter_webhook().await,
        erasure_scrubbing().await.outcome,
        erasure_completed().await.outcome,
        erasure_of_an_unknown_key().await.outcome,
    ] {
        calls.extend(outcome.calls);
    }
    calls
}

/// The Erasure the erasure scenarios reconcile: key c-1 of the shop's customer Entity.
pub fn erasure(status: Option<ErasureStatus>) -> Erasure {
    let mut erasure: Erasure = serde_json::from_value(json!({
        "apiVersion": "dreampipe.io/v1alpha1", "kind": "Erasure",
        "metadata": {"name": "forget-c-1", "namespace": "shop", "generation": 1,
                     "uid": "00000000-0000-4000-8000-0000000000e1"},
        "spec": {"entity": "customer", "key": "c-1", "requestedBy": "privacy@example.com",
                 "reason": "GDPR art. 17 request 4711"}
    }))
    .expect("an Erasure");
    erasure.status = status;
    erasure
}

/// Where the erasure scenarios' receiver puts the tombstone.
pub const TOMBSTONE: Tombstone = Tombstone {
    version: 4,
    sequence: 100,
    partition: 1,
};

/// A projector report whose generations stand at `partition 1` sequences `(name, state, seq)`.
pub fn erasure_report(generations: &[(&str, &str, u64)]) -> Value {
    let generations: Vec<Value> = generations
        .iter()
        .map(|(name, state, sequence)| {
            json!({"generation": name, "state": state, "phase": "Live", "lag": 0,
                   "lastAppliedSequence": sequence, "events": 10, "progress": 100,
                   "deadLetters": 0, "partitions": [
                       {"partition": 0, "sequence": 7},
                       {"partition": 1, "sequence": sequence}]})
        })
        .collect();
    json!({"projection": "customers", "replica": "customers-projector-abc",
           "ownedPartitions": [0, 1], "view": "customers", "configuredGeneration": "g1",
           "generations": generations})
}

/// The namespace's Projections: the shop's (of `customer`) and one of another Entity, which
/// the erasure leaves alone.
fn projection_list() -> Value {
    let mut other = serde_json::to_value(shop().projection).unwrap();
    other["metadata"]["name"] = json!("orders");
    other["spec"]["entity"] = json!("order");
    json!({"apiVersion": "dreampipe.io/v1alpha1", "kind": "ProjectionList",
           "metadata": {"resourceVersion": "1"},
           "items": [serde_json::to_value(shop().projection).unwrap(), other]})
}

/// What an erasure scenario leaves: the outcome and what the receiver was asked.
pub struct Erasing {
    pub outcome: Outcome,
    pub eraser: Arc<FakeEraser>,
}

async fn play_erasure(
    erasure: Erasure,
    script: Vec<Expect>,
    probe: Arc<FakeProbe>,
    reply: Option<ErasureReply>,
) -> Erasing {
    let scenario = Scenario::start(script);
    let eraser = FakeEraser::answering(reply);
    let ctx = context_erasing(&scenario, probe.clone(), eraser.clone());
    let action = controller::driver::reconcile(Arc::new(erasure), ctx)
        .await
        .expect("the reconcile succeeds");
    Erasing {
        outcome: finish(scenario, action, &probe, &FakeStreams::default()).await,
        eraser,
    }
}

fn erased_reply() -> ErasureReply {
    ErasureReply::Erased {
        version: TOMBSTONE.version,
        sequence: TOMBSTONE.sequence,
        partition: TOMBSTONE.partition,
        purged: 3,
    }
}

fn erasure_status_path() -> String {
    format!("{DP}/erasures/forget-c-1/status")
}

/// A new Erasure: the receiver writes the tombstone and purges 3 events (an Event says so);
/// the live generation applied it, a building one is still before it: Erasing, 0/1 scrubbed.
pub async fn erasure_scrubbing() -> Erasing {
    let report = erasure_report(&[("g1", "live", 120), ("g2", "building", 60)]);
    play_erasure(
        erasure(None),
        vec![
            Expect::get(
                format!("{DP}/entities/customer"),
                entity_json(&shop().entity),
            ),
            Expect::create(EVENTS),
            Expect::get(format!("{DP}/projections"), projection_list()),
            Expect::apply_onto(
                erasure_status_path(),
                serde_json::to_value(erasure(None)).unwrap(),
            ),
        ],
        FakeProbe::with(PROJECTOR_STATUS_URL, report),
        Some(erased_reply()),
    )
    .await
}

/// The tombstone is already in status; every generation is past it now: Complete, an Event,
/// and the receiver is not asked again.
pub async fn erasure_completed() -> Erasing {
    let status = ErasureStatus {
        phase: crds::erasure::ErasurePhase::Erasing,
        tombstone: Some(TOMBSTONE),
        purged_events: 3,
        erased_time: Some("2026-12-03T07:00:00Z".into()),
        ..ErasureStatus::default()
    };
    let report = erasure_report(&[("g1", "live", 120), ("g2", "building", 100)]);
    play_erasure(
        erasure(Some(status)),
        vec![
            Expect::get(format!("{DP}/projections"), projection_list()),
            Expect::apply_onto(
                erasure_status_path(),
                serde_json::to_value(erasure(None)).unwrap(),
            ),
            Expect::create(EVENTS),
        ],
        FakeProbe::with(PROJECTOR_STATUS_URL, report),
        Some(erased_reply()),
    )
    .await
}

/// The receiver answers 404: the key has no events. Failed, KeyNotFound, a Warning Event, and
/// no Projection is looked at.
pub async fn erasure_of_an_unknown_key() -> Erasing {
    play_erasure(
        erasure(None),
        vec![
            Expect::get(
                format!("{DP}/entities/customer"),
                entity_json(&shop().entity),
            ),
            Expect::create(EVENTS),
            Expect::apply_onto(
                erasure_status_path(),
                serde_json::to_value(erasure(None)).unwrap(),
            ),
        ],
        Arc::new(FakeProbe::default()),
        Some(ErasureReply::Problem {
            status: 404,
            type_: "not_found".into(),
            detail: "key c-1 has no events to erase".into(),
        }),
    )
    .await
}

/// No receiver answers on NATS: Pending, ReceiverUnavailable, tried again soon.
pub async fn erasure_without_a_receiver() -> Erasing {
    play_erasure(
        erasure(None),
        vec![
            Expect::get(
                format!("{DP}/entities/customer"),
                entity_json(&shop().entity),
            ),
            Expect::apply_onto(
                erasure_status_path(),
                serde_json::to_value(erasure(None)).unwrap(),
            ),
        ],
        Arc::new(FakeProbe::default()),
        None,
    )
    .await
}

/// The config hash on a Deployment body.
pub fn config_hash(deployment: &Value) -> &str {
    deployment["spec"]["template"]["metadata"]["annotations"][CONFIG_HASH_ANNOTATION]
        .as_str()
        .expect("a config hash")
}
