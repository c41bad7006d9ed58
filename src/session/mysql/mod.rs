//! A MySQL/MariaDB client session: [`handshake`] (Airlock's greeting and the client's login),
//! [`upstream`] (Airlock's own login to the database) and [`relay`] (commands through the
//! inspection seam, answers back untouched).
//!
//! The greeting carries the database's own version string and capabilities (learned by a
//! clean login at start-up and refreshed by every session), so clients pick the right dialect
//! and features; capabilities that would change how Airlock must read the traffic
//! (compression, query attributes, optional result metadata, MariaDB's extended ones) are
//! never offered, and LOCAL INFILE only where the config allows it.

pub mod handshake;
pub mod relay;
pub mod upstream;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mysql_common::constants::CapabilityFlags;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::auth::mysql::{NativeHash, Sha2Hash};
use crate::auth::scram::{Decoy, ScramVerifier};
use crate::config::{Config, ConfigError, MysqlConfig};
use crate::inspect::{MysqlInspectorFactory, SessionInfo};
use crate::net::stream::Stream;
use crate::net::tls::ServerTls;
use crate::protocol::mysql::{MyError, response};
use crate::session::target::{SetupError, UpstreamTarget};
use upstream::ServerInfo;

/// Capabilities Airlock relays faithfully (each leg negotiates SSL and the auth details on
/// its own).
pub const SUPPORTED: CapabilityFlags = CapabilityFlags::from_bits_truncate(
    CapabilityFlags::CLIENT_LONG_PASSWORD.bits()
        | CapabilityFlags::CLIENT_FOUND_ROWS.bits()
        | CapabilityFlags::CLIENT_LONG_FLAG.bits()
        | CapabilityFlags::CLIENT_CONNECT_WITH_DB.bits()
        | CapabilityFlags::CLIENT_IGNORE_SPACE.bits()
        | CapabilityFlags::CLIENT_PROTOCOL_41.bits()
        | CapabilityFlags::CLIENT_INTERACTIVE.bits()
        | CapabilityFlags::CLIENT_IGNORE_SIGPIPE.bits()
        | CapabilityFlags::CLIENT_TRANSACTIONS.bits()
        | CapabilityFlags::CLIENT_RESERVED.bits()
        | CapabilityFlags::CLIENT_SECURE_CONNECTION.bits()
        | CapabilityFlags::CLIENT_MULTI_STATEMENTS.bits()
        | CapabilityFlags::CLIENT_MULTI_RESULTS.bits()
        | CapabilityFlags::CLIENT_PS_MULTI_RESULTS.bits()
        | CapabilityFlags::CLIENT_PLUGIN_AUTH.bits()
        | CapabilityFlags::CLIENT_CONNECT_ATTRS.bits()
        | CapabilityFlags::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA.bits()
        | CapabilityFlags::CLIENT_SESSION_TRACK.bits()
        | CapabilityFlags::CLIENT_DEPRECATE_EOF.bits(),
);

/// A configured user as the MySQL listener checks it.
pub struct MyUser {
    pub scram: ScramVerifier,
    pub native: Option<NativeHash>,
}

/// Everything a MySQL listener's sessions share.
pub struct MyContext {
    pub config: MysqlConfig,
    pub users: HashMap<String, MyUser>,
    /// caching_sha2_password's fast-path cache, filled by full logins, as MySQL's own is.
    sha2: Mutex<HashMap<String, Sha2Hash>>,
    pub server_tls: Option<Arc<rustls::ServerConfig>>,
    pub upstream: UpstreamTarget,
    pub inspectors: Arc<dyn MysqlInspectorFactory>,
    /// Where failed logins are recorded, if an audit trail is kept.
    pub audit: Option<Arc<crate::audit::AuditLog>>,
    pub decoy: Decoy,
    /// Whether unknown users are checked as mysql_native_password users (as most configured
    /// users are), so the exchange looks the same for both.
    pub decoy_native: bool,
    /// What the database's greeting said last.
    server: tokio::sync::Mutex<Option<ServerInfo>>,
    next_id: AtomicU32,
    /// Open sessions: Airlock's connection id to the session's user, database thread and
    /// KILL signal.
    threads: Mutex<HashMap<u32, Thread>>,
    /// Where statements a policy holds wait for approval (set by the caller; none: refused).
    pub approvals: Option<Arc<crate::approval::Approvals>>,
}

impl MyContext {
    pub fn new(
        config: &Config,
        inspectors: Arc<dyn MysqlInspectorFactory>,
    ) -> Result<MyContext, SetupError> {
        let my = config.mysql.clone().ok_or_else(|| ConfigError::Invalid {
            key: "mysql".into(),
            problem: "missing".into(),
            fix: "add a [mysql] section".into(),
        })?;
        let server_tls = match &config.tls {
            Some(t) => {
                let tls = ServerTls::load(&t.cert_file, &t.key_file)?;
                // MySQL clients negotiate no ALPN protocol.
                let mut plain = (*tls.config).clone();
                plain.alpn_protocols.clear();
                Some(Arc::new(plain))
            }
            None => None,
        };
        let upstream = UpstreamTarget::from_config(&my.upstream, "mysql.upstream")?;
        let users = config
            .users
            .iter()
            .map(|u| {
                let user = MyUser {
                    scram: ScramVerifier::parse(&u.scram_sha_256)
                        .expect("verifiers were checked when the config was loaded"),
                    native: u
                        .mysql_native_password
                        .as_deref()
                        .and_then(NativeHash::parse),
                };
                (u.name.clone(), user)
            })
            .collect();
        Ok(MyContext {
            config: my,
            users,
            sha2: Mutex::new(HashMap::new()),
            server_tls,
            upstream,
            inspectors,
            decoy: Decoy::new(config.users.iter().map(|u| &u.scram_sha_256)),
            decoy_native: 2 * config
                .users
                .iter()
                .filter(|u| u.mysql_native_password.is_some())
                .count()
                >= config.users.len().max(1),
            server: tokio::sync::Mutex::new(None),
            next_id: AtomicU32::new(rand::random_range(1..1 << 20)),
            threads: Mutex::new(HashMap::new()),
            approvals: None,
            audit: None,
        })
    }

    /// A stand-in password for an unknown user, stable for that name and unknowable.
    fn decoy_secret(&self, user: &str) -> String {
        self.decoy.for_user(user).to_string()
    }

    fn sha2_cache(&self, user: &str) -> Option<Sha2Hash> {
        self.sha2
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(user)
            .cloned()
    }

    fn remember_sha2(&self, user: &str, hash: Sha2Hash) {
        self.sha2
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(user.to_owned(), hash);
    }

    /// The database's version and capabilities, probing it if no session has told yet.
    async fn server_info(&self) -> Result<ServerInfo, MyError> {
        let mut known = self.server.lock().await;
        if let Some(info) = &*known {
            return Ok(info.clone());
        }
        let info = upstream::probe(&self.upstream).await?;
        tracing::info!(
            version = %String::from_utf8_lossy(&info.version),
            "MySQL upstream greeted"
        );
        *known = Some(info.clone());
        Ok(info)
    }

    fn threads(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Thread>> {
        self.threads.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The database thread behind connection `id`, if `user` owns that session, for a KILL;
    /// a statement that session holds for approval is withdrawn. The id may be Airlock's (from
    /// the greeting, what the mysql client uses on Ctrl-C) or the database's own (what
    /// `SELECT CONNECTION_ID()` returns through Airlock).
    fn kill_target(&self, id: u32, user: &str) -> Option<u32> {
        let threads = self.threads();
        let target = match threads.get(&id) {
            Some(t) if t.user == user => Some(t),
            Some(_) => None,
            None => threads.values().find(|t| t.thread == id && t.user == user),
        }?;
        target.kill.notify_waiters();
        Some(target.thread)
    }

    async fn learn(&self, info: &ServerInfo) {
        *self.server.lock().await = Some(info.clone());
    }
}

/// Serves one client connection from accept to close.
pub async fn serve(ctx: Arc<MyContext>, tcp: TcpStream, client_addr: SocketAddr) {
    let started = Instant::now();
    let id = ctx.next_id.fetch_add(1, Ordering::Relaxed);
    let auth_timeout = Duration::from_secs(ctx.config.auth_timeout_secs);
    let opened = tokio::time::timeout(auth_timeout, open(&ctx, tcp, id, client_addr)).await;
    let Ok(Some((client, upstream, info, deprecate_eof, thread))) = opened else {
        return;
    };
    let registered = Registered::new(ctx.clone(), id, &info.user, thread);
    tracing::info!(
        session = id, user = %info.user, database = %info.database, %client_addr,
        tls = info.tls, "MySQL session started"
    );
    let inspector = ctx.inspectors.for_session(&info);
    let user = info.user.clone();
    let resolve = |id: u32| ctx.kill_target(id, &user);
    let (outcome, busy) = relay::run(
        client,
        upstream,
        inspector,
        relay::Settings {
            max_packet_size: ctx.config.max_packet_size,
            deprecate_eof,
            local_infile: ctx.config.allow_local_infile,
            approvals: ctx.approvals.clone(),
            kill: registered.kill.clone(),
        },
        &resolve,
    )
    .await;
    if let Some(approvals) = &ctx.approvals {
        approvals.session_ended("mysql", i64::from(info.id));
    }
    if busy && outcome == relay::Outcome::ClientVanished {
        // The client left mid-statement: stop it rather than let it run to the end.
        upstream::kill_query(&ctx.upstream, thread).await;
    }
    tracing::info!(
        session = id,
        ?outcome,
        duration_ms = started.elapsed().as_millis() as u64,
        "MySQL session ended"
    );
}

/// Greets, logs the client in, logs in upstream and tells the client OK.
async fn open(
    ctx: &MyContext,
    mut tcp: TcpStream,
    id: u32,
    client_addr: SocketAddr,
) -> Option<(relay::End, relay::End, SessionInfo, bool, u32)> {
    let server = match ctx.server_info().await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(%client_addr, reason = %e, "MySQL upstream unreachable");
            let mut out = bytes::BytesMut::new();
            e.encode(0, &mut out);
            let _ = tcp.write_all(&out).await;
            return None;
        }
    };
    let logged = match handshake::login(ctx, &server, tcp, id, client_addr).await {
        Ok(l) => l,
        Err(handshake::Failed::Tell(mut stream, seq, e)) => {
            tracing::info!(%client_addr, code = e.code, reason = %e.message, "MySQL login refused");
            if let Some(log) = &ctx.audit {
                log.record(&crate::audit::Event::AuthFailed {
                    listener: "mysql".into(),
                    user: None,
                    client_addr: client_addr.to_string(),
                    reason: format!("{} ({})", e.message, e.code),
                });
            }
            tell(&mut stream, seq, &e).await;
            return None;
        }
        Err(handshake::Failed::Gone) => return None,
    };
    let handshake::LoggedIn {
        mut stream,
        reader,
        client,
        seq,
    } = logged;
    let connected = match upstream::connect(&ctx.upstream, Some(&client)).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(%client_addr, reason = %e, "MySQL upstream login failed");
            tell(&mut stream, seq, &e).await;
            return None;
        }
    };
    let (mut connected, upstream_leftover) = connected;
    let deprecate_eof = client
        .capabilities
        .contains(CapabilityFlags::CLIENT_DEPRECATE_EOF);
    let mut upstream_reader = upstream::PacketReader::from(upstream_leftover);
    let sql_mode =
        upstream::session_sql_mode(&mut connected.stream, &mut upstream_reader, deprecate_eof)
            .await;
    let quotes_as_names = match sql_mode {
        Ok(mode) => crate::sql::mysql_mode_quotes_names(&mode),
        Err(e) => {
            tracing::warn!(%client_addr, reason = %e, "could not read the MySQL session's sql_mode");
            tell(&mut stream, seq, &e).await;
            return None;
        }
    };
    ctx.learn(&connected.info).await;
    if upstream::write_packet(&mut stream, seq, &connected.ok)
        .await
        .is_err()
    {
        return None;
    }
    let info = SessionInfo {
        id: id as i32,
        user: client.user,
        database: client
            .database
            .map(|d| String::from_utf8_lossy(&d).into_owned())
            .unwrap_or_default(),
        application_name: None,
        client_addr,
        tls: stream.is_tls(),
        ascii_only: crate::sql::encoding::mysql_collation_splits_ascii(client.collation),
        strings_as_classified: response::ok_status(&connected.ok)
            .is_some_and(|s| s & response::SERVER_STATUS_NO_BACKSLASH_ESCAPES == 0),
        local_infile: ctx.config.allow_local_infile,
        quotes_as_names,
    };
    let client = relay::End {
        stream,
        buf: reader.into_leftover(),
    };
    let upstream = relay::End {
        stream: connected.stream,
        buf: upstream_reader.into_leftover(),
    };
    let thread = connected.thread_id;
    Some((client, upstream, info, deprecate_eof, thread))
}

/// An open session, as KILL finds it.
struct Thread {
    user: String,
    /// The database's thread id.
    thread: u32,
    /// Woken by a KILL of this session (while something waits on it).
    kill: Arc<tokio::sync::Notify>,
}

/// A session's entry in the connection-id map, removed when the session ends.
struct Registered {
    ctx: Arc<MyContext>,
    id: u32,
    kill: Arc<tokio::sync::Notify>,
}

impl Registered {
    fn new(ctx: Arc<MyContext>, id: u32, user: &str, thread: u32) -> Registered {
        let kill = Arc::new(tokio::sync::Notify::new());
        let entry = Thread {
            user: user.to_owned(),
            thread,
            kill: kill.clone(),
        };
        ctx.threads().insert(id, entry);
        Registered { ctx, id, kill }
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.ctx.threads().remove(&self.id);
    }
}

async fn tell(stream: &mut Stream, seq: u8, e: &MyError) {
    let mut out = bytes::BytesMut::new();
    e.encode(seq, &mut out);
    let _ = stream.write_all(&out).await;
    let _ = stream.shutdown().await;
}
