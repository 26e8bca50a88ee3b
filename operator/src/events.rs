//! Kubernetes Events for what users should notice: children created or updated, invalid specs,
//! generation swaps, stream deletion. An event that cannot be published is logged, never fatal.

use kube::Resource;
use kube::runtime::events::{Event, EventType};

use crate::context::Context;

/// Events notes are limited to 1 kB by the API server.
const MAX_NOTE: usize = 1024;

fn publish<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    object: &K,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) -> impl std::future::Future<Output = ()> + Send + use<K> {
    let mut note = note;
    if note.len() > MAX_NOTE {
        let mut cut = MAX_NOTE - 3;
        while !note.is_char_boundary(cut) {
            cut -= 1;
        }
        note.truncate(cut);
        note.push_str("...");
    }
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: action.to_owned(),
        secondary: None,
    };
    let reference = object.object_ref(&());
    let recorder = ctx.recorder.clone();
    async move {
        if let Err(error) = recorder.publish(&event, &reference).await {
            tracing::warn!(
                %error,
                object = reference.name.as_deref().unwrap_or_default(),
                reason = event.reason,
                "could not publish an event"
            );
        }
    }
}

/// A Normal event.
pub async fn normal<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    object: &K,
    reason: &str,
    action: &str,
    note: String,
) {
    publish(ctx, object, EventType::Normal, reason, action, note).await;
}

/// A Warning event.
pub async fn warning<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    object: &K,
    reason: &str,
    action: &str,
    note: String,
) {
    publish(ctx, object, EventType::Warning, reason, action, note).await;
}
