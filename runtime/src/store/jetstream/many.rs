//! The latest events of many keys at once: batched direct gets (ADR 2), and on a replicated
//! stream the proof that the replica which answered was not behind the leader (ADR 0047).

use std::collections::HashMap;

use super::{Detail, EventStore, Key, StoreError, Stored};

/// Subjects asked for in one multi-subject direct get.
const MULTI_GET_CHUNK: usize = 256;
/// Batched reads of a replicated stream tried before reading key by key from the leader,
/// when the replica that answered was behind the leader.
const FRESH_ATTEMPTS: usize = 3;

impl EventStore {
    /// The latest event (without `changes`) of each of `keys`, as fresh as the stream
    /// leader's state when the call began: one round trip per 256 keys (a multi-subject
    /// direct get, NATS 2.11+), plus, on a replicated stream, one to the leader that proves
    /// the replica which answered was not behind (ADR 0047). Key by key before 2.11.
    /// Keys never written are absent from the map.
    pub async fn latest_many(&self, keys: &[Key]) -> Result<HashMap<Key, Stored>, StoreError> {
        if !self.multi_get() {
            return self.latest_each(keys).await;
        }
        if !self.replicated {
            return Ok(self.latest_batched(keys, None).await?.found);
        }
        for _ in 0..FRESH_ATTEMPTS {
            let anchor = self.anchor();
            let read = self.latest_batched(keys, anchor.as_deref()).await?;
            let leader_last = self.leader_last_sequence().await?;
            match judge(read.as_of, leader_last) {
                Freshness::AsFreshAsTheLeader => return Ok(read.found),
                Freshness::NeedsAnAnchor => self.learn_anchor(leader_last.unwrap_or(0)).await?,
                Freshness::Unproven => {
                    tracing::debug!(stream = %self.names.stream(), as_of = ?read.as_of, ?leader_last, "a replica answered behind the leader; reading again");
                }
            }
        }
        self.latest_each(keys).await
    }

    /// The latest event of each key, one read at a time (from the leader when replicated).
    async fn latest_each(&self, keys: &[Key]) -> Result<HashMap<Key, Stored>, StoreError> {
        let mut found = HashMap::with_capacity(keys.len());
        for key in keys {
            if let Some(stored) = self.latest(key).await? {
                found.insert(key.clone(), stored);
            }
        }
        Ok(found)
    }

    /// One batched read of `keys`; the chunks are read concurrently, so a batch waits for one
    /// round trip, not one per chunk. `anchor`, a subject known to be in the stream, is asked
    /// for in every chunk, so every answer names the sequence it is as of even when none of
    /// the keys exists yet.
    async fn latest_batched(
        &self,
        keys: &[Key],
        anchor: Option<&str>,
    ) -> Result<LatestRead, StoreError> {
        let reads = keys.chunks(MULTI_GET_CHUNK).map(|chunk| async move {
            let subjects: HashMap<String, &Key> =
                chunk.iter().map(|k| (self.names.subject(k), k)).collect();
            let mut asked: Vec<&str> = subjects.keys().map(String::as_str).collect();
            if let Some(anchor) = anchor.filter(|a| !subjects.contains_key(*a)) {
                asked.push(anchor);
            }
            let request = serde_json::json!({ "multi_last": asked });
            let failed = |source| StoreError::LatestMany {
                stream: self.names.stream(),
                keys: chunk.len(),
                source,
            };
            let batch = self.direct_batch(&request, Detail::Head, failed).await?;
            Ok::<_, StoreError>((subjects, batch))
        });
        let mut read = LatestRead {
            found: HashMap::with_capacity(keys.len()),
            as_of: None,
        };
        for (subjects, batch) in futures::future::try_join_all(reads).await? {
            if batch.found.is_empty() {
                continue;
            }
            // The read is as fresh as its stalest chunk.
            read.as_of = Some(read.as_of.map_or(batch.as_of, |seen| seen.min(batch.as_of)));
            for (subject, stored) in batch.found {
                if let Some(key) = subjects.get(&subject) {
                    read.found.insert((*key).clone(), stored);
                }
            }
        }
        Ok(read)
    }

    /// A subject known to be in the stream, if this process has seen one.
    fn anchor(&self) -> Option<String> {
        self.anchor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(super) fn remember_anchor(&self, subject: &str) {
        let mut anchor = self.anchor.lock().unwrap_or_else(|e| e.into_inner());
        if anchor.is_none() {
            *anchor = Some(subject.to_owned());
        }
    }

    /// Learns a subject of the stream from the leader: the one of the message at `sequence`.
    async fn learn_anchor(&self, sequence: u64) -> Result<(), StoreError> {
        let message = self
            .stream
            .get_raw_message(sequence)
            .await
            .map_err(|source| StoreError::Anchor {
                stream: self.names.stream(),
                sequence,
                source,
            })?;
        self.remember_anchor(message.subject.as_str());
        Ok(())
    }

    /// The stream's last sequence as its leader reports it, or `None` while the stream has no
    /// leader (a member then answers for itself, and may be behind).
    async fn leader_last_sequence(&self) -> Result<Option<u64>, StoreError> {
        let info = self.info().await?;
        let led = info
            .cluster
            .as_ref()
            .is_some_and(|cluster| cluster.leader.as_deref().is_some_and(|l| !l.is_empty()));
        Ok(led.then_some(info.state.last_sequence))
    }
}

/// Whether a batched read of a replicated stream may be decided on (ADR 0047).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Freshness {
    /// The replica that answered held at least everything the leader had.
    AsFreshAsTheLeader,
    /// Nothing matched, not even the anchor, in a stream that is not empty: this process
    /// knows no subject of it yet.
    NeedsAnAnchor,
    /// The replica was behind, or the stream had no leader to compare with: read again.
    Unproven,
}

/// Judges a read as of stream sequence `as_of` (`None`: nothing matched) against the leader's
/// last sequence read after it (`None`: the stream had no leader).
fn judge(as_of: Option<u64>, leader_last: Option<u64>) -> Freshness {
    match (as_of, leader_last) {
        (_, None) => Freshness::Unproven,
        (Some(as_of), Some(last)) if as_of >= last => Freshness::AsFreshAsTheLeader,
        (Some(_), Some(_)) => Freshness::Unproven,
        (None, Some(0)) => Freshness::AsFreshAsTheLeader,
        (None, Some(_)) => Freshness::NeedsAnAnchor,
    }
}

/// The latest events of many keys, and the stream sequence the stalest answer was as of
/// (`None` when no key was found).
struct LatestRead {
    found: HashMap<Key, Stored>,
    as_of: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batched_read_is_decided_on_only_when_proven_as_fresh_as_the_leader() {
        use Freshness::*;
        assert_eq!(judge(Some(120), Some(120)), AsFreshAsTheLeader, "caught up");
        assert_eq!(
            judge(Some(125), Some(120)),
            AsFreshAsTheLeader,
            "ahead of the first look"
        );
        assert_eq!(judge(Some(119), Some(120)), Unproven, "one append behind");
        assert_eq!(
            judge(Some(120), None),
            Unproven,
            "no leader to compare with"
        );
        assert_eq!(judge(None, Some(0)), AsFreshAsTheLeader, "an empty stream");
        assert_eq!(judge(None, Some(7)), NeedsAnAnchor, "no subject known yet");
        assert_eq!(judge(None, None), Unproven);
    }
}
