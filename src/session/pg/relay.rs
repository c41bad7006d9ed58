//! The relay: client and database traffic after start-up, one pump per direction, running
//! concurrently so that neither side can stall the other (a pipelining client writes while
//! the database writes back).
//!
//! Each pump splits its stream on tag and length and forwards the bytes untouched. Messages
//! the inspection seam reads (Query, Parse, Bind, Execute, FunctionCall from the client; and
//! RowDescription/DataRow when an inspector asks for rows) are held whole, up to
//! `max_message_size`; everything else (COPY data, large rows nobody inspects) streams through
//! in pieces, so memory stays bounded whatever the result or COPY size.

use std::sync::Mutex;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::oneshot;

use crate::inspect::{Inspector, Interest};
use crate::net::stream::Stream;
use crate::protocol::pg::PgError;
use crate::protocol::pg::backend::tag as be;
use crate::protocol::pg::frame::{self, HEADER_LEN};
use crate::protocol::pg::frontend::{self, tag as fe};

/// PostgreSQL's own limit for a message (PQ_LARGE_MESSAGE_LIMIT).
const PROTOCOL_MAX: usize = 0x3fff_ffff;
const READ_CHUNK: usize = 16 * 1024;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest message held whole for inspection.
    pub max_message_size: usize,
}

/// How a relayed session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The client sent Terminate.
    ClientTerminated,
    /// The client closed its connection (or it broke) without Terminate.
    ClientVanished,
    /// The client sent something Airlock refuses to forward; it was told why.
    ClientRefused,
    /// The database closed the connection.
    UpstreamClosed,
}

/// Relays until one side is done.
pub async fn run(
    client: Stream,
    upstream: Stream,
    inspector: Box<dyn Inspector>,
    limits: Limits,
) -> Outcome {
    let interest = inspector.interest();
    let inspector = Mutex::new(inspector);
    let (client_r, client_w) = tokio::io::split(client);
    let (upstream_r, upstream_w) = tokio::io::split(upstream);
    // The frontend pump never writes to the client: a refusal goes to the backend pump, which
    // owns the client's write half and sends it at the next message boundary.
    let (refuse_tx, refuse_rx) = oneshot::channel();
    let to_upstream = pump_frontend(
        client_r, upstream_w, refuse_tx, &inspector, interest, limits,
    );
    let to_client = pump_backend(
        upstream_r, client_w, refuse_rx, &inspector, interest, limits,
    );
    tokio::pin!(to_upstream, to_client);
    tokio::select! {
        outcome = &mut to_upstream => {
            if outcome != Outcome::ClientRefused {
                return outcome;
            }
            // Let the backend pump reach a boundary and deliver the refusal.
            let _ = tokio::time::timeout(REFUSAL_DRAIN, to_client).await;
            Outcome::ClientRefused
        }
        outcome = &mut to_client => outcome,
    }
}

/// How long a refused client's in-flight results may take to drain before the error is sent.
const REFUSAL_DRAIN: std::time::Duration = std::time::Duration::from_secs(10);

/// What the frontend pump must do with the message at the head of its buffer.
enum Step {
    /// Need `need` bytes in the buffer to go on.
    More { need: usize },
    /// `n` bytes can go upstream (a whole message, or the start of a streamed one).
    Forward { n: usize, terminate: bool },
}

/// Client to database.
async fn pump_frontend(
    mut from: ReadHalf<Stream>,
    mut to: WriteHalf<Stream>,
    refuse: oneshot::Sender<PgError>,
    inspector: &Mutex<Box<dyn Inspector>>,
    interest: Interest,
    limits: Limits,
) -> Outcome {
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    // Bytes of a streamed message still to pass through.
    let mut streaming = 0usize;
    loop {
        let mut ready = 0;
        let mut need = 0;
        let mut terminate = false;
        while ready < buf.len() {
            if streaming > 0 {
                let n = streaming.min(buf.len() - ready);
                ready += n;
                streaming -= n;
                continue;
            }
            match frontend_step(&buf[ready..], interest, inspector, limits) {
                Ok(Step::More { need: n }) => {
                    need = n;
                    break;
                }
                Ok(Step::Forward { n, terminate: t }) => {
                    let available = buf.len() - ready;
                    if n > available {
                        streaming = n - available;
                        ready = buf.len();
                    } else {
                        ready += n;
                    }
                    if t {
                        terminate = true;
                        break;
                    }
                }
                Err(e) => {
                    // Forward what was accepted before the bad message, then refuse.
                    let _ = write_out(&mut to, &buf[..ready]).await;
                    tracing::info!(code = e.code.0, reason = %e.message, "client message refused");
                    let _ = refuse.send(e);
                    return Outcome::ClientRefused;
                }
            }
        }
        if ready > 0 {
            if write_out(&mut to, &buf[..ready]).await.is_err() {
                return Outcome::UpstreamClosed;
            }
            buf.advance(ready);
        }
        if terminate {
            let _ = to.shutdown().await;
            return Outcome::ClientTerminated;
        }
        if read_more(&mut from, &mut buf, need).await.is_err() {
            return Outcome::ClientVanished;
        }
    }
}

/// Decides what to do with the message at the start of `buf`.
fn frontend_step(
    buf: &[u8],
    interest: Interest,
    inspector: &Mutex<Box<dyn Inspector>>,
    limits: Limits,
) -> Result<Step, PgError> {
    let Some(h) = frame::header(buf, PROTOCOL_MAX).map_err(PgError::protocol_violation)? else {
        return Ok(Step::More { need: HEADER_LEN });
    };
    match h.tag {
        fe::QUERY | fe::PARSE | fe::BIND | fe::EXECUTE | fe::FUNCTION_CALL => {
            if h.total_len > limits.max_message_size {
                return Err(PgError::message_too_large(
                    h.total_len,
                    limits.max_message_size,
                ));
            }
            if buf.len() < h.total_len {
                return Ok(Step::More { need: h.total_len });
            }
            let message = frontend::parse(h.tag, &buf[HEADER_LEN..h.total_len])
                .map_err(PgError::protocol_violation)?;
            if interest.statements {
                lock(inspector).frontend(&message);
            }
            Ok(Step::Forward {
                n: h.total_len,
                terminate: false,
            })
        }
        fe::TERMINATE => Ok(Step::Forward {
            n: h.total_len,
            terminate: true,
        }),
        _ => Ok(Step::Forward {
            n: h.total_len,
            terminate: false,
        }),
    }
}

/// Database to client.
async fn pump_backend(
    mut from: ReadHalf<Stream>,
    mut to: WriteHalf<Stream>,
    mut refusal: oneshot::Receiver<PgError>,
    inspector: &Mutex<Box<dyn Inspector>>,
    interest: Interest,
    limits: Limits,
) -> Outcome {
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut streaming = 0usize;
    // Whether the last message forwarded was an ErrorResponse (a FATAL before closing).
    let mut last_was_error = false;
    let mut refusal_pending = true;
    loop {
        let mut ready = 0;
        let mut need = 0;
        while ready < buf.len() {
            if streaming > 0 {
                let n = streaming.min(buf.len() - ready);
                ready += n;
                streaming -= n;
                continue;
            }
            let h = match frame::header(&buf[ready..], PROTOCOL_MAX) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(e) => {
                    tracing::error!(error = %e, "the database sent a malformed message; closing the session");
                    let _ = to.write_all(&buf[..ready]).await;
                    let _ = send_error(&mut to, &PgError::upstream_protocol(e)).await;
                    return Outcome::UpstreamClosed;
                }
            };
            let available = buf.len() - ready;
            if interest.rows && matches!(h.tag, be::DATA_ROW | be::ROW_DESCRIPTION) {
                if h.total_len <= available {
                    lock(inspector).backend(h.tag, &buf[ready + HEADER_LEN..ready + h.total_len]);
                } else if h.total_len <= limits.max_message_size {
                    need = h.total_len;
                    break;
                } else {
                    tracing::warn!(
                        len = h.total_len,
                        "row larger than max_message_size passed uninspected"
                    );
                }
            }
            last_was_error = h.tag == be::ERROR_RESPONSE;
            if h.total_len > available {
                streaming = h.total_len - available;
                ready = buf.len();
            } else {
                ready += h.total_len;
            }
        }
        if ready > 0 {
            if write_out(&mut to, &buf[..ready]).await.is_err() {
                return Outcome::ClientVanished;
            }
            buf.advance(ready);
        }
        let at_boundary = streaming == 0 && buf.is_empty();
        tokio::select! {
            biased;
            refused = &mut refusal, if refusal_pending && at_boundary => {
                match refused {
                    Ok(e) => {
                        let _ = send_error(&mut to, &e).await;
                        return Outcome::ClientRefused;
                    }
                    Err(_) => refusal_pending = false,
                }
            }
            read = read_more(&mut from, &mut buf, need) => {
                if read.is_err() {
                    if at_boundary && !last_was_error {
                        let _ = send_error(&mut to, &PgError::upstream_lost()).await;
                    }
                    return Outcome::UpstreamClosed;
                }
            }
        }
    }
}

async fn send_error<W: AsyncWrite + Unpin>(to: &mut W, e: &PgError) -> std::io::Result<()> {
    let mut out = BytesMut::new();
    e.encode(&mut out);
    write_out(to, &out).await
}

fn lock(inspector: &Mutex<Box<dyn Inspector>>) -> std::sync::MutexGuard<'_, Box<dyn Inspector>> {
    inspector.lock().unwrap_or_else(|p| p.into_inner())
}

async fn write_out<W: AsyncWrite + Unpin>(to: &mut W, bytes: &[u8]) -> std::io::Result<()> {
    to.write_all(bytes).await?;
    to.flush().await
}

/// Reads more bytes, making room for `need` bytes in all (a whole message the pump must hold).
/// EOF is an error here because every caller wanted more.
async fn read_more<R: AsyncRead + Unpin>(
    from: &mut R,
    buf: &mut BytesMut,
    need: usize,
) -> std::io::Result<()> {
    let want = need.saturating_sub(buf.len()).max(READ_CHUNK / 4);
    if buf.capacity() - buf.len() < want {
        buf.reserve(want.max(READ_CHUNK));
    }
    match from.read_buf(buf).await? {
        0 => Err(std::io::ErrorKind::UnexpectedEof.into()),
        _ => Ok(()),
    }
}
