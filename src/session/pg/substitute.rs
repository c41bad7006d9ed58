//! Denied messages and the database's answer to them.
//!
//! A denied statement is not simply dropped: in its place Airlock sends the database an Execute
//! of a portal that cannot exist (and a Sync when the denied message was itself a sync point,
//! a Query or a FunctionCall). The database answers with an error (34000) exactly where the
//! statement's answer would have been, skips to the next Sync as after any failed statement,
//! and puts an open transaction into the failed state. So what the client sees, in order and
//! in transaction status, is what PostgreSQL shows after a failed statement, and the status
//! Airlock relays is always the database's own. The backend pump swaps that error for
//! Airlock's.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use bytes::{BufMut, Bytes, BytesMut};

use crate::protocol::pg::PgError;
use crate::protocol::pg::backend;
use crate::protocol::pg::frame::put_message;
use crate::protocol::pg::frontend::tag as fe;

/// SQLSTATE of "portal does not exist".
const UNDEFINED_CURSOR: &[u8] = b"34000";

/// The substitutes in flight for one session.
pub struct Substitutions {
    /// Random per session, so no client portal name can collide with a substitute's.
    nonce: u64,
    next: AtomicU64,
    pending: Mutex<VecDeque<Pending>>,
    /// How many are pending, read without the lock: the backend pump asks at every message.
    count: AtomicUsize,
}

struct Pending {
    portal: String,
    /// Airlock's ErrorResponse, encoded.
    error: Bytes,
    /// The sync point whose ReadyForQuery ends any chance of the answer arriving (the
    /// database skipped the substitute after an earlier error).
    sync_point: u64,
}

impl Default for Substitutions {
    fn default() -> Self {
        Substitutions {
            nonce: rand::random(),
            next: AtomicU64::new(0),
            pending: Mutex::new(VecDeque::new()),
            count: AtomicUsize::new(0),
        }
    }
}

impl Substitutions {
    /// The bytes to send the database instead of the denied message with `tag`; `sync_point`
    /// is the number of the sync point that ends the denied message's pipeline segment.
    pub fn substitute(&self, tag: u8, error: &PgError, sync_point: u64) -> BytesMut {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let portal = format!("airlock_denied_{:016x}_{n}", self.nonce);
        let mut encoded = BytesMut::new();
        error.encode(&mut encoded);
        let mut pending = self.lock();
        pending.push_back(Pending {
            portal: portal.clone(),
            error: encoded.freeze(),
            sync_point,
        });
        self.count.store(pending.len(), Ordering::Release);
        drop(pending);
        let mut execute = BytesMut::with_capacity(portal.len() + 5);
        execute.put_slice(portal.as_bytes());
        execute.put_u8(0);
        execute.put_i32(0);
        let mut out = BytesMut::new();
        put_message(&mut out, fe::EXECUTE, &execute);
        if matches!(tag, fe::QUERY | fe::FUNCTION_CALL) {
            put_message(&mut out, fe::SYNC, &[]);
        }
        out
    }

    /// Whether any substitute still awaits its answer.
    pub fn is_empty(&self) -> bool {
        self.count.load(Ordering::Acquire) == 0
    }

    /// If the ErrorResponse with `body` answers a substitute, Airlock's error to send instead.
    pub fn replacement(&self, body: &[u8]) -> Option<Bytes> {
        if backend::sqlstate(body) != Some(UNDEFINED_CURSOR) {
            return None;
        }
        let message = backend::message(body);
        let mut pending = self.lock();
        let i = pending.iter().position(|p| message.contains(&p.portal))?;
        let error = pending.remove(i).map(|p| p.error);
        self.count.store(pending.len(), Ordering::Release);
        error
    }

    /// `answered` sync points have had their ReadyForQuery: substitutes of those segments
    /// that were never answered (skipped after an earlier error) are forgotten.
    pub fn settle(&self, answered: u64) {
        if self.is_empty() {
            return;
        }
        let mut pending = self.lock();
        pending.retain(|p| p.sync_point > answered);
        self.count.store(pending.len(), Ordering::Release);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Pending>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::Denial;

    fn error_body(code: &str, message: &str) -> Vec<u8> {
        format!("SERROR\0C{code}\0M{message}\0\0").into_bytes()
    }

    #[test]
    fn the_answer_to_a_substitute_is_replaced_once() {
        let subs = Substitutions::default();
        let denial = Denial {
            message: "no".into(),
            detail: None,
            hint: None,
        };
        let bytes = subs.substitute(fe::QUERY, &PgError::denied(&denial), 1);
        assert_eq!(bytes[0], fe::EXECUTE);
        assert_eq!(
            &bytes[bytes.len() - 5..],
            b"S\0\0\0\x04",
            "a Query gets a Sync"
        );
        let portal = {
            let body = &bytes[5..];
            let end = body.iter().position(|&b| b == 0).unwrap();
            String::from_utf8(body[..end].to_vec()).unwrap()
        };
        assert!(portal.len() < 63, "fits PostgreSQL's name length");
        let upstream = error_body("34000", &format!("portal \"{portal}\" does not exist"));
        assert!(
            subs.replacement(&error_body("34000", "portal \"x\" does not exist"))
                .is_none()
        );
        assert!(subs.replacement(&error_body("25P02", &portal)).is_none());
        let ours = subs.replacement(&upstream).expect("replaced");
        assert!(ours.windows(6).any(|w| w == b"C42501"));
        assert!(subs.replacement(&upstream).is_none(), "only once");
        assert!(subs.is_empty());
    }

    #[test]
    fn unanswered_substitutes_are_forgotten_at_their_sync_point() {
        let subs = Substitutions::default();
        let e = PgError::upstream_lost();
        let bytes = subs.substitute(fe::EXECUTE, &e, 3);
        assert_eq!(bytes[0], fe::EXECUTE);
        let len = i32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
        assert_eq!(len + 1, bytes.len(), "an Execute gets no Sync of its own");
        subs.settle(2);
        assert!(!subs.is_empty());
        subs.settle(3);
        assert!(subs.is_empty());
    }
}
