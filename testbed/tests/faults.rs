//! The test bed can take servers away and bring them back as production loses them: a
//! single server killed and restarted over its store, a cluster node killed under an R3 stream.

use std::time::{Duration, Instant};

use async_nats::jetstream::stream;
use testbed::{NatsCluster, NatsServer};

async fn publish_all(js: &async_nats::jetstream::Context, subject: &str, count: usize) {
    for index in 0..count {
        js.publish(subject.to_owned(), index.to_string().into())
            .await
            .expect("publish sent")
            .await
            .expect("publish acknowledged");
    }
}

#[tokio::test]
async fn a_killed_server_restarts_over_its_store_on_the_same_url() {
    let mut nats = NatsServer::start().await.unwrap();
    let url = nats.url().to_owned();
    let js = nats.jetstream().await.unwrap();
    js.create_stream(stream::Config {
        name: "kept".to_owned(),
        subjects: vec!["kept.>".to_owned()],
        ..Default::default()
    })
    .await
    .unwrap();
    publish_all(&js, "kept.one", 20).await;

    nats.kill();
    assert!(
        async_nats::connect(url.as_str()).await.is_err() || js.get_stream("kept").await.is_err(),
        "a killed server answers nothing"
    );
    nats.restart().unwrap();
    assert_eq!(nats.url(), url, "the restarted server keeps its address");

    let js = nats.jetstream().await.unwrap();
    let mut kept = js.get_stream("kept").await.unwrap();
    assert_eq!(
        kept.info().await.unwrap().state.messages,
        20,
        "every acknowledged message survives SIGKILL"
    );
}

#[tokio::test]
async fn an_r3_stream_survives_the_loss_of_its_leader() {
    let mut cluster = NatsCluster::start(3).await.unwrap();
    assert_eq!(cluster.len(), 3);
    let js = cluster.jetstream().await.unwrap();
    js.create_stream(stream::Config {
        name: "replicated".to_owned(),
        subjects: vec!["replicated.>".to_owned()],
        num_replicas: 3,
        ..Default::default()
    })
    .await
    .unwrap();
    // A new R3 stream takes writes once its Raft group has elected a leader: a publish before
    // that is answered "stream not found".
    let started = Instant::now();
    let leader = loop {
        if let Some(index) = cluster.leader_of(&js, "replicated").await {
            break index;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the new R3 stream has no leader after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    publish_all(&js, "replicated.one", 50).await;
    let leader = cluster.leader_of(&js, "replicated").await.unwrap_or(leader);
    cluster.kill(leader);

    // The two survivors elect a new leader; the client, which knows every node, fails over.
    let started = Instant::now();
    let new_leader = loop {
        if let Some(index) = cluster.leader_of(&js, "replicated").await
            && index != leader
        {
            break index;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no new leader 30 s after node n{leader} was killed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut replicated = js.get_stream("replicated").await.unwrap();
    assert_eq!(
        replicated.info().await.unwrap().state.messages,
        50,
        "every acknowledged message survives the leader's loss (new leader n{new_leader})"
    );
    publish_all(&js, "replicated.one", 10).await;

    // The killed node comes back over its store and catches up.
    cluster.restart(leader).unwrap();
    assert_eq!(
        replicated.info().await.unwrap().state.messages,
        60,
        "the stream takes writes with two of three nodes and keeps them after the third returns"
    );
}
