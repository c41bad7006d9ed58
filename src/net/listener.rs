//! The accept loop: one task per connection, a count of live connections for the connection
//! limit and for draining at shutdown, and a shutdown signal that stops accepting.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};

/// Counts live connections.
#[derive(Default, Clone)]
pub struct Tracker {
    inner: Arc<(AtomicUsize, Notify)>,
}

/// Held by a connection's task; the count drops when it does.
pub struct Guard(Tracker);

impl Drop for Guard {
    fn drop(&mut self) {
        if self.0.inner.0.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.inner.1.notify_waiters();
        }
    }
}

impl Tracker {
    pub fn active(&self) -> usize {
        self.inner.0.load(Ordering::Acquire)
    }

    fn enter(&self) -> Guard {
        self.inner.0.fetch_add(1, Ordering::AcqRel);
        Guard(self.clone())
    }

    /// Waits until no connection is live or `grace` has passed; returns how many are left.
    pub async fn drain(&self, grace: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let notified = self.inner.1.notified();
            if self.active() == 0 {
                return 0;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.active();
            }
        }
    }
}

/// Accepts until `shutdown` turns true. `handle` gets each connection and whether it is over
/// `max_connections` (it should then refuse it politely).
pub async fn accept_loop<H, F>(
    listener: TcpListener,
    max_connections: usize,
    tracker: Tracker,
    mut shutdown: watch::Receiver<bool>,
    handle: H,
) where
    H: Fn(TcpStream, SocketAddr, bool) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok((tcp, addr)) => {
                    let _ = tcp.set_nodelay(true);
                    let over = tracker.active() >= max_connections;
                    let guard = tracker.enter();
                    let task = handle(tcp, addr, over);
                    tokio::spawn(async move {
                        task.await;
                        drop(guard);
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}
