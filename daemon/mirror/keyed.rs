//! One async lock per key, for work that must not run twice at once for the same thing (an
//! upload of a blob to a repository, a fetch of a manifest), while other keys go on.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use tokio::sync::OwnedMutexGuard;

/// Keys whose locks nobody holds are dropped once this many are kept.
const KEEP: usize = 1024;

pub struct KeyedLocks<K> {
    map: Mutex<HashMap<K, Arc<tokio::sync::Mutex<()>>>>,
}

impl<K> Default for KeyedLocks<K> {
    fn default() -> Self {
        KeyedLocks {
            map: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash> KeyedLocks<K> {
    /// Waits for `key`'s lock.
    pub async fn lock(&self, key: K) -> OwnedMutexGuard<()> {
        let lock = {
            let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
            if map.len() >= KEEP {
                map.retain(|_, l| Arc::strong_count(l) > 1);
            }
            map.entry(key).or_default().clone()
        };
        lock.lock_owned().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_holder_per_key_and_keys_apart() {
        let locks = Arc::new(KeyedLocks::<u32>::default());
        let held = locks.lock(1).await;
        // Another key is free.
        let _other = locks.lock(2).await;
        let waiter = {
            let locks = locks.clone();
            tokio::spawn(async move { locks.lock(1).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "a second holder of key 1");
        drop(held);
        waiter.await.unwrap();
    }
}
