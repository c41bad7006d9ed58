//! Logging in to the database with Airlock's own credentials: TCP, TLS by the configured mode,
//! StartupMessage, then whatever authentication the server asks for (SCRAM-SHA-256, md5,
//! cleartext or trust). The client's session parameters pass through; its credentials do not.
//! Also sends CancelRequests upstream.

use bytes::BytesMut;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::config::UpstreamTlsMode;
use crate::net::stream::Stream;
use crate::protocol::pg::PgError;
use crate::protocol::pg::backend::{self, auth_code, tag};
use crate::protocol::pg::startup::StartupMessage;
use crate::session::cancel::UpstreamKey;
use crate::session::pg::io::{ReadError, Reader};
use crate::session::pg::{SessionError, UpstreamTarget};

/// Length of a ReadyForQuery message on the wire.
pub const READY_FOR_QUERY_LEN: usize = 6;
/// Start-up messages from the database are small; ParameterStatus values are capped by libpq at 30,000.
const MAX_STARTUP_MESSAGE: usize = 1024 * 1024;

/// The parameters sent upstream: the client's, with Airlock's role in place of the client's user.
pub fn startup_params(
    startup: &StartupMessage,
    upstream_user: &str,
    database: &str,
) -> Vec<(String, String)> {
    let mut params = vec![
        ("user".to_owned(), upstream_user.to_owned()),
        ("database".to_owned(), database.to_owned()),
    ];
    params.extend(startup.session_params().cloned());
    params
}

/// Opens TCP and, by the configured mode, TLS to the database.
async fn open(target: &UpstreamTarget) -> Result<Stream, PgError> {
    let tcp = tokio::time::timeout(
        target.connect_timeout,
        TcpStream::connect(target.address.as_str()),
    )
    .await
    .map_err(|_| PgError::upstream_unreachable(&target.address, "timed out"))?
    .map_err(|e| PgError::upstream_unreachable(&target.address, e))?;
    let _ = tcp.set_nodelay(true);
    let Some(config) = &target.tls.config else {
        return Ok(Stream::Plain(tcp));
    };
    let mut tcp = tcp;
    let mut req = BytesMut::new();
    frontend::ssl_request(&mut req);
    let lost = |e: std::io::Error| PgError::upstream_unreachable(&target.address, e);
    tcp.write_all(&req).await.map_err(lost)?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await.map_err(lost)?;
    match answer[0] {
        b'S' => {
            let tls = TlsConnector::from(config.clone())
                .connect(target.tls.server_name.clone(), tcp)
                .await
                .map_err(|e| PgError::upstream_tls(&target.address, e))?;
            Ok(Stream::Tls(Box::new(tls.into())))
        }
        b'N' if target.tls.mode == UpstreamTlsMode::Prefer => Ok(Stream::Plain(tcp)),
        b'N' => Err(PgError::upstream_tls(
            &target.address,
            "the database does not offer TLS",
        )),
        other => Err(PgError::upstream_protocol(format!(
            "answer {other:#04x} to SSLRequest"
        ))),
    }
}

/// A database session Airlock has logged in to.
pub struct Connected {
    pub stream: Stream,
    /// The database's BackendKeyData, kept by Airlock for cancels.
    pub key: UpstreamKey,
    /// The ParameterStatus messages of the start-up, for a client that reuses the session.
    pub greeting: BytesMut,
    /// Bytes the database sent after ReadyForQuery, read along with it.
    pub leftover: BytesMut,
}

/// Connects and logs in. Messages for the client (ParameterStatus, notices, errors, and the final
/// ReadyForQuery) are appended to `to_client`; the database's BackendKeyData is kept instead.
pub async fn connect(
    target: &UpstreamTarget,
    params: &[(String, String)],
    to_client: &mut BytesMut,
) -> Result<Connected, SessionError> {
    let mut stream = open(target).await?;
    let lost = |e: ReadError| match e {
        ReadError::Io(e) => SessionError::Client(PgError::upstream_unreachable(&target.address, e)),
        ReadError::Frame(e) => SessionError::Client(PgError::upstream_protocol(e)),
    };
    let mut buf = BytesMut::new();
    frontend::startup_message(
        params.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        &mut buf,
    )
    .map_err(PgError::upstream_protocol)?;
    write(&mut stream, &mut buf, target).await?;

    let mut login = Login::new(target, stream.is_tls());
    let mut key = None;
    let mut greeting = BytesMut::new();
    let mut reader = Reader::default();
    loop {
        let m = reader
            .message(&mut stream, MAX_STARTUP_MESSAGE)
            .await
            .map_err(lost)?;
        match m.tag {
            tag::AUTHENTICATION => {
                login.step(m.body(), &mut buf)?;
                if !buf.is_empty() {
                    write(&mut stream, &mut buf, target).await?;
                }
            }
            tag::ERROR_RESPONSE => {
                let code = backend::sqlstate(m.body()).unwrap_or_default();
                if code.starts_with(b"28") {
                    // Class 28 during start-up (bad password, unknown role, no pg_hba entry):
                    // the client authenticated fine; it is Airlock's own login that failed.
                    let reason = backend::message(m.body());
                    let code = String::from_utf8_lossy(code);
                    tracing::error!(upstream = %target.address, %code, %reason, "the database refused Airlock's login");
                    return Err(PgError::upstream_login_refused(&format!(
                        "SQLSTATE {code}; the reason is in Airlock's log"
                    ))
                    .into());
                }
                to_client.extend_from_slice(&m.raw);
                return Err(SessionError::Relayed);
            }
            tag::BACKEND_KEY_DATA => {
                let b = m.body();
                if b.len() < 8 {
                    return Err(PgError::upstream_protocol("short BackendKeyData").into());
                }
                key = Some(UpstreamKey {
                    pid: i32::from_be_bytes([b[0], b[1], b[2], b[3]]),
                    secret: b[4..].to_vec(),
                });
            }
            tag::PARAMETER_STATUS => {
                to_client.extend_from_slice(&m.raw);
                greeting.extend_from_slice(&m.raw);
            }
            tag::NOTICE_RESPONSE => to_client.extend_from_slice(&m.raw),
            tag::NEGOTIATE_PROTOCOL_VERSION => {}
            tag::READY_FOR_QUERY if login.done && m.raw.len() == READY_FOR_QUERY_LEN => {
                to_client.extend_from_slice(&m.raw);
                let key = key.ok_or_else(|| PgError::upstream_protocol("no BackendKeyData"))?;
                return Ok(Connected {
                    stream,
                    key,
                    greeting,
                    leftover: reader.into_leftover(),
                });
            }
            other => {
                return Err(PgError::upstream_protocol(format!(
                    "message type {:?} during start-up",
                    other as char
                ))
                .into());
            }
        }
    }
}

async fn write(
    stream: &mut Stream,
    buf: &mut BytesMut,
    target: &UpstreamTarget,
) -> Result<(), PgError> {
    let lost = |e| PgError::upstream_unreachable(&target.address, e);
    stream.write_all(buf).await.map_err(lost)?;
    stream.flush().await.map_err(lost)?;
    buf.clear();
    Ok(())
}

/// The client side of the authentication exchange.
struct Login<'a> {
    target: &'a UpstreamTarget,
    scram: Option<ScramSha256>,
    /// The database proved it knows the SCRAM verifier (SASLFinal checked).
    scram_verified: bool,
    /// Whether the connection is encrypted (cleartext passwords need it).
    tls: bool,
    done: bool,
}

impl<'a> Login<'a> {
    fn new(target: &'a UpstreamTarget, tls: bool) -> Self {
        Login {
            target,
            scram: None,
            scram_verified: false,
            tls,
            done: false,
        }
    }

    fn password(&self) -> Result<&'a str, PgError> {
        self.target
            .password
            .as_ref()
            .map(|s| s.0.as_str())
            .ok_or_else(|| {
                PgError::upstream_login_refused(
                    "the database asked for a password and none is configured",
                )
            })
    }

    /// Handles one Authentication message; a reply, if any, is left in `out`.
    fn step(&mut self, body: &[u8], out: &mut BytesMut) -> Result<(), PgError> {
        let bad = |what: &str| {
            PgError::upstream_protocol(format!("malformed authentication request: {what}"))
        };
        let code_bytes: [u8; 4] = body
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| bad("too short"))?;
        let data = &body[4..];
        let io = |e: std::io::Error| PgError::upstream_protocol(e);
        match i32::from_be_bytes(code_bytes) {
            auth_code::OK if self.scram.is_some() && !self.scram_verified => {
                // A server that starts SCRAM must prove it knows the verifier; one that skips
                // to AuthenticationOk may be an impostor.
                return Err(PgError::upstream_login_refused(
                    "the database skipped the SCRAM server signature",
                ));
            }
            auth_code::OK => self.done = true,
            auth_code::CLEARTEXT_PASSWORD => {
                // With `prefer`, plaintext means the TLS offer was declined, perhaps by someone
                // in the middle fishing for the password: only `disable` sends it in clear.
                if !self.tls && self.target.tls.mode != UpstreamTlsMode::Disable {
                    return Err(PgError::upstream_login_refused(
                        "the database asked for a cleartext password over a connection without TLS",
                    ));
                }
                // password_message writes the NUL terminator itself.
                frontend::password_message(self.password()?.as_bytes(), out).map_err(io)?;
            }
            auth_code::MD5_PASSWORD => {
                let salt: [u8; 4] = data
                    .get(..4)
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| bad("md5 salt"))?;
                let hash = md5_hash(
                    self.target.user.as_bytes(),
                    self.password()?.as_bytes(),
                    salt,
                );
                frontend::password_message(hash.as_bytes(), out).map_err(io)?;
            }
            auth_code::SASL => {
                let offers_scram = data.split(|&b| b == 0).any(|m| m == b"SCRAM-SHA-256");
                if !offers_scram {
                    return Err(PgError::upstream_login_refused(
                        "the database offered no SASL mechanism Airlock supports",
                    ));
                }
                // Channel binding is per TLS connection, so it cannot span Airlock; SCRAM runs on
                // each leg. "n" says this client does not do channel binding.
                let scram =
                    ScramSha256::new(self.password()?.as_bytes(), ChannelBinding::unsupported());
                frontend::sasl_initial_response("SCRAM-SHA-256", scram.message(), out)
                    .map_err(io)?;
                self.scram = Some(scram);
            }
            auth_code::SASL_CONTINUE => {
                let scram = self
                    .scram
                    .as_mut()
                    .ok_or_else(|| bad("SASLContinue before SASL"))?;
                scram.update(data).map_err(io)?;
                frontend::sasl_response(scram.message(), out).map_err(io)?;
            }
            auth_code::SASL_FINAL => {
                let scram = self
                    .scram
                    .as_mut()
                    .ok_or_else(|| bad("SASLFinal before SASL"))?;
                // Checks the server's signature: the database proves it knows the verifier.
                scram.finish(data).map_err(|_| {
                    PgError::upstream_login_refused("the database's SCRAM signature did not verify")
                })?;
                self.scram_verified = true;
            }
            other => {
                return Err(PgError::upstream_login_refused(&format!(
                    "the database asked for authentication method {other}, which Airlock does not support"
                )));
            }
        }
        Ok(())
    }
}

/// Sends a CancelRequest for `key` to the database. Best effort, as cancels are in PostgreSQL.
pub async fn cancel(target: &UpstreamTarget, key: &UpstreamKey) {
    // Bounded as a whole: a database that stalls mid-handshake must not hold the task.
    let deadline = target.connect_timeout * 2;
    let result = tokio::time::timeout(deadline, async {
        let mut stream = open(target).await.map_err(|e| e.message)?;
        let request = crate::protocol::pg::startup::encode_cancel(key.pid, &key.secret);
        stream
            .write_all(&request)
            .await
            .map_err(|e| e.to_string())?;
        stream.flush().await.map_err(|e| e.to_string())?;
        // The server closes the connection once it has the request.
        let mut sink = [0u8; 1];
        let _ = stream.read(&mut sink).await;
        Ok::<_, String>(())
    })
    .await
    .unwrap_or_else(|_| Err("timed out".into()));
    if let Err(e) = result {
        tracing::warn!(upstream = %target.address, error = %e, "could not forward a cancel request");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::tls::UpstreamTls;
    use crate::session::pg::Secret;

    fn target(mode: UpstreamTlsMode) -> UpstreamTarget {
        UpstreamTarget {
            address: "db:5432".into(),
            user: "airlock".into(),
            password: Some(Secret("pw".into())),
            tls: UpstreamTls::new(mode, None, "localhost").unwrap(),
            connect_timeout: std::time::Duration::from_secs(1),
        }
    }

    fn auth(code: i32, data: &[u8]) -> Vec<u8> {
        let mut body = code.to_be_bytes().to_vec();
        body.extend_from_slice(data);
        body
    }

    #[test]
    fn a_server_that_skips_the_scram_signature_is_refused() {
        let target = target(UpstreamTlsMode::Disable);
        let mut login = Login::new(&target, false);
        let mut out = BytesMut::new();
        login
            .step(&auth(auth_code::SASL, b"SCRAM-SHA-256\0\0"), &mut out)
            .unwrap();
        assert!(!out.is_empty(), "SASLInitialResponse sent");
        let err = login.step(&auth(auth_code::OK, b""), &mut out).unwrap_err();
        assert!(
            err.message.contains("skipped the SCRAM server signature"),
            "{}",
            err.message
        );
    }

    #[test]
    fn cleartext_password_needs_tls_unless_tls_is_disabled() {
        let mut out = BytesMut::new();
        let prefer = target(UpstreamTlsMode::Prefer);
        let err = Login::new(&prefer, false)
            .step(&auth(auth_code::CLEARTEXT_PASSWORD, b""), &mut out)
            .unwrap_err();
        assert!(err.message.contains("without TLS"), "{}", err.message);
        assert!(out.is_empty(), "the password was not sent");
        Login::new(&prefer, true)
            .step(&auth(auth_code::CLEARTEXT_PASSWORD, b""), &mut out)
            .unwrap();
        let disable = target(UpstreamTlsMode::Disable);
        Login::new(&disable, false)
            .step(&auth(auth_code::CLEARTEXT_PASSWORD, b""), &mut out)
            .unwrap();
    }
}
