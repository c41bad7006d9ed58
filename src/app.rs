//! Wiring: config in, listeners up, signals handled. The only place, with `main.rs`, that knows
//! every layer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;
use crate::inspect::{InspectorFactory, NoInspection};
use crate::net::listener::{Tracker, accept_loop};
use crate::protocol::pg::PgError;
use crate::session::pg::{self, PgContext};

/// A running Airlock: its bound addresses and the handle that stops it.
pub struct Running {
    pub postgres_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    tracker: Tracker,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops accepting, waits up to `grace` for sessions to end, and returns how many were left.
    pub async fn shutdown(self, grace: Duration) -> usize {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
        self.tracker.drain(grace).await
    }

    pub fn active_sessions(&self) -> usize {
        self.tracker.active()
    }
}

/// Binds the listeners and starts serving, with no inspection plugged in.
pub async fn start(config: &Config) -> anyhow::Result<Running> {
    start_with(config, Arc::new(NoInspection)).await
}

/// Binds the listeners and starts serving with `inspectors` on every session.
pub async fn start_with(
    config: &Config,
    inspectors: Arc<dyn InspectorFactory>,
) -> anyhow::Result<Running> {
    let ctx = Arc::new(PgContext::new(config, inspectors)?);
    let listen = ctx.config.listen;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (postgres.listen)"))?;
    let postgres_addr = listener.local_addr()?;
    let (shutdown, shutdown_rx) = watch::channel(false);
    let tracker = Tracker::default();
    let max = ctx.config.max_connections;
    let task = tokio::spawn(accept_loop(
        listener,
        max,
        tracker.clone(),
        shutdown_rx,
        move |tcp, addr, over| {
            let ctx = ctx.clone();
            async move {
                if over {
                    refuse(tcp, PgError::too_many_connections(max)).await;
                } else {
                    pg::serve(ctx, tcp, addr).await;
                }
            }
        },
    ));
    tracing::info!(%postgres_addr, "PostgreSQL listener ready");
    Ok(Running {
        postgres_addr,
        shutdown,
        tracker,
        task,
    })
}

async fn refuse(mut tcp: tokio::net::TcpStream, e: PgError) {
    // The client may be waiting for an answer to SSLRequest; an error message is what
    // PostgreSQL sends there too when it cannot take a connection.
    let mut out = BytesMut::new();
    e.encode(&mut out);
    let _ = tcp.write_all(&out).await;
    let _ = tcp.shutdown().await;
}

/// `airlock serve`: runs until SIGINT or SIGTERM, then drains.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let grace = Duration::from_secs(config.server.shutdown_grace_secs);
    let running = start(&config).await?;
    wait_for_signal().await?;
    tracing::info!(
        active = running.active_sessions(),
        grace_secs = grace.as_secs(),
        "shutting down"
    );
    let left = running.shutdown(grace).await;
    if left > 0 {
        tracing::warn!(
            sessions = left,
            "grace period over; closing remaining sessions"
        );
    }
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}
