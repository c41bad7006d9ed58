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
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};

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
/// A Terminate message.
const TERMINATE: &[u8] = &[fe::TERMINATE, 0, 0, 0, 4];

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

/// Relays until one side is done. With `keep_upstream`, a client's Terminate is not forwarded
/// and, if the database session is idle at that moment (every Query, Sync and FunctionCall
/// answered with ReadyForQuery 'I', nothing half-read), the upstream stream is handed back
/// for reuse.
pub async fn run(
    ends: Ends,
    inspector: Box<dyn Inspector>,
    limits: Limits,
    keep_upstream: bool,
) -> (Outcome, Option<Stream>) {
    let interest = inspector.interest();
    let inspector = Mutex::new(inspector);
    let (mut client_r, mut client_w) = tokio::io::split(ends.client);
    let (mut upstream_r, mut upstream_w) = tokio::io::split(ends.upstream);
    let sync = SyncState::default();
    let frontend = Pump {
        buf: ends.client_buf,
        streaming: 0,
    };
    let mut backend = Pump {
        buf: ends.upstream_buf,
        streaming: 0,
    };
    let outcome = {
        // The frontend pump never writes to the client: a refusal goes to the backend pump,
        // which owns the client's write half and sends it at the next message boundary.
        let (refuse_tx, refuse_rx) = oneshot::channel();
        let ctx = PumpCtx {
            inspector: &inspector,
            interest,
            limits,
            sync: &sync,
        };
        let to_upstream = pump_frontend(
            &mut client_r,
            &mut upstream_w,
            refuse_tx,
            &ctx,
            frontend,
            keep_upstream,
        );
        let to_client = pump_backend(
            &mut upstream_r,
            &mut client_w,
            refuse_rx,
            &ctx,
            &mut backend,
        );
        tokio::pin!(to_upstream, to_client);
        tokio::select! {
            (outcome, refusal) = &mut to_upstream => match outcome {
                // Let the backend pump relay the answers to what was sent before the refused
                // message, then deliver the refusal at a message boundary.
                Outcome::ClientRefused => match tokio::time::timeout(REFUSAL_DRAIN, to_client).await {
                    Ok(_) => (outcome, None),
                    Err(_) => (outcome, refusal),
                },
                // The database stopped reading: relay what it said last (often a FATAL).
                Outcome::UpstreamClosed => {
                    let _ = tokio::time::timeout(UPSTREAM_DRAIN, to_client).await;
                    (outcome, None)
                }
                _ => (outcome, None),
            },
            outcome = &mut to_client => (outcome, None),
        }
    };
    let (outcome, undelivered) = outcome;
    if let Some(e) = undelivered {
        // The database never caught up; say why at least, if a message boundary allows.
        if backend.is_clear() {
            let _ = send_error(&mut client_w, &e).await;
        }
    }
    let reusable = keep_upstream
        && outcome == Outcome::ClientTerminated
        && backend.is_clear()
        && sync.is_idle();
    if reusable {
        return (outcome, Some(upstream_r.unsplit(upstream_w)));
    }
    if keep_upstream && outcome == Outcome::ClientTerminated {
        // Not reusable after all: say goodbye on the client's behalf.
        let _ = write_out(&mut upstream_w, TERMINATE).await;
    }
    (outcome, None)
}

/// The two connections and what was read from each during start-up but not yet relayed.
pub struct Ends {
    pub client: Stream,
    pub client_buf: BytesMut,
    pub upstream: Stream,
    pub upstream_buf: BytesMut,
}

/// How long a refused client's in-flight results may take to drain before the error is sent.
const REFUSAL_DRAIN: std::time::Duration = std::time::Duration::from_secs(10);
/// How long the database's last messages may take to arrive once it stops reading.
const UPSTREAM_DRAIN: std::time::Duration = std::time::Duration::from_secs(2);

/// A refusal for the backend pump to deliver once `after` sync points have been answered.
struct Refusal {
    error: PgError,
    after: u64,
}

/// What both pumps share.
struct PumpCtx<'a> {
    inspector: &'a Mutex<Box<dyn Inspector>>,
    interest: Interest,
    limits: Limits,
    sync: &'a SyncState,
}

/// Whether the database owes the client anything: sync points sent (Query, Sync,
/// FunctionCall) against ReadyForQuery received, and the last transaction status. It is a
/// conservative first check (a Sync the server ignores during COPY makes a session look busy);
/// the reset before reuse is what proves a session idle.
struct SyncState {
    sent: AtomicU64,
    answered: AtomicU64,
    /// An extended-protocol message was sent since the last sync point.
    unsynced: AtomicBool,
    last_status: AtomicU8,
}

impl Default for SyncState {
    fn default() -> Self {
        SyncState {
            sent: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            unsynced: AtomicBool::new(false),
            // Start-up always ends with ReadyForQuery 'I'.
            last_status: AtomicU8::new(b'I'),
        }
    }
}

impl SyncState {
    fn is_idle(&self) -> bool {
        self.sent.load(Ordering::Acquire) == self.answered.load(Ordering::Acquire)
            && !self.unsynced.load(Ordering::Acquire)
            && self.last_status.load(Ordering::Acquire) == b'I'
    }
}

/// A pump's read buffer and the bytes of a streamed message still to pass through.
#[derive(Default)]
struct Pump {
    buf: BytesMut,
    streaming: usize,
}

impl Pump {
    /// Counts the message of `len` bytes at `ready` as forwarded: whole if it is all in the
    /// buffer, otherwise what is there now and the rest as it arrives. Returns the new `ready`.
    fn forward(&mut self, ready: usize, len: usize) -> usize {
        let available = self.buf.len() - ready;
        if len > available {
            self.streaming = len - available;
            self.buf.len()
        } else {
            ready + len
        }
    }

    /// Counts the next bytes of a message being streamed as forwarded.
    fn pass_streamed(&mut self, ready: usize) -> usize {
        let n = self.streaming.min(self.buf.len() - ready);
        self.streaming -= n;
        ready + n
    }

    /// Nothing read and not yet forwarded, no message half through.
    fn is_clear(&self) -> bool {
        self.buf.is_empty() && self.streaming == 0
    }
}

/// What the frontend pump must do with the message at the head of its buffer.
enum Step {
    /// Need `need` bytes in the buffer to go on.
    More { need: usize },
    /// `n` bytes can go upstream (a whole message, or the start of a streamed one).
    Forward { n: usize },
    /// Terminate: `n` bytes.
    Terminate { n: usize },
}

/// Client to database.
async fn pump_frontend(
    from: &mut ReadHalf<Stream>,
    to: &mut WriteHalf<Stream>,
    refuse: oneshot::Sender<Refusal>,
    ctx: &PumpCtx<'_>,
    mut pump: Pump,
    keep_upstream: bool,
) -> (Outcome, Option<PgError>) {
    pump.buf.reserve(READ_CHUNK);
    loop {
        let mut ready = 0;
        let mut need = 0;
        let mut terminate = false;
        while ready < pump.buf.len() {
            if pump.streaming > 0 {
                ready = pump.pass_streamed(ready);
                continue;
            }
            match frontend_step(&pump.buf[ready..], ctx) {
                Ok(Step::More { need: n }) => {
                    need = n;
                    break;
                }
                Ok(Step::Forward { n }) => ready = pump.forward(ready, n),
                Ok(Step::Terminate { n }) => {
                    terminate = true;
                    if !keep_upstream {
                        ready += n;
                    }
                    break;
                }
                Err(e) => {
                    // Forward what was accepted before the bad message, then refuse.
                    let _ = write_out(to, &pump.buf[..ready]).await;
                    tracing::info!(code = e.code.0, reason = %e.message, "client message refused");
                    let after = ctx.sync.sent.load(Ordering::Acquire);
                    let _ = refuse.send(Refusal {
                        error: e.clone(),
                        after,
                    });
                    return (Outcome::ClientRefused, Some(e));
                }
            }
        }
        if ready > 0 {
            if write_out(to, &pump.buf[..ready]).await.is_err() {
                return (Outcome::UpstreamClosed, None);
            }
            pump.buf.advance(ready);
        }
        if terminate {
            if !keep_upstream {
                let _ = to.shutdown().await;
            }
            return (Outcome::ClientTerminated, None);
        }
        if read_more(from, &mut pump.buf, need).await.is_err() {
            return (Outcome::ClientVanished, None);
        }
    }
}

/// Decides what to do with the message at the start of `buf`.
fn frontend_step(buf: &[u8], ctx: &PumpCtx<'_>) -> Result<Step, PgError> {
    let Some(h) = frame::header(buf, PROTOCOL_MAX).map_err(PgError::protocol_violation)? else {
        return Ok(Step::More { need: HEADER_LEN });
    };
    match h.tag {
        fe::QUERY | fe::PARSE | fe::BIND | fe::EXECUTE | fe::FUNCTION_CALL => {
            if h.total_len > ctx.limits.max_message_size {
                return Err(PgError::message_too_large(
                    h.total_len,
                    ctx.limits.max_message_size,
                ));
            }
            if buf.len() < h.total_len {
                return Ok(Step::More { need: h.total_len });
            }
            let message = frontend::parse(h.tag, &buf[HEADER_LEN..h.total_len])
                .map_err(PgError::protocol_violation)?;
            if ctx.interest.statements {
                lock(ctx.inspector).frontend(&message);
            }
            ctx.sync.note_sent(h.tag);
            Ok(Step::Forward { n: h.total_len })
        }
        fe::TERMINATE if h.body_len() == 0 => Ok(Step::Terminate { n: h.total_len }),
        fe::TERMINATE => Err(PgError::protocol_violation("Terminate message with a body")),
        tag => {
            ctx.sync.note_sent(tag);
            Ok(Step::Forward { n: h.total_len })
        }
    }
}

impl SyncState {
    /// Counts a frontend message on its way upstream.
    fn note_sent(&self, tag: u8) {
        match tag {
            fe::QUERY | fe::SYNC | fe::FUNCTION_CALL => {
                self.sent.fetch_add(1, Ordering::AcqRel);
                self.unsynced.store(false, Ordering::Release);
            }
            fe::PARSE | fe::BIND | fe::EXECUTE | fe::DESCRIBE | fe::CLOSE | fe::FLUSH => {
                self.unsynced.store(true, Ordering::Release);
            }
            // COPY data belongs to a Query already counted.
            _ => {}
        }
    }
}

/// Database to client.
async fn pump_backend(
    from: &mut ReadHalf<Stream>,
    to: &mut WriteHalf<Stream>,
    mut refusal: oneshot::Receiver<Refusal>,
    ctx: &PumpCtx<'_>,
    pump: &mut Pump,
) -> Outcome {
    pump.buf.reserve(READ_CHUNK);
    // Whether the last message forwarded was an ErrorResponse (a FATAL before closing).
    let mut last_was_error = false;
    let mut refusal_open = true;
    let mut pending: Option<Refusal> = None;
    loop {
        let mut ready = 0;
        let mut need = 0;
        while ready < pump.buf.len() {
            if pump.streaming > 0 {
                ready = pump.pass_streamed(ready);
                continue;
            }
            let h = match frame::header(&pump.buf[ready..], PROTOCOL_MAX) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(e) => {
                    tracing::error!(error = %e, "the database sent a malformed message; closing the session");
                    let _ = to.write_all(&pump.buf[..ready]).await;
                    let _ = send_error(to, &PgError::upstream_protocol(e)).await;
                    pump.buf.clear();
                    return Outcome::UpstreamClosed;
                }
            };
            let whole = h.total_len <= pump.buf.len() - ready;
            if ctx.interest.rows && matches!(h.tag, be::DATA_ROW | be::ROW_DESCRIPTION) {
                if whole {
                    lock(ctx.inspector)
                        .backend(h.tag, &pump.buf[ready + HEADER_LEN..ready + h.total_len]);
                } else if h.total_len <= ctx.limits.max_message_size {
                    need = h.total_len;
                    break;
                } else {
                    // Inspection fails closed: a row too large to hold is not passed unread.
                    let _ = write_out(to, &pump.buf[..ready]).await;
                    let _ = send_error(
                        to,
                        &PgError::row_too_large(h.total_len, ctx.limits.max_message_size),
                    )
                    .await;
                    pump.buf.clear();
                    return Outcome::UpstreamClosed;
                }
            }
            if h.tag == be::READY_FOR_QUERY {
                if !whole {
                    need = h.total_len;
                    break;
                }
                ctx.sync.note_ready(
                    pump.buf[ready + HEADER_LEN..ready + h.total_len]
                        .first()
                        .copied(),
                );
            }
            last_was_error = h.tag == be::ERROR_RESPONSE;
            ready = pump.forward(ready, h.total_len);
        }
        if ready > 0 {
            if write_out(to, &pump.buf[..ready]).await.is_err() {
                return Outcome::ClientVanished;
            }
            pump.buf.advance(ready);
        }
        let at_boundary = pump.is_clear();
        if let Some(r) = &pending
            && at_boundary
            && ctx.sync.answered.load(Ordering::Acquire) >= r.after
        {
            let _ = send_error(to, &r.error).await;
            return Outcome::ClientRefused;
        }
        tokio::select! {
            biased;
            refused = &mut refusal, if refusal_open && pending.is_none() => match refused {
                Ok(r) => pending = Some(r),
                Err(_) => refusal_open = false,
            },
            read = read_more(from, &mut pump.buf, need) => {
                if read.is_err() {
                    if at_boundary && !last_was_error {
                        let _ = send_error(to, &PgError::upstream_lost()).await;
                    }
                    return Outcome::UpstreamClosed;
                }
            }
        }
    }
}

impl SyncState {
    /// Counts a ReadyForQuery and its transaction status.
    fn note_ready(&self, status: Option<u8>) {
        self.answered.fetch_add(1, Ordering::AcqRel);
        self.last_status
            .store(status.unwrap_or(0), Ordering::Release);
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
