//! Airlock's own login to the MySQL/MariaDB server: read its greeting, optionally switch to
//! TLS, answer with Airlock's credentials (mysql_native_password, or caching_sha2_password's
//! fast path and, over TLS, its full path), follow an auth switch, and stop at the OK.

use std::time::Duration;

use bytes::BytesMut;
use mysql_common::constants::CapabilityFlags;
use mysql_common::io::ParseBuf;
use mysql_common::packets::{AuthPlugin, HandshakePacket, HandshakeResponse, SslRequest};
use mysql_common::proto::{MyDeserialize, MySerialize};
use mysql_common::scramble::{scramble_native, scramble_sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::handshake::Client;
use crate::config::UpstreamTlsMode;
use crate::net::stream::{Stream, write_out};
use crate::protocol::mysql::MyError;
use crate::protocol::mysql::packet::{self, Next};
use crate::protocol::mysql::response::{Answer, Event, HEAD, Tracker};
use crate::session::pg::UpstreamTarget;

/// Handshake packets are small; anything larger is not a handshake.
const MAX_HANDSHAKE_PACKET: usize = 64 * 1024;
const COLLATION_UTF8MB4: u8 = 45;

/// What Airlock learned from the server's greeting.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    /// The version string as the server sends it (MariaDB's starts with "5.5.5-").
    pub version: Vec<u8>,
    pub capabilities: CapabilityFlags,
    pub collation: u8,
}

/// A logged-in connection to the database.
pub struct Connected {
    pub stream: Stream,
    pub info: ServerInfo,
    /// The payload of the server's final OK packet.
    pub ok: Vec<u8>,
    /// The server's id for this connection (for KILL).
    pub thread_id: u32,
}

/// Reads whole packets from a stream, keeping what it read past them.
#[derive(Default)]
pub struct PacketReader {
    buf: BytesMut,
}

impl PacketReader {
    /// The next logical packet's payload and the sequence id of its last piece.
    pub async fn next<S: AsyncRead + Unpin>(
        &mut self,
        stream: &mut S,
        max: usize,
    ) -> std::io::Result<(Vec<u8>, u8)> {
        self.read(stream, max, false).await
    }

    /// Like `next`, but never reads past the packet: what follows a client's SSLRequest is
    /// its TLS ClientHello, which belongs to the TLS handshake, not to this buffer.
    pub async fn next_exact<S: AsyncRead + Unpin>(
        &mut self,
        stream: &mut S,
        max: usize,
    ) -> std::io::Result<(Vec<u8>, u8)> {
        self.read(stream, max, true).await
    }

    async fn read<S: AsyncRead + Unpin>(
        &mut self,
        stream: &mut S,
        max: usize,
        exact: bool,
    ) -> std::io::Result<(Vec<u8>, u8)> {
        loop {
            let need = match packet::logical(&self.buf, max) {
                Ok(Next::Packet(p)) => {
                    let out = (p.payload.into_owned(), p.last_seq);
                    let _ = self.buf.split_to(p.wire_len);
                    return Ok(out);
                }
                Ok(Next::More { need }) => need,
                Err(e) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
            };
            let missing = need.saturating_sub(self.buf.len());
            let read = if exact {
                self.buf.reserve(missing);
                (&mut *stream)
                    .take(missing as u64)
                    .read_buf(&mut self.buf)
                    .await?
            } else {
                self.buf.reserve(missing.max(4096));
                stream.read_buf(&mut self.buf).await?
            };
            if read == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Bytes read past the last packet returned.
    pub fn into_leftover(self) -> BytesMut {
        self.buf
    }
}

impl From<BytesMut> for PacketReader {
    /// A reader that starts with bytes an earlier one read past its last packet.
    fn from(buf: BytesMut) -> PacketReader {
        PacketReader { buf }
    }
}

pub async fn write_packet<S: AsyncWrite + Unpin>(
    stream: &mut S,
    seq: u8,
    payload: &[u8],
) -> std::io::Result<()> {
    let mut out = BytesMut::with_capacity(payload.len() + 4);
    packet::put(&mut out, seq, payload);
    write_out(stream, &out).await
}

/// Connects and logs in as the client's login asked (its capabilities, database and
/// character set), or with Airlock's own capabilities for a probe.
pub async fn connect(
    target: &UpstreamTarget,
    client: Option<&Client>,
) -> Result<(Connected, BytesMut), MyError> {
    let (capabilities, database, collation) = match client {
        Some(c) => (c.capabilities, c.database.as_deref(), c.collation),
        None => (super::SUPPORTED, None, COLLATION_UTF8MB4),
    };
    let unreachable = |e: &dyn std::fmt::Display| MyError::upstream_unreachable(&target.address, e);
    let tcp = tokio::time::timeout(target.connect_timeout, TcpStream::connect(&target.address))
        .await
        .map_err(|_| unreachable(&"timed out"))?
        .map_err(|e| unreachable(&e))?;
    let _ = tcp.set_nodelay(true);
    let mut stream = Stream::Plain(tcp);
    let mut reader = PacketReader::default();
    let (greeting, _) = reader
        .next(&mut stream, MAX_HANDSHAKE_PACKET)
        .await
        .map_err(|e| unreachable(&e))?;
    if greeting.first() == Some(&0xff) {
        return Err(MyError::upstream_login_refused(&err_message(&greeting)));
    }
    let hello = HandshakePacket::deserialize((), &mut ParseBuf(&greeting))
        .map_err(MyError::upstream_protocol)?;
    let info = ServerInfo {
        version: hello.server_version_ref().to_vec(),
        capabilities: hello.capabilities(),
        collation: hello.default_collation(),
    };
    let thread_id = hello.connection_id();
    let mut nonce = hello.nonce();
    let server_plugin = hello
        .auth_plugin()
        .map(|p| p.into_owned())
        .unwrap_or(AuthPlugin::MysqlNativePassword);

    let mut caps = (capabilities & info.capabilities)
        | CapabilityFlags::CLIENT_PROTOCOL_41
        | CapabilityFlags::CLIENT_SECURE_CONNECTION
        | CapabilityFlags::CLIENT_PLUGIN_AUTH;
    // Airlock sends no connection attributes of its own; the TLS request must announce exactly
    // the capabilities of the login that follows it.
    caps.remove(
        CapabilityFlags::CLIENT_SSL
            | CapabilityFlags::CLIENT_CONNECT_WITH_DB
            | CapabilityFlags::CLIENT_CONNECT_ATTRS,
    );
    if database.is_some() {
        caps |= CapabilityFlags::CLIENT_CONNECT_WITH_DB;
    }
    let mut seq = 1u8;
    let server_tls = info.capabilities.contains(CapabilityFlags::CLIENT_SSL);
    match (&target.tls.config, target.tls.mode) {
        (Some(config), _) if server_tls => {
            caps |= CapabilityFlags::CLIENT_SSL;
            let mut req = Vec::new();
            SslRequest::new(caps, packet::MAX_CHUNK as u32, collation).serialize(&mut req);
            write_packet(&mut stream, seq, &req)
                .await
                .map_err(|e| unreachable(&e))?;
            seq += 1;
            let Stream::Plain(tcp) = stream else {
                unreachable!("TLS starts once")
            };
            let tls = TlsConnector::from(config.clone())
                .connect(target.tls.server_name.clone(), tcp)
                .await
                .map_err(|e| unreachable(&format!("TLS: {e}")))?;
            stream = Stream::Tls(Box::new(tls.into()));
        }
        (_, UpstreamTlsMode::Require | UpstreamTlsMode::VerifyFull) => {
            return Err(unreachable(
                &"the server does not offer TLS and mysql.upstream.tls requires it",
            ));
        }
        _ => {}
    }
    let password = target
        .password
        .as_ref()
        .map(|p| p.0.as_bytes())
        .unwrap_or(b"");
    let (mut plugin, data) = answer(&server_plugin, &nonce, password)?;
    let response = HandshakeResponse::new(
        Some(data),
        (0, 0, 0),
        Some(target.user.as_bytes()),
        database,
        Some(plugin.clone()),
        caps,
        None,
        packet::MAX_CHUNK as u32,
    );
    let mut out = Vec::new();
    response.serialize(&mut out);
    // mysql_common picks the character set from a server version; the client's own goes in
    // its place (protocol 4.1: capabilities, max packet size, then this byte).
    out[8] = collation;
    write_packet(&mut stream, seq, &out)
        .await
        .map_err(|e| unreachable(&e))?;

    loop {
        let (reply, last) = reader
            .next(&mut stream, MAX_HANDSHAKE_PACKET)
            .await
            .map_err(|e| unreachable(&e))?;
        seq = last.wrapping_add(1);
        match reply.first() {
            Some(0x00) => {
                let leftover = reader.into_leftover();
                let connected = Connected {
                    stream,
                    info,
                    ok: reply,
                    thread_id,
                };
                return Ok((connected, leftover));
            }
            Some(0xff) => return Err(MyError::upstream_login_refused(&err_message(&reply))),
            // Auth switch: a plugin name, then its nonce.
            Some(0xfe) => {
                let body = &reply[1..];
                let end = body.iter().position(|&b| b == 0).unwrap_or(body.len());
                let name = &body[..end];
                nonce = body.get(end + 1..).unwrap_or(&[]).to_vec();
                if nonce.last() == Some(&0) {
                    nonce.pop();
                }
                let switched = AuthPlugin::from_bytes(name).into_owned();
                let (p, data) = answer(&switched, &nonce, password)?;
                plugin = p;
                write_packet(&mut stream, seq, &data)
                    .await
                    .map_err(|e| unreachable(&e))?;
            }
            // caching_sha2_password: 3 = fast path accepted (OK follows), 4 = send the password.
            Some(0x01) if plugin == AuthPlugin::CachingSha2Password => match reply.get(1) {
                Some(0x03) => {}
                Some(0x04) if stream.is_tls() => {
                    let mut clear = password.to_vec();
                    clear.push(0);
                    write_packet(&mut stream, seq, &clear)
                        .await
                        .map_err(|e| unreachable(&e))?;
                }
                Some(0x04) => {
                    return Err(MyError::upstream_login_refused(
                        "caching_sha2_password needs the password sent over TLS for this first \
                         login; set mysql.upstream.tls",
                    ));
                }
                _ => return Err(MyError::upstream_protocol("unexpected auth data")),
            },
            _ => return Err(MyError::upstream_protocol("unexpected packet during login")),
        }
    }
}

/// The auth response for `plugin`: an empty password sends nothing.
fn answer(
    plugin: &AuthPlugin<'_>,
    nonce: &[u8],
    password: &[u8],
) -> Result<(AuthPlugin<'static>, Vec<u8>), MyError> {
    let data = match plugin {
        AuthPlugin::MysqlNativePassword => scramble_native(nonce, password)
            .map(|s| s.to_vec())
            .unwrap_or_default(),
        AuthPlugin::CachingSha2Password => scramble_sha256(nonce, password)
            .map(|s| s.to_vec())
            .unwrap_or_default(),
        other => {
            return Err(MyError::upstream_login_refused(&format!(
                "the server asks for the {} plugin, which Airlock does not speak",
                String::from_utf8_lossy(other.as_bytes())
            )));
        }
    };
    Ok((plugin.clone().into_owned(), data))
}

/// The message of an ERR packet payload.
pub fn err_message(payload: &[u8]) -> String {
    let rest = payload.get(3..).unwrap_or(&[]);
    let rest = rest
        .strip_prefix(b"#")
        .map(|r| r.get(5..).unwrap_or(&[]))
        .unwrap_or(rest);
    String::from_utf8_lossy(rest).into_owned()
}

/// Stops the statement running on database thread `thread`, from a connection of its own (as
/// the mysql client does on Ctrl-C). Best effort: failures are logged.
pub async fn kill_query(target: &UpstreamTarget, thread: u32) {
    let attempt = async {
        let (mut c, _) = connect(target, None).await?;
        let mut sql = vec![crate::protocol::mysql::command::COM_QUERY];
        sql.extend_from_slice(format!("KILL QUERY {thread}").as_bytes());
        let io = |e: std::io::Error| MyError::upstream_unreachable(&target.address, e);
        write_packet(&mut c.stream, 0, &sql).await.map_err(io)?;
        let mut reader = PacketReader::default();
        let (answer, _) = reader
            .next(&mut c.stream, MAX_HANDSHAKE_PACKET)
            .await
            .map_err(io)?;
        let _ = write_packet(
            &mut c.stream,
            0,
            &[crate::protocol::mysql::command::COM_QUIT],
        )
        .await;
        match answer.first() {
            Some(0xff) => Err(MyError::upstream_protocol(err_message(&answer))),
            _ => Ok(()),
        }
    };
    match tokio::time::timeout(Duration::from_secs(5), attempt).await {
        Ok(Ok(())) => tracing::info!(thread, "stopped the statement of a client that left"),
        Ok(Err(e)) => {
            tracing::warn!(thread, reason = %e, "could not stop a departed client's statement")
        }
        Err(_) => tracing::warn!(thread, "timed out stopping a departed client's statement"),
    }
}

/// The session's sql_mode, asked of the server right after login: its global default, or
/// what `init_connect` made it. The server tells no client unasked, and under ANSI_QUOTES it
/// reads text otherwise than Airlock does (see [`crate::sql::mysql_mode_quotes_names`]).
/// `deprecate_eof`: whether the login negotiated CLIENT_DEPRECATE_EOF.
pub async fn session_sql_mode(
    stream: &mut Stream,
    reader: &mut PacketReader,
    deprecate_eof: bool,
) -> Result<String, MyError> {
    let mut query = vec![crate::protocol::mysql::command::COM_QUERY];
    query.extend_from_slice(b"SELECT @@SESSION.sql_mode");
    let lost = |e: std::io::Error| MyError::upstream_protocol(format!("reading sql_mode: {e}"));
    write_packet(stream, 0, &query).await.map_err(lost)?;
    let mut answer = Tracker::new(deprecate_eof);
    answer.expect(Answer::Results);
    let mut mode = None;
    // A column count, its definition, an EOF, the row and the end: a few packets.
    for _ in 0..16 {
        let (payload, _) = reader
            .next(stream, MAX_HANDSHAKE_PACKET)
            .await
            .map_err(lost)?;
        match answer.packet(payload.len(), &payload[..payload.len().min(HEAD)]) {
            Some(Event::Row { .. }) => {
                let value = ParseBuf(&payload).checked_eat_lenenc_str();
                mode = value.map(|v| String::from_utf8_lossy(v).into_owned());
            }
            Some(Event::Error) => {
                let why = format!(
                    "the server refused SELECT @@SESSION.sql_mode: {}",
                    err_message(&payload)
                );
                return Err(MyError::upstream_protocol(why));
            }
            Some(Event::Unexpected) => {
                return Err(MyError::upstream_protocol(
                    "an unexpected answer to SELECT @@SESSION.sql_mode",
                ));
            }
            _ => {}
        }
        if answer.is_idle() {
            return mode.ok_or_else(|| {
                MyError::upstream_protocol("no sql_mode in the answer to SELECT @@SESSION.sql_mode")
            });
        }
    }
    Err(MyError::upstream_protocol(
        "the answer to SELECT @@SESSION.sql_mode did not end",
    ))
}

/// Logs in with Airlock's own capabilities and says goodbye: how the listener learns the
/// server's version and capabilities without leaving an aborted connection behind.
pub async fn probe(target: &UpstreamTarget) -> Result<ServerInfo, MyError> {
    let (mut connected, _) = connect(target, None).await?;
    let _ = write_packet(
        &mut connected.stream,
        0,
        &[crate::protocol::mysql::command::COM_QUIT],
    )
    .await;
    let _ = tokio::time::timeout(Duration::from_secs(1), connected.stream.shutdown()).await;
    Ok(connected.info)
}
