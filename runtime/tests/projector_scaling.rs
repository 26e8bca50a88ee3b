//! Replicas share the partitions through leases; when one dies (no graceful shutdown), the
//! others take its partitions over within seconds and the view ends equal to a fresh
//! single-replica replay, row for row.

mod projector_support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use projector_support::*;

const SPEC: &str = "  replicas: 3\n  filters:\n    - where: \"state.active && state.spend > 0\"\n    - set: {label: \"state.city + '/' + key\"}\n  sink:\n    postgres:\n      view: customers\n      columns: [{name: name, type: text}, {name: label, type: text}, {name: spend, type: bigint}, {name: score, type: double precision}]\n";

async fn owned(replica: &Replica) -> BTreeSet<u32> {
    replica.status.owned.lock().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_the_partitions_and_survive_one_being_killed() {
    let mut bed = Bed::start(8).await;
    let projection = projection("customers", SPEC);
    let options = fast_options();
    let r1 = bed.replica(&projection, "r1", options.clone()).await;
    let r2 = bed.replica(&projection, "r2", options.clone()).await;
    let r3 = bed.replica(&projection, "r3", options.clone()).await;

    // Evenly: 8 partitions over 3 replicas is 3, 3 and 2, each held by exactly one.
    wait_until(
        Duration::from_secs(20),
        "an even share of the partitions",
        || async {
            let sets = [owned(&r1).await, owned(&r2).await, owned(&r3).await];
            let mut sizes: Vec<usize> = sets.iter().map(BTreeSet::len).collect();
            sizes.sort();
            let all: BTreeSet<u32> = sets.iter().flatten().copied().collect();
            sizes == [2, 3, 3] && all.len() == 8
        },
    )
    .await;

    let mut rng = fastrand::Rng::with_seed(42);
    bed.producer
        .publish(random_changes(&mut rng, 2000, 8000))
        .await;
    // Kill r2 while the replicas are busy with that burst.
    let orphaned = owned(&r2).await;
    assert!(!orphaned.is_empty());
    r2.crash().await;
    let killed = Instant::now();
    bed.producer
        .publish(random_changes(&mut rng, 2000, 8000))
        .await;

    wait_until(
        Duration::from_secs(15),
        "the survivors to take every partition",
        || async {
            let all: BTreeSet<u32> = owned(&r1).await.union(&owned(&r3).await).copied().collect();
            all.len() == 8
        },
    )
    .await;
    let moved_after = killed.elapsed();
    assert!(
        moved_after < options.lease_ttl + Duration::from_secs(3),
        "partitions moved after {moved_after:?}"
    );
    let (s1, s3) = (owned(&r1).await.len(), owned(&r3).await.len());
    assert_eq!(
        (s1.min(s3), s1.max(s3)),
        (4, 4),
        "the survivors share evenly"
    );

    bed.caught_up(&bed.pool, &projection, Duration::from_secs(120))
        .await;
    wait_until(Duration::from_secs(10), "the view", || {
        view_exists(&bed.pool, "customers")
    })
    .await;
    let view = rows(&bed.pool, "customers").await;
    r1.stop().await;
    r3.stop().await;

    let fresh = bed.fresh_replay(&projection, "customers").await;
    assert!(!fresh.is_empty());
    assert_eq!(view.len(), fresh.len());
    assert!(view == fresh, "the view differs from a fresh replay");
}
