//! The first stage of a session: encryption negotiation (SSLRequest, PostgreSQL 17 direct TLS
//! with ALPN, GSSENCRequest refused with 'N'), CancelRequest, and the StartupMessage checks that
//! come before authentication ([Start-up]).
//!
//! [Start-up]: https://www.postgresql.org/docs/current/protocol-flow.html#PROTOCOL-FLOW-START-UP

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use crate::net::stream::Stream;
use crate::net::tls::ALPN_POSTGRESQL;
use crate::protocol::pg::PgError;
use crate::protocol::pg::backend;
use crate::protocol::pg::startup::{StartupMessage, StartupPacket, TLS_HANDSHAKE_BYTE};
use crate::session::pg::io::read_startup_packet;
use crate::session::pg::{PgContext, SessionError};

pub enum Accepted {
    Session(Stream, StartupMessage),
    Cancel { pid: i32, secret: Vec<u8> },
    Closed,
}

/// Negotiates encryption and reads the first real packet.
pub async fn accept(ctx: &PgContext, tcp: TcpStream) -> Result<Accepted, SessionError> {
    let mut first = [0u8; 1];
    if tcp.peek(&mut first).await? == 0 {
        return Ok(Accepted::Closed);
    }
    if first[0] == TLS_HANDSHAKE_BYTE {
        // Direct TLS: the client starts with a ClientHello and must name ALPN "postgresql".
        let Some(tls) = &ctx.server_tls else {
            return Ok(Accepted::Closed);
        };
        let stream = TlsAcceptor::from(tls.config.clone()).accept(tcp).await?;
        if stream.get_ref().1.alpn_protocol() != Some(ALPN_POSTGRESQL) {
            tracing::debug!("direct TLS client did not negotiate ALPN postgresql; closed");
            return Ok(Accepted::Closed);
        }
        let mut stream = Stream::Tls(Box::new(stream.into()));
        return after_tls(&mut stream).await.map(|a| with_stream(a, stream));
    }

    let mut tcp = tcp;
    // At most one SSLRequest and one GSSENCRequest may come before the startup packet.
    for _ in 0..3 {
        match read_startup_packet(&mut tcp).await? {
            None => return Ok(Accepted::Closed),
            Some(StartupPacket::SslRequest) => {
                let Some(tls) = &ctx.server_tls else {
                    tcp.write_all(b"N").await?;
                    continue;
                };
                tcp.write_all(b"S").await?;
                let stream = TlsAcceptor::from(tls.config.clone()).accept(tcp).await?;
                let mut stream = Stream::Tls(Box::new(stream.into()));
                return after_tls(&mut stream).await.map(|a| with_stream(a, stream));
            }
            Some(StartupPacket::GssEncRequest) => tcp.write_all(b"N").await?,
            Some(StartupPacket::Cancel { pid, secret }) => {
                return Ok(Accepted::Cancel { pid, secret });
            }
            Some(StartupPacket::Startup(m)) => return Ok(Accepted::Session(Stream::Plain(tcp), m)),
        }
    }
    Err(PgError::protocol_violation("too many encryption requests").into())
}

enum AfterTls {
    Startup(StartupMessage),
    Cancel { pid: i32, secret: Vec<u8> },
    Closed,
}

fn with_stream(a: AfterTls, stream: Stream) -> Accepted {
    match a {
        AfterTls::Startup(m) => Accepted::Session(stream, m),
        AfterTls::Cancel { pid, secret } => Accepted::Cancel { pid, secret },
        AfterTls::Closed => Accepted::Closed,
    }
}

async fn after_tls(stream: &mut Stream) -> Result<AfterTls, SessionError> {
    match read_startup_packet(stream).await {
        Ok(None) => Ok(AfterTls::Closed),
        Ok(Some(StartupPacket::Startup(m))) => Ok(AfterTls::Startup(m)),
        Ok(Some(StartupPacket::Cancel { pid, secret })) => Ok(AfterTls::Cancel { pid, secret }),
        Ok(Some(_)) => {
            refuse(
                stream,
                PgError::protocol_violation("encryption requested inside TLS"),
            )
            .await;
            Ok(AfterTls::Closed)
        }
        Err(SessionError::Client(e)) => {
            refuse(stream, e).await;
            Ok(AfterTls::Closed)
        }
        Err(e) => Err(e),
    }
}

async fn refuse(stream: &mut Stream, e: PgError) {
    let mut out = BytesMut::new();
    e.encode(&mut out);
    let _ = stream.write_all(&out).await;
    let _ = stream.shutdown().await;
}

/// Checks a StartupMessage before authentication and returns the user name. A newer minor
/// version or `_pq_` options get a NegotiateProtocolVersion in `out`, as PostgreSQL sends.
pub fn check_startup(
    ctx: &PgContext,
    tls: bool,
    m: &StartupMessage,
    out: &mut BytesMut,
) -> Result<String, PgError> {
    if m.major != 3 {
        return Err(PgError::unsupported_protocol(m.major, m.minor));
    }
    if ctx.config.require_tls && !tls {
        return Err(PgError::tls_required());
    }
    if m.param("replication")
        .is_some_and(|v| !matches!(v, "false" | "off" | "no" | "0"))
    {
        return Err(PgError::replication_unsupported());
    }
    let options: Vec<String> = m.protocol_options().map(str::to_owned).collect();
    if m.minor > 0 || !options.is_empty() {
        backend::negotiate_protocol_version(options, out);
    }
    match m.param("user") {
        Some(u) if !u.is_empty() => Ok(u.to_owned()),
        _ => Err(PgError::no_user()),
    }
}
