//! Reuse of idle database sessions (`postgres.reuse_server_sessions`), as PgBouncer's session
//! mode does: when a client ends with Terminate while its database session is idle, the
//! session is reset with `DISCARD ALL` and kept for the next client of the same Airlock user
//! whose start-up parameters are exactly the same. That client skips the database login and gets the ParameterStatus
//! values the session started with (which DISCARD ALL restores). Idle sessions are closed after
//! `server_idle_timeout_secs`, and one that the database closed meanwhile is never handed out.

use std::collections::HashMap;
use std::sync::Mutex;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use crate::net::stream::Stream;
use crate::protocol::pg::backend::tag;
use crate::session::cancel::UpstreamKey;
use crate::session::pg::io::Reader;

/// An idle, reset database session.
pub struct Idle {
    pub stream: Stream,
    pub key: UpstreamKey,
    /// The ParameterStatus messages the database sent when the session started.
    pub greeting: BytesMut,
    since: Instant,
}

/// Who a database session may be handed to: the Airlock user it served (state that survives
/// DISCARD ALL, such as a PL/Python GD or a dblink connection, never crosses users) and the
/// exact start-up parameters it was opened with.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub user: String,
    pub params: Vec<(String, String)>,
}

type IdleMap = HashMap<PoolKey, Vec<Idle>>;

/// Idle sessions by the exact start-up parameters they were opened with.
pub struct ServerPool {
    enabled: bool,
    max_idle: usize,
    idle_timeout: Duration,
    idle: Mutex<IdleMap>,
}

const RESET_TIMEOUT: Duration = Duration::from_secs(5);
const RESET_MAX_MESSAGE: usize = 1024 * 1024;

impl ServerPool {
    pub fn new(enabled: bool, max_idle: usize, idle_timeout: Duration) -> ServerPool {
        ServerPool {
            enabled,
            max_idle,
            idle_timeout,
            idle: Mutex::new(HashMap::new()),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, IdleMap> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The most recently used live session for `key`, if any.
    pub fn checkout(&self, key: &PoolKey) -> Option<Idle> {
        if !self.enabled {
            return None;
        }
        let mut map = self.lock();
        let list = map.get_mut(key)?;
        while let Some(idle) = list.pop() {
            if idle.since.elapsed() < self.idle_timeout && still_open(&idle.stream) {
                return Some(idle);
            }
        }
        None
    }

    /// Resets `stream` and keeps it, unless the reset fails or the pool is full.
    pub async fn checkin(
        &self,
        pool_key: PoolKey,
        stream: Stream,
        key: UpstreamKey,
        greeting: BytesMut,
    ) {
        let Some(stream) = reset(stream).await else {
            return;
        };
        let mut map = self.lock();
        let total: usize = map.values().map(Vec::len).sum();
        if total >= self.max_idle {
            return;
        }
        map.entry(pool_key).or_default().push(Idle {
            stream,
            key,
            greeting,
            since: Instant::now(),
        });
    }

    /// Closes sessions idle for longer than the timeout.
    pub fn reap(&self) {
        let timeout = self.idle_timeout;
        let mut map = self.lock();
        for list in map.values_mut() {
            list.retain(|idle| idle.since.elapsed() < timeout);
        }
        map.retain(|_, list| !list.is_empty());
    }
}

/// Whether the database has neither closed the connection nor sent anything unasked.
fn still_open(stream: &Stream) -> bool {
    let mut byte = [0u8; 1];
    let mut buf = tokio::io::ReadBuf::new(&mut byte);
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    matches!(stream.tcp().poll_peek(&mut cx, &mut buf), Poll::Pending)
}

/// `DISCARD ALL` and read to ReadyForQuery 'I'; anything unexpected means the session is not
/// reused.
async fn reset(mut stream: Stream) -> Option<Stream> {
    let mut query = BytesMut::new();
    crate::protocol::pg::frame::put_message(&mut query, b'Q', b"DISCARD ALL\0");
    let result = tokio::time::timeout(RESET_TIMEOUT, async {
        stream.write_all(&query).await.ok()?;
        stream.flush().await.ok()?;
        let mut discarded = false;
        let mut reader = Reader::default();
        loop {
            let m = reader.message(&mut stream, RESET_MAX_MESSAGE).await.ok()?;
            match m.tag {
                tag::COMMAND_COMPLETE if m.body() == b"DISCARD ALL\0" => discarded = true,
                // Values DISCARD ALL restores, and messages for a client that has left.
                tag::PARAMETER_STATUS | tag::NOTICE_RESPONSE | tag::NOTIFICATION_RESPONSE => {}
                // Nothing may follow: the next client must start on a quiet session.
                tag::READY_FOR_QUERY if discarded && m.body().first() == Some(&b'I') => {
                    return reader.into_leftover().is_empty().then_some(());
                }
                _ => return None,
            }
        }
    })
    .await;
    match result {
        Ok(Some(())) => Some(stream),
        _ => None,
    }
}
