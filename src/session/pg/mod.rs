//! A PostgreSQL client session, in stages: [`handshake`] (TLS negotiation, cancel requests,
//! the startup packet), [`client_auth`] (Airlock checks the client), [`upstream`] (Airlock logs
//! in to the database with its own credentials) and [`relay`] (traffic through the inspection
//! seam until either side leaves).

pub mod client_auth;
pub mod handshake;
pub mod io;
pub mod pool;
pub mod relay;
pub mod substitute;
pub mod upstream;

pub use crate::session::target::{Secret, SetupError, UpstreamTarget};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use pgwire::api::auth::sasl::scram::ScramServerAuth;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::auth::scram::{Decoy, ScramVerifier};
use crate::config::{ClientAuthMethod, Config, ConfigError, PostgresConfig};
use crate::inspect::{InspectorFactory, SessionInfo};
use crate::net::stream::Stream;
use crate::net::tls::ServerTls;
use crate::protocol::pg::PgError;
use crate::protocol::pg::backend;
use crate::session::cancel::{CancelRegistry, Registration};
use crate::session::pg::io::Reader;
use crate::session::pg::pool::{PoolKey, ServerPool};

/// Why a session ended early.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Tell the client this, then close.
    #[error("{0}")]
    Client(PgError),
    /// The peer went away or the socket failed; nothing more can be said to the client.
    #[error("connection closed: {0}")]
    Closed(#[from] std::io::Error),
    /// The database refused the session with an error that was already relayed to the client.
    #[error("the database ended the session during start-up")]
    Relayed,
}

impl From<PgError> for SessionError {
    fn from(e: PgError) -> Self {
        SessionError::Client(e)
    }
}

/// Everything a PostgreSQL listener's sessions share.
pub struct PgContext {
    pub config: PostgresConfig,
    pub users: std::collections::HashMap<String, ScramVerifier>,
    pub server_tls: Option<ServerTls>,
    /// SCRAM with the server certificate configured: offered as SCRAM-SHA-256-PLUS over TLS.
    pub scram_plus: Option<ScramServerAuth>,
    pub upstream: UpstreamTarget,
    pub cancels: CancelRegistry,
    pub inspectors: Arc<dyn InspectorFactory>,
    /// Verifiers for unknown users, shaped like the real ones.
    pub decoy: Decoy,
    /// Where statements a policy holds wait for approval (set by the caller; none: refused).
    pub approvals: Option<Arc<crate::approval::Approvals>>,
    /// Where failed logins are recorded, if an audit trail is kept.
    pub audit: Option<Arc<crate::audit::AuditLog>>,
}

impl PgContext {
    /// Builds a listener's shared state from a checked config, reading secrets and certificates.
    pub fn new(
        config: &Config,
        inspectors: Arc<dyn InspectorFactory>,
    ) -> Result<PgContext, SetupError> {
        let pg = config
            .postgres
            .clone()
            .ok_or_else(|| ConfigError::Invalid {
                key: "postgres".into(),
                problem: "missing".into(),
                fix: "add a [postgres] section".into(),
            })?;
        let server_tls = match &config.tls {
            Some(t) => Some(ServerTls::load(&t.cert_file, &t.key_file)?),
            None => None,
        };
        let scram_plus = server_tls.as_ref().and_then(|tls| {
            let mut scram = ScramServerAuth::new();
            match scram.configure_certificate(&tls.cert_pem) {
                Ok(()) => Some(scram),
                Err(_) => {
                    tracing::warn!(
                        "the certificate's signature algorithm does not support SCRAM channel binding; \
                         SCRAM-SHA-256-PLUS will not be offered"
                    );
                    None
                }
            }
        });
        let upstream = UpstreamTarget::from_config(&pg.upstream, "postgres.upstream")?;
        let users = config
            .users
            .iter()
            .map(|u| {
                let v = ScramVerifier::parse(&u.scram_sha_256)
                    .expect("verifiers were checked when the config was loaded");
                (u.name.clone(), v)
            })
            .collect();
        Ok(PgContext {
            config: pg,
            users,
            server_tls,
            scram_plus,
            upstream,
            cancels: CancelRegistry::default(),
            inspectors,
            decoy: Decoy::new(config.users.iter().map(|u| &u.scram_sha_256)),
            approvals: None,
            audit: None,
        })
    }

    pub fn client_auth(&self) -> ClientAuthMethod {
        self.config.client_auth
    }
}

/// Serves one client connection from accept to close. `pool` holds this worker's idle
/// database sessions; `closing` turns true when Airlock's shutdown grace is over.
pub async fn serve(
    ctx: Arc<PgContext>,
    pool: Arc<ServerPool>,
    closing: tokio::sync::watch::Receiver<bool>,
    tcp: TcpStream,
    client_addr: SocketAddr,
) {
    let started = Instant::now();
    let auth_timeout = Duration::from_secs(ctx.config.auth_timeout_secs);
    let opened = match tokio::time::timeout(auth_timeout, open(&ctx, &pool, tcp, client_addr)).await
    {
        Ok(Ok(Some(opened))) => opened,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            tracing::debug!(%client_addr, error = %e, "session refused during start-up");
            return;
        }
        Err(_) => {
            tracing::info!(%client_addr, "client did not finish start-up in time; closed");
            return;
        }
    };
    let Opened {
        client,
        client_leftover,
        upstream,
        info,
        registration,
        pool_key,
    } = opened;
    tracing::info!(
        session = info.id, user = %info.user, database = %info.database, %client_addr, tls = info.tls,
        application = info.application_name.as_deref().unwrap_or(""), "session started"
    );
    let inspector = ctx.inspectors.for_session(&info);
    let limits = relay::Limits {
        max_message_size: ctx.config.max_message_size,
    };
    let upstream::Connected {
        stream,
        key,
        greeting,
        leftover,
    } = upstream;
    let ends = relay::Ends {
        client,
        client_buf: client_leftover,
        upstream: stream,
        upstream_buf: leftover,
    };
    let (outcome, idle) = relay::run(
        ends,
        inspector,
        limits,
        pool.enabled(),
        closing,
        ctx.approvals.as_ref(),
        &registration.cancel,
    )
    .await;
    // This client's cancel key is void from here on, whatever happens to the database session.
    drop(registration);
    if let Some(approvals) = &ctx.approvals {
        approvals.session_ended("postgres", i64::from(info.id));
    }
    if let Some(stream) = idle {
        pool.checkin(pool_key, stream, key.clone(), greeting).await;
    }
    if matches!(
        outcome,
        relay::Outcome::ClientVanished | relay::Outcome::ClientRefused
    ) {
        // The client left without Terminate (or was sent away), perhaps mid-query: stop the
        // query so the database session ends now rather than when it next writes.
        upstream::cancel(&ctx.upstream, &key).await;
    }
    tracing::info!(
        session = info.id,
        ?outcome,
        duration_ms = started.elapsed().as_millis() as u64,
        "session ended"
    );
}

/// A client that is authenticated and connected through to the database.
struct Opened {
    client: Stream,
    /// Bytes the client sent after its last authentication message.
    client_leftover: BytesMut,
    upstream: upstream::Connected,
    info: SessionInfo,
    /// Airlock's cancel key for this client; removed from the registry when dropped.
    registration: Registration,
    /// Who the database session may be reused for.
    pool_key: PoolKey,
}

/// Start-up: handshake, client authentication, upstream login. `None` when the connection was a
/// cancel request or closed before saying anything.
async fn open(
    ctx: &PgContext,
    pool: &ServerPool,
    tcp: TcpStream,
    client_addr: SocketAddr,
) -> Result<Option<Opened>, SessionError> {
    let (mut client, startup) = match handshake::accept(ctx, tcp).await? {
        handshake::Accepted::Cancel { pid, secret } => {
            if let Some(key) = ctx.cancels.cancel(pid, &secret) {
                tracing::debug!(%client_addr, "forwarding cancel request");
                upstream::cancel(&ctx.upstream, &key).await;
            }
            return Ok(None);
        }
        handshake::Accepted::Closed => return Ok(None),
        handshake::Accepted::Session(client, startup) => (client, startup),
    };
    let mut out = BytesMut::new();
    let mut reader = Reader::default();
    let result = async {
        let user = handshake::check_startup(ctx, client.is_tls(), &startup, &mut out)?;
        if let Err(e) =
            client_auth::authenticate(ctx, &mut client, &mut reader, &user, &mut out).await
        {
            if let Some(log) = &ctx.audit {
                log.record(&crate::audit::Event::AuthFailed {
                    listener: "postgres".into(),
                    user: Some(user.clone()),
                    client_addr: client_addr.to_string(),
                    reason: e.to_string(),
                });
            }
            return Err(e);
        }
        backend::authentication(pgwire::messages::startup::Authentication::Ok, &mut out);
        let database = startup.param("database").unwrap_or(&user).to_owned();
        // The settings it asks for reach the database only if the policy allows them.
        let settings = startup.settings().map_err(PgError::unreadable_options)?;
        ctx.inspectors
            .admit(&user, &database, &settings)
            .map_err(|d| PgError::denied_at_startup(&d))?;
        let params = upstream::startup_params(&startup, &ctx.upstream.user, &database);
        let pool_key = PoolKey {
            user: user.clone(),
            params,
        };
        let connected = match pool.checkout(&pool_key) {
            Some(idle) => {
                out.extend_from_slice(&idle.greeting);
                backend::ready_for_query_idle(&mut out);
                upstream::Connected {
                    stream: idle.stream,
                    key: idle.key,
                    greeting: idle.greeting,
                    leftover: BytesMut::new(),
                }
            }
            None => upstream::connect(&ctx.upstream, &pool_key.params, &mut out).await?,
        };
        Ok::<_, SessionError>((user, database, pool_key, connected))
    }
    .await;
    let (user, database, pool_key, connected) = match result {
        Ok(v) => v,
        Err(SessionError::Client(e)) => {
            tracing::info!(%client_addr, code = e.code.0, reason = %e.message, "session refused");
            e.encode(&mut out);
            let _ = client.write_all(&out).await;
            let _ = client.shutdown().await;
            return Err(SessionError::Client(e));
        }
        Err(SessionError::Relayed) => {
            let _ = client.write_all(&out).await;
            let _ = client.shutdown().await;
            return Err(SessionError::Relayed);
        }
        Err(e) => return Err(e),
    };
    let registration = ctx.cancels.register(connected.key.clone());
    // `out` ends with the database's ReadyForQuery; Airlock's key goes just before it.
    let ready = out.split_off(out.len() - upstream::READY_FOR_QUERY_LEN);
    backend::backend_key_data(registration.pid, registration.secret, &mut out);
    out.unsplit(ready);
    client.write_all(&out).await?;
    client.flush().await?;
    let info = SessionInfo {
        id: registration.pid,
        user,
        database,
        application_name: startup.param("application_name").map(str::to_owned),
        client_addr,
        tls: client.is_tls(),
        strings_as_classified: !says_nonstandard_strings(&connected.greeting),
        ascii_only: encoding_splits_ascii(&startup, &connected.greeting),
        local_infile: false,
        quotes_as_names: false,
    };
    Ok(Some(Opened {
        client,
        client_leftover: reader.into_leftover(),
        upstream: connected,
        info,
        registration,
        pool_key,
    }))
}

/// Whether the session's client encoding may end a multibyte character in an ASCII byte: as
/// the client asked in its start-up packet (`client_encoding`, or anything in `options`
/// about it), or as the database's start-up ParameterStatus says.
fn encoding_splits_ascii(
    startup: &crate::protocol::pg::startup::StartupMessage,
    greeting: &[u8],
) -> bool {
    let asked = startup
        .param("client_encoding")
        .is_some_and(|e| !crate::sql::encoding::known_safe(e));
    let in_options = startup
        .param("options")
        .is_some_and(|o| o.to_ascii_lowercase().contains("client_encoding"));
    let reported = parameter_statuses(greeting).any(|body| {
        matches!(backend::parameter(body), Some((b"client_encoding", value))
            if crate::sql::encoding::splits_ascii(&String::from_utf8_lossy(value)))
    });
    asked || in_options || reported
}

/// Whether the database's start-up ParameterStatus messages say standard_conforming_strings
/// is off.
fn says_nonstandard_strings(greeting: &[u8]) -> bool {
    parameter_statuses(greeting).any(backend::turns_off_standard_strings)
}

/// The bodies of the ParameterStatus messages in the database's start-up messages.
fn parameter_statuses(greeting: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = greeting;
    std::iter::from_fn(move || {
        while let Ok(Some(h)) = crate::protocol::pg::frame::complete(rest, rest.len()) {
            let (message, after) = rest.split_at(h.total_len);
            rest = after;
            if h.tag == backend::tag::PARAMETER_STATUS {
                return Some(&message[crate::protocol::pg::frame::HEADER_LEN..]);
            }
        }
        None
    })
}
