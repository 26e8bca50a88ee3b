//! One writer per key inside a receiver process (ADR 81). The expected-sequence append keeps
//! writers on one key from losing an update wherever they run; inside one process they wait
//! for each other instead, so that requests racing on the same keys (an open-loop load beyond
//! capacity, or a client's retries) queue rather than spend the CPU on conflicts and retries.

use std::hash::{Hash, Hasher};

use tokio::sync::{Mutex, MutexGuard};

use crate::store::Key;

/// Stripes of locks keys are hashed onto: two keys may share one (and then take turns),
/// a key never has two.
#[derive(Debug)]
pub struct KeyLocks {
    stripes: Box<[Mutex<()>]>,
}

/// A held key, and whether it had to wait for another writer (whose append then makes any
/// state read before stale).
#[derive(Debug)]
pub struct Held<'a> {
    _guard: MutexGuard<'a, ()>,
    pub waited: bool,
}

impl KeyLocks {
    pub fn new(stripes: usize) -> Self {
        KeyLocks {
            stripes: (0..stripes.max(1)).map(|_| Mutex::new(())).collect(),
        }
    }

    /// Holds `key` until the answer is dropped.
    pub async fn hold(&self, key: &Key) -> Held<'_> {
        let stripe = &self.stripes[self.stripe_of(key)];
        match stripe.try_lock() {
            Ok(guard) => Held {
                _guard: guard,
                waited: false,
            },
            Err(_) => Held {
                _guard: stripe.lock().await,
                waited: true,
            },
        }
    }

    fn stripe_of(&self, key: &Key) -> usize {
        // In-process only, so any hash that is the same for the same key will do.
        let mut hasher = std::hash::DefaultHasher::new();
        key.hash(&mut hasher);
        (hasher.finish() % self.stripes.len() as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_second_writer_of_a_key_waits_and_knows_it_waited() {
        let locks = std::sync::Arc::new(KeyLocks::new(64));
        let key = Key::new("c1").unwrap();
        let first = locks.hold(&key).await;
        assert!(!first.waited);
        let (locks2, key2) = (locks.clone(), key.clone());
        let second = tokio::spawn(async move { locks2.hold(&key2).await.waited });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!second.is_finished(), "the second writer waits");
        drop(first);
        assert!(second.await.unwrap(), "and says it waited");
        assert!(!locks.hold(&key).await.waited, "a free key is held at once");
    }
}
