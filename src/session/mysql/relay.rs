//! The MySQL relay: commands from the client, read whole and shown to the inspector before
//! they are forwarded; answers from the database, relayed untouched as they arrive.
//!
//! The classic protocol is strictly request and answer: a client sends its next command only
//! once it has read the whole answer to the last one. So a refused command is answered by
//! Airlock alone (an ERR packet with the next sequence id) without the database ever seeing it,
//! and the session, and any open transaction, carries on exactly as after a statement the
//! database refused: MySQL does not abort a transaction on an error. The one part of an answer
//! Airlock reads is the statement id in the answer to COM_STMT_PREPARE, so that each
//! COM_STMT_EXECUTE can be judged as what was prepared.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::mpsc;

use crate::inspect::{MysqlInspector, Verdict};
use crate::net::stream::{Stream, read_more};
use crate::protocol::mysql::MyError;
use crate::protocol::mysql::command::{self, Command};
use crate::protocol::mysql::packet::{self, HEADER_LEN, Next};

/// One leg: its stream and what was read from it but not yet relayed.
pub struct End {
    pub stream: Stream,
    pub buf: BytesMut,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The client sent COM_QUIT.
    ClientQuit,
    /// The client closed its connection (or it broke) without COM_QUIT.
    ClientVanished,
    /// The client sent something Airlock cannot relay; it was told why.
    ClientRefused,
    /// The database closed the connection.
    UpstreamClosed,
}

/// Relays until one side is done.
pub async fn run(
    client: End,
    upstream: End,
    inspector: Box<dyn MysqlInspector>,
    max_packet_size: usize,
) -> Outcome {
    let inspector = Mutex::new(inspector);
    let awaiting_prepare = AtomicBool::new(false);
    let (mut client_r, mut client_w) = tokio::io::split(client.stream);
    let (mut upstream_r, mut upstream_w) = tokio::io::split(upstream.stream);
    let (tell_tx, tell_rx) = mpsc::unbounded_channel();
    let shared = Shared {
        inspector: &inspector,
        awaiting_prepare: &awaiting_prepare,
    };
    let to_upstream = commands(
        &mut client_r,
        &mut upstream_w,
        client.buf,
        tell_tx,
        &shared,
        max_packet_size,
    );
    let to_client = answers(
        &mut upstream_r,
        &mut client_w,
        upstream.buf,
        tell_rx,
        &shared,
    );
    tokio::pin!(to_upstream, to_client);
    tokio::select! {
        outcome = &mut to_upstream => match outcome {
            // Let the client hear why before the connection closes.
            Outcome::ClientRefused => {
                let _ = tokio::time::timeout(std::time::Duration::from_secs(2), to_client).await;
                outcome
            }
            _ => outcome,
        },
        outcome = &mut to_client => outcome,
    }
}

struct Shared<'a> {
    inspector: &'a Mutex<Box<dyn MysqlInspector>>,
    awaiting_prepare: &'a AtomicBool,
}

impl Shared<'_> {
    fn inspector(&self) -> std::sync::MutexGuard<'_, Box<dyn MysqlInspector>> {
        self.inspector.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Client to database: one logical packet is one command.
async fn commands(
    from: &mut ReadHalf<Stream>,
    to: &mut WriteHalf<Stream>,
    mut buf: BytesMut,
    tell: mpsc::UnboundedSender<Told>,
    shared: &Shared<'_>,
    max: usize,
) -> Outcome {
    loop {
        let next = match packet::logical(&buf, max) {
            Ok(n) => n,
            Err(e) => {
                let seq = packet::header(&buf).map_or(0, |h| h.seq).wrapping_add(1);
                let _ = tell.send(Told::Close(seq, MyError::packet_too_large(e.len, e.max)));
                return Outcome::ClientRefused;
            }
        };
        let logical = match next {
            Next::More { need } => {
                if read_more(from, &mut buf, need).await.is_err() {
                    return Outcome::ClientVanished;
                }
                continue;
            }
            Next::Packet(p) => p,
        };
        let reply_seq = logical.last_seq.wrapping_add(1);
        let wire_len = logical.wire_len;
        let verdict = match command::parse(&logical.payload) {
            Err(e) => {
                let _ = tell.send(Told::Close(reply_seq, MyError::bad_handshake(e)));
                return Outcome::ClientRefused;
            }
            Ok(Command::Other {
                code: command::COM_CHANGE_USER,
            }) => Verdict::Deny(unsupported(
                "COM_CHANGE_USER",
                "reconnect as the other user instead",
            )),
            Ok(Command::Other {
                code: command::COM_BINLOG_DUMP | command::COM_BINLOG_DUMP_GTID,
            }) => Verdict::Deny(unsupported(
                "replication connections",
                "connect replicas to the database directly",
            )),
            Ok(cmd) => {
                let verdict = shared.inspector().command(&cmd);
                if verdict == Verdict::Forward && matches!(cmd, Command::Prepare { .. }) {
                    shared.awaiting_prepare.store(true, Ordering::Release);
                }
                verdict
            }
        };
        let code = logical.payload.first().copied().unwrap_or(0);
        drop(logical);
        match verdict {
            Verdict::Forward => {
                if write_out(to, &buf[..wire_len]).await.is_err() {
                    return Outcome::UpstreamClosed;
                }
                buf.advance(wire_len);
                if code == command::COM_QUIT {
                    return Outcome::ClientQuit;
                }
            }
            Verdict::Deny(denial) => {
                let e = MyError::denied(&denial);
                tracing::info!(reason = %e.message, "MySQL command denied");
                buf.advance(wire_len);
                if command::expects_answer(code) {
                    let _ = tell.send(Told::Error(reply_seq, e));
                }
            }
        }
    }
}

fn unsupported(what: &str, fix: &str) -> crate::inspect::Denial {
    let e = MyError::unsupported_command(what, fix);
    crate::inspect::Denial {
        message: e.message,
        detail: None,
        hint: None,
    }
}

/// What the command pump asks the answer pump to tell the client.
enum Told {
    /// An ERR packet in place of the database's answer; the session goes on.
    Error(u8, MyError),
    /// An ERR packet, then the session ends.
    Close(u8, MyError),
}

/// Database to client, untouched; and Airlock's own ERR packets, which the command pump sends
/// only while the database owes the client nothing.
async fn answers(
    from: &mut ReadHalf<Stream>,
    to: &mut WriteHalf<Stream>,
    mut buf: BytesMut,
    mut told: mpsc::UnboundedReceiver<Told>,
    shared: &Shared<'_>,
) -> Outcome {
    let mut told_open = true;
    loop {
        if !buf.is_empty() {
            if shared.awaiting_prepare.load(Ordering::Acquire) {
                // The answer's first packet: 0x00 and the statement id, or an ERR.
                if buf.len() < HEADER_LEN + 5 {
                    let need = HEADER_LEN + 5;
                    if read_more(from, &mut buf, need).await.is_err() {
                        return Outcome::UpstreamClosed;
                    }
                    continue;
                }
                let id = match buf[HEADER_LEN] {
                    0x00 => Some(u32::from_le_bytes([
                        buf[HEADER_LEN + 1],
                        buf[HEADER_LEN + 2],
                        buf[HEADER_LEN + 3],
                        buf[HEADER_LEN + 4],
                    ])),
                    _ => None,
                };
                shared.awaiting_prepare.store(false, Ordering::Release);
                shared.inspector().prepared(id);
            }
            if write_out(to, &buf).await.is_err() {
                return Outcome::ClientVanished;
            }
            buf.clear();
        }
        tokio::select! {
            message = told.recv(), if told_open => match message {
                Some(Told::Error(seq, e)) => {
                    if send(to, seq, &e).await.is_err() {
                        return Outcome::ClientVanished;
                    }
                }
                Some(Told::Close(seq, e)) => {
                    let _ = send(to, seq, &e).await;
                    let _ = to.shutdown().await;
                    return Outcome::ClientRefused;
                }
                None => told_open = false,
            },
            read = read_more(from, &mut buf, 0) => {
                if read.is_err() {
                    return Outcome::UpstreamClosed;
                }
            }
        }
    }
}

async fn send(to: &mut WriteHalf<Stream>, seq: u8, e: &MyError) -> std::io::Result<()> {
    let mut out = BytesMut::new();
    e.encode(seq, &mut out);
    write_out(to, &out).await
}

async fn write_out(to: &mut WriteHalf<Stream>, bytes: &[u8]) -> std::io::Result<()> {
    to.write_all(bytes).await?;
    to.flush().await
}
