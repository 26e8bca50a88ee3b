//! One writer per key inside a receiver process (ADR 81). The expected-sequence append keeps
//! writers on one key from losing an update wherever they run; inside one process they wait
//! for each other instead, so that requests racing on the same keys (an open-loop load beyond
//! capacity, or a client's retries) queue rather than spend the CPU on conflicts and retries.
//!
//! A writer enters before it reads the key (a batch reads all its keys at once) and holds the
//! key's lock to decide and append. Whether another writer of the *same* key finished in
//! between, which makes the read stale, is known exactly: two keys sharing a lock stripe
//! wait for each other but never make each other read again.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex as SyncMutex};

use tokio::sync::{Mutex, MutexGuard};

use crate::store::Key;

/// Stripes of locks keys are hashed onto: two keys may share one (and then take turns),
/// a key never has two.
#[derive(Debug)]
pub struct KeyLocks {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    stripes: Box<[Mutex<()>]>,
    /// The keys with a writer entered, by hash: how many, and how many writers of the key
    /// have finished since the first of them entered.
    writers: SyncMutex<HashMap<u64, Writers>>,
    hasher: std::hash::RandomState,
}

#[derive(Debug, Default)]
struct Writers {
    entered: usize,
    finished: u64,
}

/// A writer of one key, entered before it reads the key; leaves when dropped.
#[derive(Debug)]
pub struct Entered {
    locks: Arc<Inner>,
    hash: u64,
    /// Writers of the key that had finished when this one entered.
    finished: u64,
}

/// A held key, and whether what its writer read when it entered is stale: another writer of
/// the same key appended (or may have) since.
#[derive(Debug)]
pub struct Held<'a> {
    _guard: MutexGuard<'a, ()>,
    entered: &'a Entered,
    pub stale: bool,
}

impl KeyLocks {
    pub fn new(stripes: usize) -> Self {
        KeyLocks {
            inner: Arc::new(Inner {
                stripes: (0..stripes.max(1)).map(|_| Mutex::new(())).collect(),
                writers: SyncMutex::default(),
                hasher: std::hash::RandomState::new(),
            }),
        }
    }

    /// Enters a writer of `key`: call before reading the key's state.
    pub fn enter(&self, key: &Key) -> Entered {
        let inner = &self.inner;
        let hash = inner.hasher.hash_one(key);
        let mut writers = inner.writers.lock().unwrap_or_else(|e| e.into_inner());
        let entry = writers.entry(hash).or_default();
        entry.entered += 1;
        Entered {
            locks: inner.clone(),
            hash,
            finished: entry.finished,
        }
    }
}

impl Inner {
    fn finished_writers(&self, hash: u64) -> u64 {
        let writers = self.writers.lock().unwrap_or_else(|e| e.into_inner());
        writers.get(&hash).map_or(0, |w| w.finished)
    }
}

impl Entered {
    /// Holds the key until the answer is dropped.
    pub async fn hold(&self) -> Held<'_> {
        let stripe = &self.locks.stripes[(self.hash % self.locks.stripes.len() as u64) as usize];
        let guard = match stripe.try_lock() {
            Ok(guard) => guard,
            Err(_) => stripe.lock().await,
        };
        Held {
            _guard: guard,
            entered: self,
            // Equal hashes of two keys only cost a read more.
            stale: self.locks.finished_writers(self.hash) != self.finished,
        }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        // Before the lock is released: the next writer of the key must see it.
        let locks = &self.entered.locks;
        let mut writers = locks.writers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = writers.get_mut(&self.entered.hash) {
            entry.finished += 1;
        }
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        let mut writers = self.locks.writers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = writers.get_mut(&self.hash) {
            entry.entered -= 1;
            if entry.entered == 0 {
                writers.remove(&self.hash);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_writer_of_a_key_waits_and_then_knows_its_read_is_stale() {
        let locks = std::sync::Arc::new(KeyLocks::new(64));
        let key = Key::new("c1").unwrap();
        let first = locks.enter(&key);
        let held = first.hold().await;
        assert!(!held.stale);
        let (locks2, key2) = (locks.clone(), key.clone());
        let second = tokio::spawn(async move {
            let entered = locks2.enter(&key2);
            entered.hold().await.stale
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!second.is_finished(), "the second writer waits");
        drop(held);
        assert!(second.await.unwrap(), "and reads again");
        drop(first);
        let entered = locks.enter(&key);
        assert!(
            !entered.hold().await.stale,
            "a writer after the others reads fresh"
        );
    }

    #[tokio::test]
    async fn keys_sharing_a_stripe_wait_for_each_other_but_stay_fresh() {
        let locks = std::sync::Arc::new(KeyLocks::new(1));
        let (a, b) = (Key::new("a").unwrap(), Key::new("b").unwrap());
        let first = locks.enter(&a);
        let held = first.hold().await;
        let locks2 = locks.clone();
        let second = tokio::spawn(async move {
            let entered = locks2.enter(&b);
            entered.hold().await.stale
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!second.is_finished(), "one stripe: the other key waits");
        drop(held);
        assert!(
            !second.await.unwrap(),
            "but what it read is still its key's latest"
        );
    }

    #[tokio::test]
    async fn a_writer_entered_before_another_finished_reads_again_even_without_waiting() {
        let locks = KeyLocks::new(64);
        let key = Key::new("c1").unwrap();
        let late = locks.enter(&key); // entered (and read) before the other's append
        {
            let other = locks.enter(&key);
            let _held = other.hold().await;
        }
        assert!(late.hold().await.stale);
    }
}
