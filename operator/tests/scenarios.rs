//! Reconciles played against a scripted API server: each scenario fails on a missing, extra
//! or out-of-order call; these tests then check what was written.

mod common;

use std::time::Duration;

use common::scenarios::{self, config_hash};
use kube::runtime::controller::Action;
use serde_json::{Value, json};

const DP: &str = "/apis/dreampipe.io/v1alpha1/namespaces/shop";
const APPS: &str = "/apis/apps/v1/namespaces/shop";

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["status"]["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {status}"))
}

#[tokio::test]
async fn a_new_entity_gets_its_receiver_and_a_status_from_it() {
    let outcome = scenarios::entity_created().await;
    let deployment = outcome.body("PATCH", &format!("{APPS}/deployments/customer-receiver"));
    assert_eq!(deployment["spec"]["replicas"], 2);
    let ssa = outcome
        .calls
        .iter()
        .find(|c| c.path.ends_with("/deployments/customer-receiver"))
        .unwrap();
    assert_eq!(ssa.content_type, "application/apply-patch+yaml");
    assert!(
        ssa.query.contains("fieldManager=dreampipe-operator") && ssa.query.contains("force=true")
    );

    let status = outcome.body("PATCH", &format!("{DP}/entities/customer/status"));
    assert_eq!(status["status"]["receivers"], "1/2");
    assert_eq!(status["status"]["events"], 42);
    assert_eq!(status["status"]["keys"], 7);
    assert_eq!(status["status"]["stream"], "dp_shop_customer");
    assert_eq!(
        status["status"]["endpoint"],
        "http://customer-receiver.shop.svc:8080"
    );
    assert_eq!(status["status"]["observedGeneration"], 1);
    assert_eq!(condition(status, "Ready")["status"], "False");
    assert_eq!(condition(status, "Progressing")["status"], "True");
    let event = outcome.body("POST", "/apis/events.k8s.io/v1/namespaces/shop/events");
    assert_eq!(event["reason"], "Created");
    assert_eq!(event["regarding"]["kind"], "Entity");
    assert_eq!(outcome.action, Action::requeue(Duration::from_secs(30)));
}

#[tokio::test]
async fn replicated_receivers_get_a_disruption_budget_owned_by_their_entity() {
    let outcome = scenarios::entity_created().await;
    let steps: Vec<&str> = outcome.calls.iter().map(|c| c.path.as_str()).collect();
    let deployment = steps
        .iter()
        .position(|p| p.ends_with("/deployments/customer-receiver"))
        .unwrap();
    let budget = steps
        .iter()
        .position(|p| p.ends_with("/poddisruptionbudgets/customer-receiver"))
        .expect("a PodDisruptionBudget applied");
    assert!(budget > deployment, "the pods first, then their budget");
    let call = &outcome.calls[budget];
    assert_eq!(call.content_type, "application/apply-patch+yaml");
    let pdb = &call.body;
    assert_eq!(pdb["apiVersion"], "policy/v1");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    let selector = &outcome.body("PATCH", &format!("{APPS}/deployments/customer-receiver"))["spec"]
        ["selector"]["matchLabels"];
    assert_eq!(&pdb["spec"]["selector"]["matchLabels"], selector);
    let owner = &pdb["metadata"]["ownerReferences"][0];
    assert_eq!(
        (owner["kind"].as_str(), owner["name"].as_str()),
        (Some("Entity"), Some("customer"))
    );
    assert_eq!(owner["controller"], true);
}

#[tokio::test]
async fn with_network_policies_on_receivers_get_one_and_without_it_is_deleted() {
    let outcome = scenarios::entity_created_with_network_policy().await;
    let path = "/apis/networking.k8s.io/v1/namespaces/shop/networkpolicies/customer-receiver";
    let policy = outcome.body("PATCH", path);
    assert_eq!(policy["kind"], "NetworkPolicy");
    assert_eq!(policy["metadata"]["ownerReferences"][0]["name"], "customer");
    assert_eq!(
        policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"],
        "receiver"
    );
    let from = &policy["spec"]["ingress"][0]["from"];
    assert_eq!(
        from[0]["podSelector"]["matchLabels"]["dreampipe.io/entity"],
        "customer"
    );
    assert_eq!(
        from[1]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "dreampipe"
    );
    assert_eq!(
        from[2]["namespaceSelector"]["matchExpressions"][0]["values"],
        serde_json::json!(["monitoring"])
    );

    // Off (the default), the reconcile deletes a policy left from when it was on.
    let outcome = scenarios::entity_created().await;
    let methods: Vec<&str> = outcome
        .calls
        .iter()
        .filter(|c| c.path == path)
        .map(|c| c.method.as_str())
        .collect();
    assert_eq!(methods, ["DELETE"]);
}

#[tokio::test]
async fn scaling_a_receiver_down_to_one_deletes_its_disruption_budget() {
    let outcome = scenarios::entity_scaled_to_one().await;
    let budget: Vec<&str> = outcome
        .calls
        .iter()
        .filter(|c| c.path.ends_with("/poddisruptionbudgets/customer-receiver"))
        .map(|c| c.method.as_str())
        .collect();
    assert_eq!(budget, ["DELETE"]);
    let deployment = outcome.body("PATCH", &format!("{APPS}/deployments/customer-receiver"));
    assert_eq!(deployment["spec"]["replicas"], 1);
}

#[tokio::test]
async fn an_updated_entity_is_re_applied_and_announced() {
    let outcome = scenarios::entity_updated().await;
    let deployment = outcome.body("PATCH", &format!("{APPS}/deployments/customer-receiver"));
    assert_eq!(deployment["spec"]["replicas"], 3);
    let status = outcome.body("PATCH", &format!("{DP}/entities/customer/status"));
    assert_eq!(condition(status, "Ready")["status"], "True");
    assert_eq!(status["status"]["observedGeneration"], 2);
    // The receiver did not answer, but its pods are ready: the figures cannot be trusted.
    assert_eq!(condition(status, "Degraded")["reason"], "StatusUnavailable");
    let event = outcome.body("POST", "/apis/events.k8s.io/v1/namespaces/shop/events");
    assert_eq!(event["reason"], "Updated");
}

#[tokio::test]
async fn an_entity_whose_stream_must_be_deleted_first_gets_a_finalizer() {
    let outcome = scenarios::entity_finalizer_added().await;
    let patch = &outcome.calls[0];
    assert_eq!(patch.content_type, "application/json-patch+json");
    assert!(
        patch
            .body
            .to_string()
            .contains("dreampipe.io/delete-stream")
    );
    assert_eq!(outcome.action, Action::await_change());
    assert!(outcome.deleted_streams.is_empty());
}

#[tokio::test]
async fn deleting_an_entity_with_delete_policy_removes_its_stream_then_the_finalizer() {
    let outcome = scenarios::entity_deleted().await;
    assert_eq!(outcome.deleted_streams, ["dp_shop_customer"]);
    let event = outcome.body("POST", "/apis/events.k8s.io/v1/namespaces/shop/events");
    assert_eq!(event["reason"], "StreamDeleted");
    let removal = outcome.calls.last().unwrap();
    assert_eq!(removal.content_type, "application/json-patch+json");
    assert!(removal.body.to_string().contains("remove"));
}

#[tokio::test]
async fn an_invalid_entity_says_which_field_and_waits_for_a_change() {
    let outcome = scenarios::entity_invalid_twice().await;
    assert!(
        outcome
            .calls
            .iter()
            .all(|c| !c.path.contains("/deployments/"))
    );
    let status = outcome.body("PATCH", &format!("{DP}/entities/customer/status"));
    let ready = condition(status, "Ready");
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "InvalidSpec");
    assert!(
        ready["message"].as_str().unwrap().contains("spec.key"),
        "{ready}"
    );
    let event = outcome.body("POST", "/apis/events.k8s.io/v1/namespaces/shop/events");
    assert_eq!(event["type"], "Warning");
    assert!(event["note"].as_str().unwrap().contains("spec.key"));
    assert_eq!(outcome.action, Action::await_change());
}

#[tokio::test]
async fn a_new_projection_runs_one_projector_and_reports_its_generation() {
    let outcome = scenarios::projection_created().await;
    let deployment = outcome.body("PATCH", &format!("{APPS}/deployments/customers-projector"));
    assert_eq!(deployment["spec"]["replicas"], 2);
    let status = &outcome.body("PATCH", &format!("{DP}/projections/customers/status"))["status"];
    assert_eq!(status["phase"], "Live");
    assert_eq!(status["lag"], 5);
    assert_eq!(
        status["lagSeconds"], 1.5,
        "from the report, for the Lag column"
    );
    assert_eq!(status["view"], "customers");
    assert_eq!(status["activeGeneration"], "g1");
    assert_eq!(status["deadLetters"], 1);
    assert_eq!(status["readyReplicas"], 2);
    assert_eq!(
        outcome.asked,
        ["http://customers-projector.shop.svc:8080/v1/status"]
    );
}

#[tokio::test]
async fn scaling_a_projection_scales_its_deployment_and_keeps_the_scale_status_right() {
    let outcome = scenarios::projection_scaled().await;
    let deployment = outcome.body("PATCH", &format!("{APPS}/deployments/customers-projector"));
    assert_eq!(deployment["spec"]["replicas"], 4);
    let status = &outcome.body("PATCH", &format!("{DP}/projections/customers/status"))["status"];
    assert_eq!(status["replicas"], 4);
    assert_eq!(status["readyReplicas"], 3);
    assert_eq!(
        status["selector"],
        "app.kubernetes.io/component=projector,app.kubernetes.io/instance=customers,\
         app.kubernetes.io/name=dreampipe"
    );
    let created = scenarios::projection_created().await;
    let before = created.body("PATCH", &format!("{APPS}/deployments/customers-projector"));
    assert_eq!(
        config_hash(deployment),
        config_hash(before),
        "scaling must not roll pods"
    );
}

#[tokio::test]
async fn a_filter_edit_rolls_the_projector_and_the_swap_is_announced() {
    let outcome = scenarios::projection_generation_swapped().await;
    let deployment = outcome.body("PATCH", &format!("{APPS}/deployments/customers-projector"));
    let created = scenarios::projection_created().await;
    let before = created.body("PATCH", &format!("{APPS}/deployments/customers-projector"));
    assert_ne!(config_hash(deployment), config_hash(before));
    let events: Vec<&Value> = outcome
        .calls
        .iter()
        .filter(|c| c.method == "POST" && c.path.ends_with("/events"))
        .map(|c| &c.body)
        .collect();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["reason"], "Updated");
    assert_eq!(events[1]["reason"], "GenerationSwapped");
    assert!(events[1]["note"].as_str().unwrap().contains("g2"));
    let status = &outcome.body("PATCH", &format!("{DP}/projections/customers/status"))["status"];
    assert_eq!(status["activeGeneration"], "g2");
}

#[tokio::test]
async fn a_rebuild_token_rolls_the_projector_while_the_old_generation_keeps_serving() {
    let outcome = scenarios::projection_rebuild_asked().await;
    let deployment = outcome.body("PATCH", &format!("{APPS}/deployments/customers-projector"));
    let created = scenarios::projection_created().await;
    let before = created.body("PATCH", &format!("{APPS}/deployments/customers-projector"));
    assert_ne!(config_hash(deployment), config_hash(before));
    let status = &outcome.body("PATCH", &format!("{DP}/projections/customers/status"))["status"];
    assert_eq!(status["activeGeneration"], "g1");
    assert_eq!(status["buildingGeneration"], "g2");
    assert_eq!(status["view"], "customers");
    let events: Vec<&Value> = outcome
        .calls
        .iter()
        .filter(|c| c.method == "POST" && c.path.ends_with("/events"))
        .map(|c| &c.body)
        .collect();
    assert_eq!(events.len(), 1, "no swap yet");
    assert_eq!(events[0]["reason"], "Updated");
}

#[tokio::test]
async fn a_projection_whose_view_another_owns_is_refused_naming_the_owner() {
    let outcome = scenarios::projection_view_conflict().await;
    let status = outcome.body("PATCH", &format!("{DP}/projections/customers/status"));
    let ready = condition(status, "Ready");
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "ViewConflict");
    let message = ready["message"].as_str().unwrap();
    assert!(
        message.contains("view customers is owned by Projection shop/crm-customers"),
        "{message}"
    );
    assert_eq!(condition(status, "Degraded")["reason"], "ViewConflict");
    assert_eq!(status["status"]["phase"], "Degraded");
    let events: Vec<&Value> = outcome
        .calls
        .iter()
        .filter(|c| c.method == "POST" && c.path.ends_with("/events"))
        .map(|c| &c.body)
        .collect();
    let warnings: Vec<&&Value> = events.iter().filter(|e| e["type"] == "Warning").collect();
    assert_eq!(warnings.len(), 1, "{events:?}");
    assert_eq!(warnings[0]["reason"], "ViewConflict");
    assert!(
        warnings[0]["note"]
            .as_str()
            .unwrap()
            .contains("shop/crm-customers")
    );
}

#[tokio::test]
async fn new_dead_letters_show_in_the_status_and_in_a_warning_event() {
    let outcome = scenarios::projection_dead_letters_arrive().await;
    let status = &outcome.body("PATCH", &format!("{DP}/projections/customers/status"))["status"];
    assert_eq!(status["deadLetters"], 5);
    assert_eq!(status["unhandledDeadLetters"], 4);
    let events: Vec<&Value> = outcome
        .calls
        .iter()
        .filter(|c| c.method == "POST" && c.path.ends_with("/events"))
        .map(|c| &c.body)
        .collect();
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0]["type"], "Warning");
    assert_eq!(events[0]["reason"], "NewDeadLetters");
    let note = events[0]["note"].as_str().unwrap();
    assert!(
        note.starts_with("3 new dead letter(s), 4 unhandled"),
        "{note}"
    );
}

#[tokio::test]
async fn a_missing_database_secret_is_named_with_the_command_that_creates_it() {
    let outcome = scenarios::projection_database_secret_missing().await;
    let deployment = outcome.body("PATCH", &format!("{APPS}/deployments/customers-projector"));
    let env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap();
    let url = env.iter().find(|e| e["name"] == "DATABASE_URL").unwrap();
    assert_eq!(
        url["valueFrom"]["secretKeyRef"],
        json!({"name": "shop-db", "key": "url", "optional": false})
    );
    let status = outcome.body("PATCH", &format!("{DP}/projections/customers/status"));
    let ready = condition(status, "Ready");
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "CreateContainerConfigError");
    let message = ready["message"].as_str().unwrap();
    assert!(
        message.contains(
            "the Secret \"shop-db\" does not exist in namespace shop; create it: kubectl create \
             secret generic shop-db -n shop --from-literal=url='postgres://"
        ),
        "{message}"
    );
    let warnings: Vec<&Value> = outcome
        .calls
        .iter()
        .filter(|c| c.method == "POST" && c.body["type"] == "Warning")
        .map(|c| &c.body)
        .collect();
    assert_eq!(warnings.len(), 1);
    assert!(
        warnings[0]["note"]
            .as_str()
            .unwrap()
            .contains("kubectl create secret generic shop-db -n shop")
    );
}

#[tokio::test]
async fn a_suspended_adapter_scales_to_zero_keeps_everything_and_says_suspended() {
    let outcome = scenarios::adapter_suspended().await;
    let deployment = outcome.body("PATCH", &format!("{APPS}/deployments/crm-adapter"));
    assert_eq!(deployment["spec"]["replicas"], 0);
    let deleted: Vec<&str> = outcome
        .calls
        .iter()
        .filter(|c| c.method == "DELETE")
        .map(|c| c.path.as_str())
        .collect();
    assert_eq!(
        deleted,
        [
            "/api/v1/namespaces/shop/services/crm-adapter",
            "/apis/policy/v1/namespaces/shop/poddisruptionbudgets/crm-adapter"
        ],
        "only what a polling adapter never has"
    );
    assert!(
        outcome.asked.is_empty(),
        "no pod to ask: {:?}",
        outcome.asked
    );
    let status = outcome.body("PATCH", &format!("{DP}/adapters/crm/status"));
    let ready = condition(status, "Ready");
    assert_eq!(
        (&ready["status"], &ready["reason"]),
        (&json!("False"), &json!("Suspended"))
    );
    assert_eq!(condition(status, "Degraded")["status"], "False");
    assert_eq!(status["status"]["recordsRead"], 100, "the figures are kept");
}

#[tokio::test]
async fn a_lagging_autoscaled_projector_gets_more_replicas_and_says_so() {
    let outcome = scenarios::projection_autoscaled_up().await;
    let deployment = outcome.body("PATCH", &format!("{APPS}/deployments/customers-projector"));
    assert_eq!(
        deployment["spec"]["replicas"], 4,
        "spec.replicas (2) is not used"
    );
    let status = &outcome.body("PATCH", &format!("{DP}/projections/customers/status"))["status"];
    assert_eq!(status["lagSeconds"], 40.0);
    assert_eq!(status["autoscale"]["replicas"], 4);
    assert_ne!(status["autoscale"]["lastScaleTime"], "2026-01-01T00:00:00Z");
    assert!(
        status["autoscale"]["reason"]
            .as_str()
            .unwrap()
            .contains("above the target")
    );
    let events: Vec<&Value> = outcome
        .calls
        .iter()
        .filter(|c| c.method == "POST" && c.path.ends_with("/events"))
        .map(|c| &c.body)
        .collect();
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0]["reason"], "Autoscaled");
    assert!(
        events[0]["note"]
            .as_str()
            .unwrap()
            .starts_with("projector scaled from 2 to 4 replicas")
    );
}

#[tokio::test]
async fn a_projection_with_bad_cel_is_not_ready_and_names_the_filter() {
    let outcome = scenarios::projection_invalid().await;
    let status = outcome.body("PATCH", &format!("{DP}/projections/customers/status"));
    let ready = condition(status, "Ready");
    assert_eq!(ready["reason"], "InvalidSpec");
    assert!(
        ready["message"]
            .as_str()
            .unwrap()
            .contains("spec.filters[0].where")
    );
    assert_eq!(outcome.action, Action::await_change());
}

#[tokio::test]
async fn a_projection_of_an_unknown_entity_names_spec_entity() {
    let outcome = scenarios::projection_unknown_entity().await;
    let status = outcome.body("PATCH", &format!("{DP}/projections/customers/status"));
    let ready = condition(status, "Ready");
    assert_eq!(ready["reason"], "UnknownEntity");
    assert!(
        ready["message"]
            .as_str()
            .unwrap()
            .starts_with("spec.entity:")
    );
    assert_eq!(outcome.action, Action::await_change());
}

#[tokio::test]
async fn a_polling_adapter_has_no_service_and_reports_its_pods_figures() {
    let outcome = scenarios::adapter_polling().await;
    let services: Vec<&str> = outcome
        .calls
        .iter()
        .filter(|c| c.path.contains("/services/"))
        .map(|c| c.method.as_str())
        .collect();
    assert_eq!(
        services,
        ["DELETE"],
        "no Service applied; a leftover one deleted"
    );
    assert_eq!(outcome.asked, ["http://10.1.2.3:8080/v1/status"]);
    let status = &outcome.body("PATCH", &format!("{DP}/adapters/crm/status"))["status"];
    assert_eq!(status["recordsRead"], 100);
    assert_eq!(status["changed"], 60);
    assert_eq!(status["rejected"], 2);
}

#[tokio::test]
async fn a_webhook_adapter_gets_a_service_and_is_asked_through_it() {
    let outcome = scenarios::adapter_webhook().await;
    assert!(
        outcome
            .calls
            .iter()
            .any(|c| c.path.ends_with("/services/pushes-adapter"))
    );
    assert_eq!(
        outcome.asked,
        ["http://pushes-adapter.shop.svc:8080/v1/status"]
    );
}

#[tokio::test]
async fn a_deleted_projection_with_delete_policy_drops_its_views_before_it_goes() {
    let outcome = scenarios::projection_deleted().await;
    let steps: Vec<(&str, &str)> = outcome
        .calls
        .iter()
        .map(|c| (c.method.as_str(), c.path.as_str()))
        .collect();
    assert_eq!(
        steps,
        [
            (
                "DELETE",
                "/apis/apps/v1/namespaces/shop/deployments/customers-projector"
            ),
            ("GET", "/api/v1/namespaces/shop/pods"),
            ("GET", "/apis/batch/v1/namespaces/shop/jobs/customers-drop"),
            (
                "PATCH",
                "/apis/batch/v1/namespaces/shop/jobs/customers-drop"
            ),
            ("POST", "/apis/events.k8s.io/v1/namespaces/shop/events"),
            (
                "PATCH",
                "/apis/dreampipe.io/v1alpha1/namespaces/shop/projections/customers"
            ),
        ]
    );
    assert!(
        outcome.calls[1]
            .query
            .contains("app.kubernetes.io%2Finstance%3Dcustomers")
    );
    let job = outcome.body(
        "PATCH",
        "/apis/batch/v1/namespaces/shop/jobs/customers-drop",
    );
    let pod = &job["spec"]["template"]["spec"];
    assert_eq!(pod["containers"][0]["args"], json!(["projector", "--drop"]));
    assert_eq!(pod["restartPolicy"], "Never");
    assert_eq!(
        job["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"],
        "projector-drop",
        "the Job's pod is not one of the projector's pods"
    );
    let event = outcome.body("POST", "/apis/events.k8s.io/v1/namespaces/shop/events");
    assert_eq!(event["reason"], "ViewsDropped");
    let removal = outcome.calls.last().unwrap();
    assert_eq!(removal.content_type, "application/json-patch+json");
    assert!(removal.body.to_string().contains("remove"));
}

#[tokio::test]
async fn a_projection_deletion_waits_until_its_projector_pods_are_gone() {
    let (outcome, error) = scenarios::projection_deletion_waits().await;
    assert!(error.is_waiting(), "{error}");
    assert_eq!(outcome.calls.len(), 2, "no Job while a projector pod runs");
    assert!(
        !outcome
            .calls
            .iter()
            .any(|c| c.path.ends_with("/projections/customers")),
        "the finalizer stays"
    );
}

#[tokio::test]
async fn a_completed_drop_job_releases_the_finalizer_without_being_applied_again() {
    let outcome = scenarios::projection_deleted_after_its_job_completed().await;
    assert!(
        !outcome
            .calls
            .iter()
            .any(|c| c.method == "PATCH" && c.path.ends_with("/jobs/customers-drop")),
        "an existing Job's template is never applied again"
    );
    let event = outcome.body("POST", "/apis/events.k8s.io/v1/namespaces/shop/events");
    assert_eq!(event["reason"], "ViewsDropped");
    let removal = outcome.calls.last().unwrap();
    assert!(removal.path.ends_with("/projections/customers"));
    assert!(
        removal.body.to_string().contains("remove"),
        "the finalizer goes"
    );
}

#[tokio::test]
async fn pods_that_cannot_start_say_why_in_the_ready_condition_and_an_event() {
    let outcome = scenarios::entity_pods_failing().await;
    let status = outcome.body("PATCH", &format!("{DP}/entities/customer/status"));
    let ready = condition(status, "Ready");
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "CreateContainerConfigError");
    assert_eq!(
        ready["message"],
        "0/2 receiver pods ready; pod customer-receiver-7d9f: CreateContainerConfigError: \
         secret \"customer-ingest\" not found"
    );
    let warnings: Vec<&Value> = outcome
        .calls
        .iter()
        .filter(|c| c.method == "POST" && c.body["type"] == "Warning")
        .map(|c| &c.body)
        .collect();
    assert_eq!(warnings.len(), 1, "one Warning for the failing pods");
    assert_eq!(warnings[0]["reason"], "CreateContainerConfigError");
    assert!(
        warnings[0]["note"]
            .as_str()
            .unwrap()
            .contains("secret \"customer-ingest\" not found")
    );
}

#[tokio::test]
async fn an_erasure_writes_the_tombstone_then_waits_for_generations_before_it() {
    let erasing = scenarios::erasure_scrubbing().await;
    let asked = erasing.eraser.asked.lock().unwrap().clone();
    assert_eq!(asked.len(), 1, "the receiver is asked once");
    let (namespace, entity, command) = &asked[0];
    assert_eq!((namespace.as_str(), entity.as_str()), ("shop", "customer"));
    assert_eq!(command.key, "c-1");
    assert_eq!(command.requested_by, "privacy@example.com");
    assert_eq!(command.reason, "GDPR art. 17 request 4711");

    let outcome = &erasing.outcome;
    let event = outcome.body("POST", "/apis/events.k8s.io/v1/namespaces/shop/events");
    assert_eq!(event["reason"], "KeyErased");
    assert!(
        event["note"]
            .as_str()
            .unwrap()
            .contains("3 events purged from stream dp_shop_customer"),
        "{event}"
    );
    let status = &outcome.body("PATCH", &format!("{DP}/erasures/forget-c-1/status"))["status"];
    assert_eq!(status["phase"], "Erasing");
    assert_eq!(
        status["tombstone"],
        json!({"version": 4, "sequence": 100, "partition": 1})
    );
    assert_eq!(status["purgedEvents"], 3);
    // Only the customer Entity's Projection counts; the order one is not asked.
    assert_eq!(status["scrubbed"], "0/1");
    assert_eq!(
        outcome.asked,
        ["http://customers-projector.shop.svc:8080/v1/status"]
    );
    let customers = &status["projections"][0];
    assert_eq!(customers["name"], "customers");
    assert_eq!(customers["scrubbed"], false);
    assert_eq!(
        customers["message"],
        "generation g2 (building) is at sequence 60 of partition 1, before the tombstone at \
         sequence 100"
    );
    let complete = &status["conditions"][0];
    assert_eq!(complete["type"], "Complete");
    assert_eq!(complete["status"], "False");
    assert_eq!(complete["reason"], "Scrubbing");
    assert_eq!(outcome.action, Action::requeue(Duration::from_secs(5)));
}

#[tokio::test]
async fn an_erasure_completes_when_every_generation_applied_the_tombstone() {
    let erasing = scenarios::erasure_completed().await;
    assert!(
        erasing.eraser.asked.lock().unwrap().is_empty(),
        "a written tombstone is not asked for again"
    );
    let outcome = &erasing.outcome;
    let status = &outcome.body("PATCH", &format!("{DP}/erasures/forget-c-1/status"))["status"];
    assert_eq!(status["phase"], "Complete");
    assert_eq!(status["scrubbed"], "1/1");
    assert_eq!(status["projections"][0]["scrubbed"], true);
    assert!(status["completionTime"].is_string());
    assert_eq!(status["conditions"][0]["status"], "True");
    assert_eq!(status["conditions"][0]["reason"], "Erased");
    assert_eq!(condition(status_of(outcome), "Ready")["status"], "True");
    assert_eq!(
        condition(status_of(outcome), "Progressing")["status"],
        "False"
    );
    let event = outcome.body("POST", "/apis/events.k8s.io/v1/namespaces/shop/events");
    assert_eq!(event["reason"], "Erased");
    assert_eq!(event["type"], "Normal");
    assert_eq!(outcome.action, Action::await_change());
}

#[tokio::test]
async fn erasing_a_key_without_events_fails_and_says_so() {
    let outcome = scenarios::erasure_of_an_unknown_key().await.outcome;
    let status = &outcome.body("PATCH", &format!("{DP}/erasures/forget-c-1/status"))["status"];
    assert_eq!(status["phase"], "Failed");
    assert!(status.get("tombstone").is_none());
    let complete = &status["conditions"][0];
    assert_eq!(complete["reason"], "KeyNotFound");
    assert_eq!(condition(status_of(&outcome), "Degraded")["status"], "True");
    assert_eq!(complete["message"], "key c-1 has no events to erase");
    let event = outcome.body("POST", "/apis/events.k8s.io/v1/namespaces/shop/events");
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["reason"], "KeyNotFound");
    assert!(outcome.asked.is_empty(), "no Projection is looked at");
    assert_eq!(outcome.action, Action::await_change());
}

#[tokio::test]
async fn an_erasure_without_a_receiver_waits_and_says_why() {
    let outcome = scenarios::erasure_without_a_receiver().await.outcome;
    let status = &outcome.body("PATCH", &format!("{DP}/erasures/forget-c-1/status"))["status"];
    assert_eq!(status["phase"], "Pending");
    let complete = &status["conditions"][0];
    assert_eq!(complete["reason"], "ReceiverUnavailable");
    assert!(
        complete["message"]
            .as_str()
            .unwrap()
            .contains("dreampipe.erasure.shop.customer"),
        "{complete}"
    );
    assert_eq!(outcome.action, Action::requeue(Duration::from_secs(5)));
}

/// The body of an erasure scenario's status write.
fn status_of(outcome: &common::scenarios::Outcome) -> &Value {
    outcome.body("PATCH", &format!("{DP}/erasures/forget-c-1/status"))
}
