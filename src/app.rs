//! Wiring: config in, listeners up, signals handled. The only place, with `main.rs`, that knows
//! every layer.
//!
//! `airlock serve` runs `server.workers` threads (one by default, like PgBouncer), each with its
//! own single-threaded tokio runtime and its own listening socket on the same address
//! (SO_REUSEPORT, so the kernel spreads new connections). A session lives on one thread from
//! accept to close: no work stealing and no cross-thread wake-ups on the relay path. One busy
//! thread batches many sessions' events per wake-up, which is what keeps per-transaction CPU at
//! PgBouncer's level; more workers add throughput where there are spare cores. Embedders and tests can instead run a listener on their own runtime
//! with [`start_with`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::admin::{self, Admin};
use crate::approval::Approvals;
use crate::approval::notify::Notifier;
use crate::approval::store::SqliteStore;
use crate::config::Config;
use crate::guard::Guard;
use crate::guard::mysql::MyGuards;
use crate::guard::pg::PgGuards;
use crate::inspect::{InspectorFactory, MysqlInspectorFactory, NoInspection};
use crate::mask::Masking;
use crate::net::listener::{Tracker, accept_loop};
use crate::policy::Policy;
use crate::protocol::mysql::MyError;
use crate::protocol::pg::PgError;
use crate::session::mysql::{self, MyContext};
use crate::session::pg::pool::ServerPool;
use crate::session::pg::{self, PgContext};
use crate::sql::Dialect;

/// Listeners running on the caller's runtime: their bound addresses and the handle that stops
/// them.
pub struct Running {
    pub postgres_addr: Option<SocketAddr>,
    pub mysql_addr: Option<SocketAddr>,
    pub admin_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    closing: watch::Sender<bool>,
    tracker: Tracker,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Stops accepting, waits up to `grace` for sessions to end, and returns how many were left.
    /// Sessions still open then are told (57P01) and closed.
    pub async fn shutdown(self, grace: Duration) -> usize {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        let left = self.tracker.drain(grace).await;
        if left > 0 {
            let _ = self.closing.send(true);
            self.tracker.drain(GOODBYE).await;
        }
        left
    }

    pub fn active_sessions(&self) -> usize {
        self.tracker.active()
    }
}

/// What each listener's sessions are shown to.
#[derive(Clone)]
pub struct Inspectors {
    pub postgres: Arc<dyn InspectorFactory>,
    pub mysql: Arc<dyn MysqlInspectorFactory>,
    /// The audit trail the guards write to, for the approvals to write to as well.
    pub audit: Option<Arc<crate::audit::AuditLog>>,
}

impl Inspectors {
    /// Nothing plugged in on either listener.
    pub fn none() -> Inspectors {
        Inspectors {
            postgres: Arc::new(NoInspection),
            mysql: Arc::new(NoInspection),
            audit: None,
        }
    }
}

/// Binds the configured listeners and serves them on the current runtime, guarded by the
/// config's policy as `airlock serve` is.
pub async fn start(config: &Config) -> anyhow::Result<Running> {
    start_with(config, guards(config)?).await
}

/// Binds the configured listeners and serves them on the current runtime with `inspectors`.
pub async fn start_with(config: &Config, inspectors: Inspectors) -> anyhow::Result<Running> {
    let (shutdown, shutdown_rx) = watch::channel(false);
    let (closing, closing_rx) = watch::channel(false);
    let tracker = Tracker::default();
    let signals = Signals {
        shutdown: shutdown_rx,
        closing: closing_rx,
    };
    let mut tasks = Vec::new();
    let approvals = open_approvals(config, inspectors.audit.clone())?;
    let mut admin_addr = None;
    if let (Some(admin), Some(approvals)) = (&config.admin, &approvals) {
        let (listener, addr) = listen_once(admin.listen, "admin.listen")?;
        let api = Arc::new(admin_api(config, approvals));
        tasks.push(tokio::spawn(admin::serve(
            listener,
            api,
            signals.shutdown.clone(),
        )));
        tracing::info!(admin_addr = %addr, "admin API ready");
        admin_addr = Some(addr);
    }
    let contexts = contexts(config, &inspectors, approvals)?;
    let mut postgres_addr = None;
    if let Some(ctx) = contexts.postgres {
        let (listener, addr) = listen_once(ctx.config.listen, "postgres.listen")?;
        tasks.push(tokio::spawn(serve_listener(
            ctx,
            listener,
            tracker.clone(),
            signals.clone(),
        )));
        tracing::info!(postgres_addr = %addr, "PostgreSQL listener ready");
        postgres_addr = Some(addr);
    }
    let mut mysql_addr = None;
    if let Some(ctx) = contexts.mysql {
        let (listener, addr) = listen_once(ctx.config.listen, "mysql.listen")?;
        tasks.push(tokio::spawn(serve_mysql(
            ctx,
            listener,
            tracker.clone(),
            signals.shutdown.clone(),
        )));
        tracing::info!(mysql_addr = %addr, "MySQL listener ready");
        mysql_addr = Some(addr);
    }
    Ok(Running {
        postgres_addr,
        mysql_addr,
        admin_addr,
        shutdown,
        closing,
        tracker,
        tasks,
    })
}

fn serve_mysql(
    ctx: Arc<MyContext>,
    listener: TcpListener,
    tracker: Tracker,
    shutdown: watch::Receiver<bool>,
) -> impl Future<Output = ()> + Send + 'static {
    let max = ctx.config.max_connections;
    accept_loop(
        listener,
        max,
        tracker,
        shutdown,
        move |mut tcp, addr, over| {
            let ctx = ctx.clone();
            async move {
                if over {
                    let mut out = BytesMut::new();
                    MyError::too_many_connections(max).encode(0, &mut out);
                    let _ = tcp.write_all(&out).await;
                    let _ = tcp.shutdown().await;
                } else {
                    mysql::serve(ctx, tcp, addr).await;
                }
            }
        },
    )
}

/// Shutdown as the sessions see it: `shutdown` stops accepting; `closing` says the grace is over.
#[derive(Clone)]
struct Signals {
    shutdown: watch::Receiver<bool>,
    closing: watch::Receiver<bool>,
}

/// How long sessions get to write their 57P01 once the grace is over.
const GOODBYE: Duration = Duration::from_secs(1);

fn serve_listener(
    ctx: Arc<PgContext>,
    listener: TcpListener,
    tracker: Tracker,
    signals: Signals,
) -> impl Future<Output = ()> + Send + 'static {
    let Signals { shutdown, closing } = signals;
    let max = ctx.config.max_connections;
    let pool = Arc::new(ServerPool::new(
        ctx.config.reuse_server_sessions,
        ctx.config.max_idle_server_sessions,
        Duration::from_secs(ctx.config.server_idle_timeout_secs),
    ));
    if pool.enabled() {
        tokio::spawn(reap_idle(pool.clone(), shutdown.clone()));
    }
    accept_loop(listener, max, tracker, shutdown, move |tcp, addr, over| {
        let (ctx, pool, closing) = (ctx.clone(), pool.clone(), closing.clone());
        async move {
            if over {
                refuse(tcp, PgError::too_many_connections(max)).await;
            } else {
                pg::serve(ctx, pool, closing, tcp, addr).await;
            }
        }
    })
}

/// Closes idle database sessions past their timeout, until shutdown.
async fn reap_idle(pool: Arc<ServerPool>, mut shutdown: watch::Receiver<bool>) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = every.tick() => pool.reap(),
            _ = shutdown.changed() => return,
        }
    }
}

/// One listening socket on the current runtime, and the address it bound.
fn listen_once(addr: SocketAddr, key: &str) -> anyhow::Result<(TcpListener, SocketAddr)> {
    let socket = bind(addr, 1, key)?.remove(0);
    let bound = socket.local_addr()?;
    Ok((TcpListener::from_std(socket)?, bound))
}

/// `count` non-blocking listening sockets on one address with SO_REUSEPORT. With port 0 the
/// first socket picks the port and the others join it.
fn bind(addr: SocketAddr, count: usize, key: &str) -> anyhow::Result<Vec<std::net::TcpListener>> {
    let mut addr = addr;
    let mut sockets = Vec::with_capacity(count);
    for _ in 0..count {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            None,
        )?;
        socket.set_reuse_address(true)?;
        // Only for several workers: with one, a second process on the same port must fail
        // to bind rather than quietly take a share of the connections.
        if count > 1 {
            socket.set_reuse_port(true)?;
        }
        socket.set_nonblocking(true)?;
        socket
            .bind(&addr.into())
            .with_context(|| format!("cannot listen on {addr} ({key})"))?;
        socket.listen(1024)?;
        let listener: std::net::TcpListener = socket.into();
        addr = listener.local_addr()?;
        sockets.push(listener);
    }
    Ok(sockets)
}

async fn refuse(mut tcp: tokio::net::TcpStream, e: PgError) {
    // The client may be waiting for an answer to SSLRequest; an error message is what
    // PostgreSQL sends there too when it cannot take a connection.
    let mut out = BytesMut::new();
    e.encode(&mut out);
    let _ = tcp.write_all(&out).await;
    let _ = tcp.shutdown().await;
}

/// The configured listeners' shared state.
pub struct Contexts {
    pub postgres: Option<Arc<PgContext>>,
    pub mysql: Option<Arc<MyContext>>,
}

/// The configured listeners' shared state, each with its inspectors and the approvals hub
/// (reading their certificates and secrets).
pub fn contexts(
    config: &Config,
    inspectors: &Inspectors,
    approvals: Option<Arc<Approvals>>,
) -> anyhow::Result<Contexts> {
    let pg = match &config.postgres {
        Some(_) => {
            let mut ctx = PgContext::new(config, inspectors.postgres.clone())?;
            ctx.approvals = approvals.clone();
            ctx.audit = inspectors.audit.clone();
            Some(Arc::new(ctx))
        }
        None => None,
    };
    let my = match &config.mysql {
        Some(_) => {
            let mut ctx = MyContext::new(config, inspectors.mysql.clone())?;
            ctx.approvals = approvals;
            ctx.audit = inspectors.audit.clone();
            Some(Arc::new(ctx))
        }
        None => None,
    };
    Ok(Contexts {
        postgres: pg,
        mysql: my,
    })
}

/// The admin API: approvals, and exports of the audit trail for auditors.
fn admin_api(config: &Config, approvals: &Arc<Approvals>) -> Admin {
    let api = Admin::new(approvals.clone(), &config.approvers);
    match &config.state {
        Some(state) if state.audit != crate::config::AuditSetting::Off => {
            api.with_audit(&state.dir, &config.auditors)
        }
        _ => api,
    }
}

/// The approvals hub over the store in `[state]`, if the config has one.
pub fn open_approvals(
    config: &Config,
    audit: Option<Arc<crate::audit::AuditLog>>,
) -> anyhow::Result<Option<Arc<Approvals>>> {
    let Some(state) = &config.state else {
        return Ok(None);
    };
    let store = SqliteStore::open(&state.dir)
        .with_context(|| format!("state.dir = {}", state.dir.display()))?;
    let notifier = Notifier::start(&config.webhooks);
    Ok(Some(Approvals::audited(Arc::new(store), notifier, audit)?))
}

/// Reads every `*.toml` file in `dir` as (file name, text).
pub fn read_policy_files(dir: &std::path::Path) -> anyhow::Result<Vec<(String, String)>> {
    let mut files = Vec::new();
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read policy directory {}", dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            files.push((name.into_owned(), text));
        }
    }
    Ok(files)
}

/// The policy the config names (or the built-in default) and a guard enforcing it on each
/// listener.
pub fn guards(config: &Config) -> anyhow::Result<Inspectors> {
    let (files, source) = match &config.policy {
        Some(p) => (read_policy_files(&p.dir)?, p.dir.display().to_string()),
        None => (
            crate::policy::shipped_default(),
            "built-in default".to_owned(),
        ),
    };
    let policy = Policy::parse(&files).with_context(|| format!("policy: {source}"))?;
    tracing::info!(policy = %source, rules = policy.rules.len(), "policy loaded");
    let groups: std::collections::HashMap<String, Vec<String>> = config
        .users
        .iter()
        .map(|u| (u.name.clone(), u.groups.clone()))
        .collect();
    let masking = Arc::new(masking(&policy.mask)?);
    let policy = Arc::new(policy);
    let postgres = Guard::new(
        policy.clone(),
        "postgres",
        Dialect::Postgres,
        groups.clone(),
        masking.clone(),
    );
    let mysql = Guard::new(policy.clone(), "mysql", Dialect::MySql, groups, masking);
    let audit = open_audit(config)?;
    if let Some(log) = &audit {
        let mut sorted: Vec<&(String, String)> = files.iter().collect();
        sorted.sort();
        let text: String = sorted
            .iter()
            .map(|(name, text)| format!("{name}\n{text}\n"))
            .collect();
        log.record(&crate::audit::Event::Policy {
            source: source.clone(),
            rules: policy.rules.len(),
            sha256: crate::audit::record::sha256_hex(text.as_bytes()),
        });
    }
    let postgres = postgres.audited(audit.clone());
    let mysql = mysql.audited(audit.clone());
    Ok(Inspectors {
        postgres: Arc::new(PgGuards(Arc::new(postgres))),
        mysql: Arc::new(MyGuards(Arc::new(mysql))),
        audit,
    })
}

/// The audit trail in `[state] dir`, unless the config keeps none.
fn open_audit(config: &Config) -> anyhow::Result<Option<Arc<crate::audit::AuditLog>>> {
    use crate::audit::{AuditLog, Mode};
    use crate::config::AuditSetting;
    let Some(state) = &config.state else {
        tracing::warn!("no [state] dir: Airlock keeps no audit trail");
        return Ok(None);
    };
    let mode = match state.audit {
        AuditSetting::Off => {
            tracing::warn!("[state] audit = \"off\": Airlock keeps no audit trail");
            return Ok(None);
        }
        AuditSetting::Required => Mode::Required,
        AuditSetting::BestEffort => Mode::BestEffort,
    };
    let checkpoints = match &state.checkpoint_key_file {
        Some(path) => {
            let key = std::fs::read(path)
                .with_context(|| format!("state.checkpoint_key_file = {}", path.display()))?;
            let signer = crate::audit::checkpoint::Signer::from_pkcs8(&key)
                .with_context(|| format!("state.checkpoint_key_file = {}", path.display()))?;
            Some(crate::audit::store::Checkpointing {
                signer,
                every: Duration::from_secs(state.checkpoint_every_secs.max(1)),
            })
        }
        None => None,
    };
    let log = AuditLog::open_signed(&state.dir, mode, checkpoints)
        .with_context(|| format!("state.dir = {}", state.dir.display()))?;
    Ok(Some(Arc::new(log)))
}

/// The policy's masking compiled, with the keyed-hash key from the environment variable it
/// names (which must then be set: placeholders never silently lose their hash).
fn masking(mask: &crate::policy::mask::MaskPolicy) -> anyhow::Result<Masking> {
    let key = match &mask.hash_key_env {
        Some(var) => {
            let key = std::env::var(var).map_err(|_| {
                anyhow::anyhow!(
                    "the policy's [mask] hash_key_env names {var}, which is not set: set it \
                     to a secret of at least 16 characters, or remove hash_key_env"
                )
            })?;
            anyhow::ensure!(
                key.len() >= 16,
                "{var} (the [mask] hash key) is shorter than 16 characters; use a longer secret"
            );
            Some(key.into_bytes())
        }
        None => None,
    };
    Masking::new(mask, key.as_deref()).map_err(|e| anyhow::anyhow!("[mask]: {e}"))
}

/// Logs to stderr at the level `AIRLOCK_LOG` names (`info` if unset or unreadable).
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("AIRLOCK_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// `airlock serve`: runs until SIGINT or SIGTERM, then stops accepting and lets open sessions
/// finish for up to `server.shutdown_grace_secs`.
pub fn serve(config: Config) -> anyhow::Result<()> {
    let inspectors = guards(&config)?;
    serve_with(config, inspectors)
}

/// [`serve`] with `inspectors` in place of the config's policy (the end-to-end benchmark's
/// pass-through, `examples/passthrough.rs`, plugs in none).
pub fn serve_with(config: Config, inspectors: Inspectors) -> anyhow::Result<()> {
    let grace = Duration::from_secs(config.server.shutdown_grace_secs);
    let workers = config.server.workers;
    let approvals = open_approvals(&config, inspectors.audit.clone())?;
    let admin_socket = match &config.admin {
        Some(a) => Some(bind(a.listen, 1, "admin.listen")?.remove(0)),
        None => None,
    };
    let contexts = contexts(&config, &inspectors, approvals.clone())?;
    let pg = match contexts.postgres {
        Some(ctx) => {
            let sockets = bind(ctx.config.listen, workers, "postgres.listen")?;
            Some((ctx, sockets))
        }
        None => None,
    };
    let my = match contexts.mysql {
        Some(ctx) => {
            let sockets = bind(ctx.config.listen, workers, "mysql.listen")?;
            Some((ctx, sockets))
        }
        None => None,
    };
    let postgres_addr = pg.as_ref().map(|(_, l)| l[0].local_addr()).transpose()?;
    let mysql_addr = my.as_ref().map(|(_, l)| l[0].local_addr()).transpose()?;
    let mut pg_sockets: Vec<Option<std::net::TcpListener>> = Vec::new();
    let mut my_sockets: Vec<Option<std::net::TcpListener>> = Vec::new();
    let (pg_ctx, my_ctx) = (
        pg.as_ref().map(|(c, _)| c.clone()),
        my.as_ref().map(|(c, _)| c.clone()),
    );
    match pg {
        Some((_, sockets)) => pg_sockets.extend(sockets.into_iter().map(Some)),
        None => pg_sockets.resize_with(workers, || None),
    }
    match my {
        Some((_, sockets)) => my_sockets.extend(sockets.into_iter().map(Some)),
        None => my_sockets.resize_with(workers, || None),
    }
    let (shutdown, shutdown_rx) = watch::channel(false);
    let (closing, closing_rx) = watch::channel(false);
    let closing = Arc::new(closing);
    let signals = Signals {
        shutdown: shutdown_rx,
        closing: closing_rx,
    };
    let tracker = Tracker::default();

    let mut threads = Vec::with_capacity(workers);
    // A worker that stops before shutdown (it cannot start, or it panicked) stops Airlock.
    let (exited_tx, mut exited) = tokio::sync::mpsc::unbounded_channel::<usize>();
    for (i, (pg_socket, my_socket)) in pg_sockets.into_iter().zip(my_sockets).enumerate() {
        let (pg_ctx, my_ctx, tracker, signals, closing) = (
            pg_ctx.clone(),
            my_ctx.clone(),
            tracker.clone(),
            signals.clone(),
            closing.clone(),
        );
        let exited = Notify(exited_tx.clone(), i);
        let thread = std::thread::Builder::new()
            .name(format!("airlock-worker-{i}"))
            .spawn(move || -> anyhow::Result<()> {
                let _exited = exited;
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                runtime.block_on(async move {
                    let mut listeners = Vec::new();
                    if let (Some(ctx), Some(socket)) = (pg_ctx, pg_socket) {
                        let listener = TcpListener::from_std(socket)?;
                        listeners.push(tokio::spawn(serve_listener(
                            ctx,
                            listener,
                            tracker.clone(),
                            signals.clone(),
                        )));
                    }
                    if let (Some(ctx), Some(socket)) = (my_ctx, my_socket) {
                        let listener = TcpListener::from_std(socket)?;
                        listeners.push(tokio::spawn(serve_mysql(
                            ctx,
                            listener,
                            tracker.clone(),
                            signals.shutdown.clone(),
                        )));
                    }
                    for l in listeners {
                        let _ = l.await;
                    }
                    // Keep driving this thread's sessions until they end or the grace is over,
                    // then tell those left (57P01) and give them a moment to hear it.
                    if tracker.drain(grace).await > 0 {
                        let _ = closing.send(true);
                        tracker.drain(GOODBYE).await;
                    }
                    Ok(())
                })
            })?;
        threads.push(thread);
    }
    if let Some(addr) = postgres_addr {
        tracing::info!(postgres_addr = %addr, workers, "PostgreSQL listener ready");
    }
    if let Some(addr) = mysql_addr {
        tracing::info!(mysql_addr = %addr, workers, "MySQL listener ready");
    }

    let signals = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // The admin API runs on this thread, served while it waits for a signal.
    if let (Some(socket), Some(approvals)) = (admin_socket, &approvals) {
        let addr = socket.local_addr()?;
        let listener = {
            let _runtime = signals.enter();
            TcpListener::from_std(socket)?
        };
        let api = Arc::new(admin_api(&config, approvals));
        signals.spawn(admin::serve(listener, api, shutdown.subscribe()));
        tracing::info!(admin_addr = %addr, "admin API ready");
    }
    let early_exit = signals.block_on(async {
        tokio::select! {
            r = wait_for_signal() => r.map(|()| None),
            worker = exited.recv() => Ok(worker),
        }
    })?;
    if let Some(worker) = early_exit {
        tracing::error!(
            worker,
            "a worker thread stopped unexpectedly; shutting down"
        );
    }
    tracing::info!(
        active = tracker.active(),
        grace_secs = grace.as_secs(),
        "shutting down"
    );
    let _ = shutdown.send(true);
    for thread in threads {
        thread
            .join()
            .map_err(|_| anyhow::anyhow!("a worker thread panicked"))??;
    }
    if let Some(worker) = early_exit {
        anyhow::bail!("worker {worker} stopped before shutdown");
    }
    let left = tracker.active();
    if left > 0 {
        tracing::warn!(
            sessions = left,
            "grace period over; closing remaining sessions"
        );
    }
    Ok(())
}

/// Tells the main thread that worker `.1` has stopped, however it stops (panics included).
struct Notify(tokio::sync::mpsc::UnboundedSender<usize>, usize);

impl Drop for Notify {
    fn drop(&mut self) {
        let _ = self.0.send(self.1);
    }
}

async fn wait_for_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}
