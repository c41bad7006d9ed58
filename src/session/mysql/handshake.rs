//! The client's side of the start-up: Airlock's greeting (the server's version, Airlock's own
//! nonce and connection id, the capabilities both ends can honour), TLS on request, and the
//! client's login checked against the config's users.

use std::net::SocketAddr;

use mysql_common::constants::{CapabilityFlags, StatusFlags};
use mysql_common::io::ParseBuf;
use mysql_common::packets::{HandshakePacket, HandshakeResponse};
use mysql_common::proto::{MyDeserialize, MySerialize};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use super::MyContext;
use super::upstream::{PacketReader, ServerInfo, write_packet};
use crate::auth::mysql::{NativeHash, Sha2Hash};
use crate::net::stream::Stream;
use crate::protocol::mysql::MyError;

const NATIVE: &[u8] = b"mysql_native_password";
const SHA2: &[u8] = b"caching_sha2_password";
const MAX_LOGIN_PACKET: usize = 64 * 1024;

/// A client that logged in.
pub struct LoggedIn {
    pub stream: Stream,
    pub reader: PacketReader,
    pub client: Client,
    /// Sequence id for Airlock's next packet to the client (the OK).
    pub seq: u8,
}

/// What the client's login asked for, which Airlock's own login to the database repeats.
pub struct Client {
    pub user: String,
    pub database: Option<Vec<u8>>,
    pub capabilities: CapabilityFlags,
    /// The character set and collation of the connection.
    pub collation: u8,
}

/// Why a login did not finish: an error to send (with its sequence id) or a vanished client.
pub enum Failed {
    Tell(Box<Stream>, u8, MyError),
    Gone,
}

fn nonce() -> [u8; 20] {
    // Printable and never NUL: the nonce travels NUL-terminated.
    let mut out = [0u8; 20];
    for b in &mut out {
        *b = rand::random_range(0x21..0x7f);
    }
    out
}

/// Greets the client, upgrades to TLS if asked, and checks its login.
pub async fn login(
    ctx: &MyContext,
    info: &ServerInfo,
    tcp: TcpStream,
    connection_id: u32,
    client_addr: SocketAddr,
) -> Result<LoggedIn, Failed> {
    let mut stream = Stream::Plain(tcp);
    let offered = (super::SUPPORTED & info.capabilities)
        | CapabilityFlags::CLIENT_PROTOCOL_41
        | CapabilityFlags::CLIENT_SECURE_CONNECTION
        | CapabilityFlags::CLIENT_PLUGIN_AUTH
        | CapabilityFlags::CLIENT_CONNECT_WITH_DB;
    let mut offered = offered;
    offered.set(CapabilityFlags::CLIENT_SSL, ctx.server_tls.is_some());
    offered.set(
        CapabilityFlags::CLIENT_LOCAL_FILES,
        ctx.config.allow_local_infile
            && info
                .capabilities
                .contains(CapabilityFlags::CLIENT_LOCAL_FILES),
    );
    let nonce = nonce();
    // The second part travels NUL-terminated (13 bytes), as servers send it.
    let mut part2 = nonce[8..].to_vec();
    part2.push(0);
    let greeting = HandshakePacket::new(
        10,
        info.version.as_slice(),
        connection_id,
        nonce[..8].try_into().expect("8 bytes"),
        Some(part2),
        offered,
        info.collation,
        StatusFlags::SERVER_STATUS_AUTOCOMMIT,
        Some(NATIVE),
    );
    let mut out = Vec::new();
    greeting.serialize(&mut out);
    write_packet(&mut stream, 0, &out)
        .await
        .map_err(|_| Failed::Gone)?;

    let mut reader = PacketReader::default();
    let (mut payload, mut seq) = reader
        .next_exact(&mut stream, MAX_LOGIN_PACKET)
        .await
        .map_err(|_| Failed::Gone)?;
    let tell = |stream: Stream, seq: u8, e: MyError| Failed::Tell(Box::new(stream), seq, e);
    // An SSLRequest is the first 32 bytes of a HandshakeResponse with CLIENT_SSL set.
    if payload.len() == 32 && caps_of(&payload).contains(CapabilityFlags::CLIENT_SSL) {
        let Some(tls) = &ctx.server_tls else {
            return Err(tell(
                stream,
                seq + 1,
                MyError::bad_handshake("TLS was not offered"),
            ));
        };
        let Stream::Plain(tcp) = stream else {
            unreachable!("TLS starts once")
        };
        let tls = TlsAcceptor::from(tls.clone())
            .accept(tcp)
            .await
            .map_err(|_| Failed::Gone)?;
        stream = Stream::Tls(Box::new(tls.into()));
        reader = PacketReader::default();
        (payload, seq) = reader
            .next(&mut stream, MAX_LOGIN_PACKET)
            .await
            .map_err(|_| Failed::Gone)?;
    }
    if ctx.config.require_tls && !stream.is_tls() {
        return Err(tell(stream, seq + 1, MyError::tls_required()));
    }
    let response = match HandshakeResponse::deserialize((), &mut ParseBuf(&payload)) {
        Ok(r) => r,
        Err(e) => return Err(tell(stream, seq + 1, MyError::bad_handshake(e))),
    };
    let capabilities = response.capabilities() & offered;
    if !capabilities.contains(CapabilityFlags::CLIENT_PROTOCOL_41) {
        return Err(tell(
            stream,
            seq + 1,
            MyError::bad_handshake("the client does not speak protocol 4.1"),
        ));
    }
    let client = Client {
        user: String::from_utf8_lossy(response.user()).into_owned(),
        database: response.db_name().map(<[u8]>::to_vec),
        capabilities,
        collation: response.collation(),
    };
    let user = client.user.clone();
    let plugin = response
        .auth_plugin()
        .map(|p| p.as_bytes().to_vec())
        .unwrap_or_else(|| NATIVE.to_vec());
    let host = client_addr.ip().to_string();
    let known = ctx.users.get(&user);
    // One answer for a wrong password, an unknown user and a first caching_sha2 login over
    // plaintext, so that none of them tells which users exist.
    let tls = stream.is_tls();
    let denied = || MyError::access_denied(&user, &host, tls);
    seq = seq.wrapping_add(1);

    // mysql_native_password, if the client answered with it and the user has a hash. An
    // unknown user takes the path most configured users take (their shape, as the decoy
    // SCRAM verifiers have), so the exchange itself does not tell either.
    let native = match known {
        Some(u) => u.native.clone(),
        None if ctx.decoy_native => Some(NativeHash::from_password(&ctx.decoy_secret(&user))),
        None => None,
    };
    if plugin == NATIVE
        && let Some(hash) = native
    {
        let ok = hash.check(&nonce, response.scramble_buf()) && known.is_some();
        return if ok {
            Ok(done(stream, reader, client, seq))
        } else {
            Err(tell(stream, seq, denied()))
        };
    }
    if plugin != NATIVE && plugin != SHA2 {
        let name = String::from_utf8_lossy(&plugin).into_owned();
        return Err(tell(stream, seq, MyError::unsupported_auth(&name)));
    }
    // caching_sha2_password: switch to it unless the client already answered with it.
    let (nonce, scramble) = if plugin == SHA2 {
        (nonce, response.scramble_buf().to_vec())
    } else {
        let fresh = super::handshake::nonce();
        let mut switch = vec![0xfe];
        switch.extend_from_slice(SHA2);
        switch.push(0);
        switch.extend_from_slice(&fresh);
        switch.push(0);
        write_packet(&mut stream, seq, &switch)
            .await
            .map_err(|_| Failed::Gone)?;
        let (answer, last) = reader
            .next(&mut stream, MAX_LOGIN_PACKET)
            .await
            .map_err(|_| Failed::Gone)?;
        seq = last.wrapping_add(1);
        (fresh, answer)
    };
    let cached = ctx.sha2_cache(&user);
    if let Some(hash) = &cached
        && hash.check(&nonce, &scramble)
    {
        write_packet(&mut stream, seq, &[0x01, 0x03])
            .await
            .map_err(|_| Failed::Gone)?;
        return Ok(done(stream, reader, client, seq + 1));
    }
    if scramble.is_empty() {
        // An empty answer is an empty password, which no configured user has.
        return Err(tell(stream, seq, denied()));
    }
    // Full authentication: the password itself, only over TLS.
    if !stream.is_tls() {
        return Err(tell(stream, seq, denied()));
    }
    write_packet(&mut stream, seq, &[0x01, 0x04])
        .await
        .map_err(|_| Failed::Gone)?;
    let (clear, last) = reader
        .next(&mut stream, MAX_LOGIN_PACKET)
        .await
        .map_err(|_| Failed::Gone)?;
    seq = last.wrapping_add(1);
    let password = clear.strip_suffix(&[0]).unwrap_or(&clear).to_vec();
    let verifier = known
        .map(|u| u.scram.clone())
        .unwrap_or_else(|| ctx.decoy.for_user(&user));
    let (ok, password) = tokio::task::spawn_blocking(move || {
        let ok = std::str::from_utf8(&password)
            .map(|p| verifier.matches_password(p))
            .unwrap_or(false);
        (ok, password)
    })
    .await
    .map_err(|_| Failed::Gone)?;
    if !(ok && known.is_some()) {
        return Err(tell(stream, seq, denied()));
    }
    ctx.remember_sha2(&user, Sha2Hash::from_password(&password));
    Ok(done(stream, reader, client, seq))
}

fn done(stream: Stream, reader: PacketReader, client: Client, seq: u8) -> LoggedIn {
    LoggedIn {
        stream,
        reader,
        client,
        seq,
    }
}

fn caps_of(payload: &[u8]) -> CapabilityFlags {
    let b = &payload[..4];
    CapabilityFlags::from_bits_truncate(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}
