//! Cancel keys. Each client gets Airlock's own BackendKeyData; a CancelRequest carrying it is
//! mapped to the upstream session's key, and also withdraws a statement the session holds
//! for approval. Unknown or wrong keys do nothing, as in PostgreSQL.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use subtle::ConstantTimeEq;

/// The key the database gave Airlock for one upstream session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamKey {
    pub pid: i32,
    pub secret: Vec<u8>,
}

struct Entry {
    secret: [u8; 4],
    upstream: UpstreamKey,
    cancel: Arc<tokio::sync::Notify>,
}

/// Live sessions' keys, shared by a listener's sessions.
#[derive(Default, Clone)]
pub struct CancelRegistry {
    inner: Arc<Mutex<HashMap<i32, Entry>>>,
}

/// Removes its key from the registry when the session ends.
pub struct Registration {
    registry: CancelRegistry,
    pub pid: i32,
    pub secret: i32,
    /// Woken by a CancelRequest with this session's key (only while something waits on it).
    pub cancel: Arc<tokio::sync::Notify>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.pid);
    }
}

impl CancelRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i32, Entry>> {
        // A panic while holding this lock cannot leave the map inconsistent (single inserts and
        // removes), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands out a fresh (pid, secret) for a session whose upstream key is `upstream`.
    pub fn register(&self, upstream: UpstreamKey) -> Registration {
        let mut map = self.lock();
        let pid = loop {
            let candidate = rand::random::<i32>() & 0x3fff_ffff;
            if candidate != 0 && !map.contains_key(&candidate) {
                break candidate;
            }
        };
        let secret: i32 = rand::random();
        let cancel = Arc::new(tokio::sync::Notify::new());
        map.insert(
            pid,
            Entry {
                secret: secret.to_be_bytes(),
                upstream,
                cancel: cancel.clone(),
            },
        );
        Registration {
            registry: self.clone(),
            pid,
            secret,
            cancel,
        }
    }

    /// The upstream key for a CancelRequest, if its pid and secret match a live session;
    /// a statement that session holds for approval is withdrawn.
    pub fn cancel(&self, pid: i32, secret: &[u8]) -> Option<UpstreamKey> {
        let map = self.lock();
        let entry = map.get(&pid)?;
        let ok: bool = secret.len() == 4 && bool::from(entry.secret.ct_eq(secret));
        if ok {
            // No permit is stored: a cancel with nothing held must not withdraw a later hold.
            entry.cancel.notify_waiters();
        }
        ok.then(|| entry.upstream.clone())
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(pid: i32) -> UpstreamKey {
        UpstreamKey {
            pid,
            secret: vec![9, 9, 9, 9],
        }
    }

    #[test]
    fn maps_only_the_exact_key() {
        let reg = CancelRegistry::default();
        let a = reg.register(key(100));
        let b = reg.register(key(200));
        assert_ne!(a.pid, b.pid);
        assert_eq!(reg.cancel(a.pid, &a.secret.to_be_bytes()), Some(key(100)));
        assert_eq!(reg.cancel(b.pid, &b.secret.to_be_bytes()), Some(key(200)));
        assert_eq!(reg.cancel(a.pid, &b.secret.to_be_bytes()), None);
        assert_eq!(reg.cancel(a.pid, &[1, 2]), None);
        assert_eq!(reg.cancel(12345, &a.secret.to_be_bytes()), None);
    }

    #[test]
    fn ended_sessions_are_forgotten() {
        let reg = CancelRegistry::default();
        let a = reg.register(key(1));
        let (pid, secret) = (a.pid, a.secret);
        drop(a);
        assert_eq!(reg.cancel(pid, &secret.to_be_bytes()), None);
        assert!(reg.is_empty());
    }
}
