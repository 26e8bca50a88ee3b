//! A failed read of the event store says which read it was (stream, state, latest, history),
//! against a real nats-server whose stream is deleted under an open store.

use crds::entity::StreamSpec;
use runtime::store::jetstream::{EventStore, StoreError, ensure_stream};
use runtime::store::{Key, StreamNames};
use testbed::NatsServer;

#[tokio::test]
async fn reads_of_a_stream_that_went_away_name_the_read_that_failed() {
    let nats = NatsServer::start().await.unwrap();
    let client = nats.client().await.unwrap();
    let names = StreamNames::new("shop", "customer", 4);
    ensure_stream(&client, &names, &StreamSpec::default())
        .await
        .unwrap();
    let store = EventStore::open(&client, names.clone()).await.unwrap();
    let key = Key::new("c1").unwrap();
    assert!(store.history(&key, 1, 10).await.unwrap().is_empty());
    nats.jetstream()
        .await
        .unwrap()
        .delete_stream(names.stream())
        .await
        .unwrap();

    let error = store.stats().await.unwrap_err();
    assert!(matches!(error, StoreError::StreamInfo { .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        "could not read the state of stream dp_shop_customer"
    );

    let error = store.history(&key, 1, 10).await.unwrap_err();
    assert!(
        matches!(error, StoreError::History { from: 1, .. }),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        format!(
            "could not read the history of {} from sequence 1",
            names.subject(&key)
        )
    );

    let error = store.latest_many(&[key]).await.unwrap_err();
    assert!(
        matches!(error, StoreError::LatestMany { keys: 1, .. }),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "could not read the latest events of 1 keys of stream dp_shop_customer"
    );

    let error = EventStore::open(&client, names).await.unwrap_err();
    assert!(matches!(error, StoreError::OpenStream { .. }), "{error:?}");
    assert_eq!(error.to_string(), "could not open stream dp_shop_customer");
}
