//! The relay: client and database traffic after start-up, one pump per direction, running
//! concurrently so that neither side can stall the other (a pipelining client writes while
//! the database writes back).
//!
//! Each pump splits its stream on tag and length and forwards the bytes untouched. Messages
//! the inspection seam reads (Query, Parse, Bind, Execute, FunctionCall from the client; and
//! RowDescription/DataRow when an inspector asks for rows) are held whole, up to
//! `max_message_size`; everything else (COPY data, large rows nobody inspects) streams through
//! in pieces, so memory stays bounded whatever the result or COPY size.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, oneshot, watch};

use super::substitute::Substitutions;
use crate::approval::Approvals;
use crate::inspect::{Denial, Hold, Inspector, Interest, Rewrite, Verdict};
use crate::net::stream::{READ_CHUNK, Stream, read_more, write_out};
use crate::protocol::pg::PgError;
use crate::protocol::pg::backend::tag as be;
use crate::protocol::pg::frame::{self, HEADER_LEN};
use crate::protocol::pg::frontend::{self, tag as fe};
use crate::session::hold::{self, HoldEnd};

/// PostgreSQL's own limit for a message (PQ_LARGE_MESSAGE_LIMIT).
const PROTOCOL_MAX: usize = 0x3fff_ffff;
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
    /// Airlock's shutdown grace ran out; the client was told (57P01).
    ServerShutdown,
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
    closing: watch::Receiver<bool>,
    approvals: Option<&Arc<Approvals>>,
    cancel: &tokio::sync::Notify,
) -> (Outcome, Option<Stream>) {
    let interest = inspector.interest();
    let inspector = Mutex::new(inspector);
    let (mut client_r, mut client_w) = tokio::io::split(ends.client);
    let (mut upstream_r, mut upstream_w) = tokio::io::split(ends.upstream);
    let sync = SyncState::default();
    let substitutions = Substitutions::default();
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
        // Notices for the client (a statement held for approval), sent by the backend pump
        // at a message boundary.
        let (notices_tx, notices_rx) = mpsc::unbounded_channel();
        let ctx = PumpCtx {
            inspector: &inspector,
            interest,
            limits,
            sync: &sync,
            substitutions: &substitutions,
            approvals,
            notices: notices_tx,
            cancel: Some(cancel),
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
            Waiting {
                refusal: refuse_rx,
                notices: notices_rx,
            },
            &ctx,
            &mut backend,
            closing,
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
    substitutions: &'a Substitutions,
    /// Where statements are held for approval; without it a held statement is refused.
    approvals: Option<&'a Arc<Approvals>>,
    notices: mpsc::UnboundedSender<BytesMut>,
    /// A CancelRequest for this session: withdraws a held statement.
    cancel: Option<&'a tokio::sync::Notify>,
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
    /// A denied message of `n` bytes: send `with` instead.
    Substitute { n: usize, with: BytesMut },
    /// A message of `n` bytes with `tag` to hold for approval.
    Hold { n: usize, tag: u8, hold: Box<Hold> },
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
        // Sync points forwarded before this pass: what the database owes answers for.
        let forwarded = ctx.sync.sent.load(Ordering::Acquire);
        let Scan { ready, need, end } = scan_frontend(&mut pump, ctx, keep_upstream);
        if ctx.interest.records
            && (ready > 0 || end.is_some())
            && let Err(e) = audited(ctx)
        {
            tracing::error!(reason = %e.message, "statements refused: no audit trail");
            // Nothing of this pass went out: the client hears why after the answers owed.
            let after = forwarded;
            let _ = refuse.send(Refusal {
                error: e.clone(),
                after,
            });
            return (Outcome::ClientRefused, Some(e));
        }
        let terminate = matches!(end, Some(ScanEnd::Terminate));
        if let Some(ScanEnd::Refuse(e)) = end {
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
        if ready > 0 {
            if write_out(to, &pump.buf[..ready]).await.is_err() {
                return (Outcome::UpstreamClosed, None);
            }
            pump.buf.advance(ready);
        }
        if let Some(ScanEnd::Substitute { n, with }) = end {
            if write_out(to, &with).await.is_err() {
                return (Outcome::UpstreamClosed, None);
            }
            pump.buf.advance(n);
            continue;
        }
        if let Some(ScanEnd::Hold { n, tag, hold }) = end {
            let approvals = ctx
                .approvals
                .expect("only held where approvals are configured");
            let limit = ctx.limits.max_message_size;
            let notices = &ctx.notices;
            let told = |t: &crate::approval::ticket::Ticket| {
                let mut out = BytesMut::new();
                PgError::held(&hold::held_message(t)).encode(&mut out);
                let _ = notices.send(out);
            };
            let end = hold::wait(
                approvals,
                *hold,
                from,
                &mut pump.buf,
                limit,
                ctx.cancel,
                told,
            );
            // Approved: exactly the held bytes; otherwise what stands in for them.
            let written = match end.await {
                HoldEnd::Approved => write_out(to, &pump.buf[..n]).await,
                HoldEnd::Refused(denial) => write_out(to, &refusal(ctx, tag, &denial)).await,
                HoldEnd::Cancelled => {
                    write_out(to, &substitute(ctx, tag, &PgError::cancelled())).await
                }
                HoldEnd::ClientGone => return (Outcome::ClientVanished, None),
            };
            if written.is_err() {
                return (Outcome::UpstreamClosed, None);
            }
            pump.buf.advance(n);
            continue;
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

/// Whether the audit records of the messages the inspector was shown are durable
/// (`audit = "required"`; otherwise there are none to wait for).
fn audited(ctx: &PumpCtx<'_>) -> Result<(), PgError> {
    lock(ctx.inspector)
        .pending_records()
        .map_err(|e| PgError::audit_unavailable(&e.0))
}

/// What one pass over a pump's buffer found: `ready` bytes can be forwarded; `need` is the
/// size the buffer must reach to hold the next message whole (0: any read will do); `end`
/// says the pump must stop after forwarding.
struct Scan {
    ready: usize,
    need: usize,
    end: Option<ScanEnd>,
}

enum ScanEnd {
    /// The client said Terminate.
    Terminate,
    /// Refuse the client with this error.
    Refuse(PgError),
    /// The database sent something unreadable or too large to inspect; tell the client this.
    Fail(PgError),
    /// Pass the next `n` bytes on as `with` (a denied statement, or the answer to one).
    Substitute { n: usize, with: BytesMut },
    /// Hold the next `n` bytes (a message with `tag`) for approval.
    Hold { n: usize, tag: u8, hold: Box<Hold> },
}

/// Walks the client's bytes in `pump` (pure: no I/O), handing statements to the seam.
fn scan_frontend(pump: &mut Pump, ctx: &PumpCtx<'_>, keep_upstream: bool) -> Scan {
    let mut ready = 0;
    while ready < pump.buf.len() {
        if pump.streaming > 0 {
            ready = pump.pass_streamed(ready);
            continue;
        }
        match frontend_step(&pump.buf[ready..], ctx) {
            Ok(Step::More { need }) => {
                return Scan {
                    ready,
                    need,
                    end: None,
                };
            }
            Ok(Step::Forward { n }) => ready = pump.forward(ready, n),
            Ok(Step::Substitute { n, with }) => {
                let end = Some(ScanEnd::Substitute { n, with });
                return Scan {
                    ready,
                    need: 0,
                    end,
                };
            }
            Ok(Step::Hold { n, tag, hold }) => {
                let end = Some(ScanEnd::Hold { n, tag, hold });
                return Scan {
                    ready,
                    need: 0,
                    end,
                };
            }
            Ok(Step::Terminate { n }) => {
                // Kept sessions are not told goodbye: the next client will use them.
                if !keep_upstream {
                    ready += n;
                }
                let end = Some(ScanEnd::Terminate);
                return Scan {
                    ready,
                    need: 0,
                    end,
                };
            }
            Err(e) => {
                let end = Some(ScanEnd::Refuse(e));
                return Scan {
                    ready,
                    need: 0,
                    end,
                };
            }
        }
    }
    Scan {
        ready,
        need: 0,
        end: None,
    }
}

/// Decides what to do with the message at the start of `buf`.
fn frontend_step(buf: &[u8], ctx: &PumpCtx<'_>) -> Result<Step, PgError> {
    let Some(h) = frame::header(buf, PROTOCOL_MAX).map_err(PgError::protocol_violation)? else {
        return Ok(Step::More { need: HEADER_LEN });
    };
    let shown = match h.tag {
        fe::QUERY | fe::PARSE | fe::BIND | fe::EXECUTE | fe::FUNCTION_CALL => true,
        fe::CLOSE | fe::SYNC => ctx.interest.statements,
        fe::DESCRIBE => ctx.interest.rows,
        _ => false,
    };
    match h.tag {
        _ if shown => {
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
            let verdict = if ctx.interest.statements {
                lock(ctx.inspector).frontend(&message)
            } else {
                Verdict::Forward
            };
            ctx.sync.note_sent(h.tag);
            match verdict {
                Verdict::Forward => Ok(Step::Forward { n: h.total_len }),
                Verdict::Hold(hold) if ctx.approvals.is_some() => Ok(Step::Hold {
                    n: h.total_len,
                    tag: h.tag,
                    hold,
                }),
                Verdict::Hold(hold) => Ok(Step::Substitute {
                    n: h.total_len,
                    with: refusal(ctx, h.tag, &hold.refusal),
                }),
                Verdict::Deny(denial) => Ok(Step::Substitute {
                    n: h.total_len,
                    with: refusal(ctx, h.tag, &denial),
                }),
            }
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

/// What stands in for a refused message with `tag`: it fails at the database, which then
/// skips to the next sync point, and its error is swapped for `denial`'s.
fn refusal(ctx: &PumpCtx<'_>, tag: u8, denial: &Denial) -> BytesMut {
    let error = PgError::denied(denial);
    tracing::info!(reason = %error.message, "statement denied");
    substitute(ctx, tag, &error)
}

/// What stands in for a message with `tag` that must fail with `error`.
fn substitute(ctx: &PumpCtx<'_>, tag: u8, error: &PgError) -> BytesMut {
    let sent = ctx.sync.sent.load(Ordering::Acquire);
    let sync_point = match tag {
        fe::QUERY | fe::FUNCTION_CALL | fe::SYNC => sent,
        _ => sent + 1,
    };
    ctx.substitutions.substitute(tag, error, sync_point)
}

/// What the backend pump waits for besides the database: a refusal to deliver before the
/// session ends, and notices for the client.
struct Waiting {
    refusal: oneshot::Receiver<Refusal>,
    notices: mpsc::UnboundedReceiver<BytesMut>,
}

/// Database to client.
async fn pump_backend(
    from: &mut ReadHalf<Stream>,
    to: &mut WriteHalf<Stream>,
    waiting: Waiting,
    ctx: &PumpCtx<'_>,
    pump: &mut Pump,
    mut closing: watch::Receiver<bool>,
) -> Outcome {
    let Waiting {
        mut refusal,
        mut notices,
    } = waiting;
    // Only a session that can hold statements has notices to wait for.
    let mut notices_open = ctx.approvals.is_some();
    pump.buf.reserve(READ_CHUNK);
    // Whether the last message forwarded was an ErrorResponse (a FATAL before closing).
    let mut last_was_error = false;
    let mut refusal_open = true;
    let mut pending: Option<Refusal> = None;
    let mut closing_open = true;
    loop {
        let Scan { ready, need, end } = scan_backend(pump, ctx, &mut last_was_error);
        if let Some(ScanEnd::Fail(e)) = end {
            tracing::error!(reason = %e.message, "closing the session");
            let _ = to.write_all(&pump.buf[..ready]).await;
            let _ = send_error(to, &e).await;
            pump.buf.clear();
            return Outcome::UpstreamClosed;
        }
        if ready > 0 {
            if write_out(to, &pump.buf[..ready]).await.is_err() {
                return Outcome::ClientVanished;
            }
            pump.buf.advance(ready);
        }
        if let Some(ScanEnd::Substitute { n, with }) = end {
            if write_out(to, &with).await.is_err() {
                return Outcome::ClientVanished;
            }
            pump.buf.advance(n);
            continue;
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
            notice = notices.recv(), if notices_open && at_boundary => match notice {
                Some(notice) => {
                    if write_out(to, &notice).await.is_err() {
                        return Outcome::ClientVanished;
                    }
                }
                None => notices_open = false,
            },
            // Airlock's shutdown grace is over: say so at a message boundary, as PostgreSQL does.
            changed = closing.changed(), if closing_open && at_boundary && pending.is_none() => {
                if changed.is_err() {
                    closing_open = false;
                } else if *closing.borrow() {
                    let _ = send_error(to, &PgError::shutting_down()).await;
                    return Outcome::ServerShutdown;
                }
            }
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

/// Walks the database's bytes in `pump` (pure: no I/O), showing rows to the seam when asked
/// and counting ReadyForQuery. `last_was_error` tracks whether the last message was an
/// ErrorResponse.
fn scan_backend(pump: &mut Pump, ctx: &PumpCtx<'_>, last_was_error: &mut bool) -> Scan {
    let mut ready = 0;
    // Taken at the first message the seam is shown and kept to the end of the pass: a
    // statement's answers mostly arrive together, and are shown under one lock.
    let mut inspector = None;
    while ready < pump.buf.len() {
        if pump.streaming > 0 {
            ready = pump.pass_streamed(ready);
            continue;
        }
        let h = match frame::header(&pump.buf[ready..], PROTOCOL_MAX) {
            Ok(Some(h)) => h,
            Ok(None) => break,
            Err(e) => {
                let end = Some(ScanEnd::Fail(PgError::upstream_protocol(e)));
                return Scan {
                    ready,
                    need: 0,
                    end,
                };
            }
        };
        let whole = h.total_len <= pump.buf.len() - ready;
        let body = ready + HEADER_LEN..ready + h.total_len;
        let shown = ctx.interest.rows
            || (ctx.interest.replies && h.tag == be::PARAMETER_STATUS)
            || (ctx.interest.outcomes
                && matches!(
                    h.tag,
                    be::COMMAND_COMPLETE
                        | be::ERROR_RESPONSE
                        | be::EMPTY_QUERY_RESPONSE
                        | be::PORTAL_SUSPENDED
                ));
        // Read whole: what the seam is shown, ReadyForQuery (counted), and an
        // ErrorResponse that may answer a denied statement's substitute.
        let wanted = shown
            || h.tag == be::READY_FOR_QUERY
            || (h.tag == be::ERROR_RESPONSE && !ctx.substitutions.is_empty());
        if wanted && !whole {
            if h.total_len <= ctx.limits.max_message_size || h.tag == be::READY_FOR_QUERY {
                return Scan {
                    ready,
                    need: h.total_len,
                    end: None,
                };
            }
            if ctx.interest.rows {
                // Inspection fails closed: a message too large to hold is not passed unread.
                let e = PgError::row_too_large(h.total_len, ctx.limits.max_message_size);
                return Scan {
                    ready,
                    need: 0,
                    end: Some(ScanEnd::Fail(e)),
                };
            }
        }
        // The answer to a refused statement's substitute: Airlock's own error goes instead.
        let ours = match h.tag == be::ERROR_RESPONSE && whole && !ctx.substitutions.is_empty() {
            true => ctx.substitutions.replacement(&pump.buf[body.clone()]),
            false => None,
        };
        // A ReadyForQuery's transaction status.
        let status = (h.tag == be::READY_FOR_QUERY)
            .then(|| pump.buf[body.clone()].first().copied())
            .flatten();
        // What the seam is shown of this message: its body, and its tag as a reply.
        let replied =
            ctx.interest.replies && matches!(h.tag, be::ERROR_RESPONSE | be::READY_FOR_QUERY);
        let mut rewrite = Rewrite::Keep;
        if (shown && whole) || replied {
            let inspector = inspector.get_or_insert_with(|| lock(ctx.inspector));
            if shown && whole {
                if ours.is_some() {
                    inspector.substituted();
                }
                rewrite = inspector.backend(h.tag, &pump.buf[body.clone()]);
            }
            if replied {
                inspector.reply(h.tag, status);
            }
        }
        if let Some(ours) = ours {
            *last_was_error = true;
            let end = Some(ScanEnd::Substitute {
                n: h.total_len,
                with: BytesMut::from(&ours[..]),
            });
            return Scan {
                ready,
                need: 0,
                end,
            };
        }
        if h.tag == be::READY_FOR_QUERY {
            ctx.sync.note_ready(status);
            ctx.substitutions
                .settle(ctx.sync.answered.load(Ordering::Acquire));
        }
        match rewrite {
            Rewrite::Keep => {}
            Rewrite::Replace(new_body) => {
                *last_was_error = h.tag == be::ERROR_RESPONSE;
                let mut with = BytesMut::with_capacity(new_body.len() + HEADER_LEN);
                frame::put_message(&mut with, h.tag, &new_body);
                let end = Some(ScanEnd::Substitute {
                    n: h.total_len,
                    with,
                });
                return Scan {
                    ready,
                    need: 0,
                    end,
                };
            }
            Rewrite::Refuse(reason) => {
                let end = Some(ScanEnd::Fail(PgError::unmaskable(&reason)));
                return Scan {
                    ready,
                    need: 0,
                    end,
                };
            }
        }
        *last_was_error = h.tag == be::ERROR_RESPONSE;
        ready = pump.forward(ready, h.total_len);
    }
    Scan {
        ready,
        need: 0,
        end: None,
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

#[cfg(test)]
mod tests {
    //! The scanners against random message streams cut at random points: every byte is
    //! forwarded exactly once and in order, every statement and row reaches the seam whole
    //! and once, and sync points are counted.

    use super::*;
    use crate::protocol::pg::frame::put_message;
    use crate::protocol::pg::frontend::FrontendMessage;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    #[derive(Default)]
    struct Seen {
        statements: usize,
        rows: usize,
        row_bytes: usize,
    }

    /// Counts what it is shown; with `.2`, rewrites every DataRow's body to `masked`.
    struct Counter(std::sync::Arc<Mutex<Seen>>, Interest, bool);

    impl Inspector for Counter {
        fn interest(&self) -> Interest {
            self.1
        }
        fn frontend(&mut self, m: &FrontendMessage<'_>) -> Verdict {
            if !matches!(m, FrontendMessage::Close { .. } | FrontendMessage::Sync) {
                self.0.lock().unwrap().statements += 1;
            }
            Verdict::Forward
        }
        fn backend(&mut self, tag: u8, body: &[u8]) -> Rewrite {
            if tag == be::DATA_ROW {
                let mut seen = self.0.lock().unwrap();
                seen.rows += 1;
                seen.row_bytes += body.len();
                if self.2 {
                    return Rewrite::Replace(b"masked".to_vec());
                }
            }
            Rewrite::Keep
        }
    }

    const LIMIT: usize = 64 * 1024;

    fn cstr(rng: &mut StdRng, max: usize) -> Vec<u8> {
        let n = rng.random_range(0..max);
        let mut v: Vec<u8> = (0..n).map(|_| rng.random_range(b'a'..=b'z')).collect();
        v.push(0);
        v
    }

    /// A random client stream ending in Terminate; returns it with its statement and sync counts.
    fn client_stream(rng: &mut StdRng) -> (Vec<u8>, usize, u64) {
        let mut out = BytesMut::new();
        let (mut statements, mut syncs) = (0, 0);
        for _ in 0..rng.random_range(1..40) {
            match rng.random_range(0..7) {
                0 => {
                    put_message(&mut out, b'Q', &cstr(rng, 3000));
                    statements += 1;
                    syncs += 1;
                }
                1 => {
                    let mut body = cstr(rng, 10);
                    body.extend(cstr(rng, 500));
                    body.extend(0u16.to_be_bytes());
                    put_message(&mut out, b'P', &body);
                    statements += 1;
                }
                2 => {
                    let mut body = b"\0\0\0\0".to_vec();
                    let n = rng.random_range(0..4u16);
                    body.truncate(2);
                    body.extend(0u16.to_be_bytes());
                    body.extend(n.to_be_bytes());
                    for _ in 0..n {
                        let len = rng.random_range(0..2000usize);
                        body.extend((len as i32).to_be_bytes());
                        body.extend(std::iter::repeat_n(7u8, len));
                    }
                    body.extend(0u16.to_be_bytes());
                    put_message(&mut out, b'B', &body);
                    statements += 1;
                }
                3 => {
                    put_message(&mut out, b'E', b"\0\0\0\0\0");
                    statements += 1;
                }
                4 => {
                    put_message(&mut out, b'S', b"");
                    syncs += 1;
                }
                5 => {
                    // COPY data may be far larger than the limit: it streams.
                    let len = rng.random_range(0..3 * LIMIT);
                    put_message(&mut out, b'd', &vec![1u8; len]);
                }
                _ => put_message(&mut out, b'H', b""),
            }
        }
        put_message(&mut out, b'X', b"");
        (out.to_vec(), statements, syncs)
    }

    /// A random database stream; returns it with its row count, row body bytes and ReadyForQuery count.
    /// With `held`, every message fits the inspection limit (an inspector of rows holds
    /// every message whole).
    fn server_stream(rng: &mut StdRng, held: bool) -> (Vec<u8>, usize, usize, u64) {
        let copy_max = if held { LIMIT - HEADER_LEN } else { 3 * LIMIT };
        let mut out = BytesMut::new();
        let (mut rows, mut row_bytes, mut ready) = (0, 0, 0);
        for _ in 0..rng.random_range(1..60) {
            match rng.random_range(0..6) {
                0 => {
                    let len = rng.random_range(2..LIMIT - HEADER_LEN);
                    put_message(&mut out, b'D', &vec![3u8; len]);
                    rows += 1;
                    row_bytes += len;
                }
                1 => put_message(&mut out, b'T', &[0, 0]),
                2 => put_message(&mut out, b'C', b"SELECT 1\0"),
                3 => {
                    put_message(&mut out, b'Z', b"I");
                    ready += 1;
                }
                4 => put_message(&mut out, b'd', &vec![5u8; rng.random_range(0..copy_max)]),
                _ => put_message(&mut out, b'A', b"\0\0\0\x01chan\0payload\0"),
            }
        }
        (out.to_vec(), rows, row_bytes, ready)
    }

    /// Cuts `input` into random pieces, from single bytes to large reads.
    fn pieces<'a>(rng: &mut StdRng, input: &'a [u8]) -> Vec<&'a [u8]> {
        let mut out = Vec::new();
        let mut rest = input;
        while !rest.is_empty() {
            let n = match rng.random_range(0..4) {
                0 => 1,
                1 => rng.random_range(1..16),
                _ => rng.random_range(1..20_000),
            }
            .min(rest.len());
            out.push(&rest[..n]);
            rest = &rest[n..];
        }
        out
    }

    /// Feeds `input` in pieces through `scan`, as a pump would; returns what was forwarded.
    fn feed(
        rng: &mut StdRng,
        input: &[u8],
        mut scan: impl FnMut(&mut Pump) -> Scan,
    ) -> (Vec<u8>, Option<ScanEnd>) {
        let mut pump = Pump::default();
        let mut forwarded = Vec::new();
        for piece in pieces(rng, input) {
            pump.buf.extend_from_slice(piece);
            let Scan { ready, need, end } = loop {
                let scanned = scan(&mut pump);
                forwarded.extend_from_slice(&pump.buf[..scanned.ready]);
                pump.buf.advance(scanned.ready);
                match scanned.end {
                    Some(ScanEnd::Substitute { n, with }) => {
                        forwarded.extend_from_slice(&with);
                        pump.buf.advance(n);
                    }
                    _ => break scanned,
                }
            };
            let _ = ready;
            if end.is_some() {
                return (forwarded, end);
            }
            assert!(
                need == 0 || need > pump.buf.len(),
                "asked for bytes it already has"
            );
        }
        (forwarded, None)
    }

    /// An inspector that counts, and the state a pump context borrows.
    struct Harness {
        seen: std::sync::Arc<Mutex<Seen>>,
        inspector: Mutex<Box<dyn Inspector>>,
        sync: SyncState,
        substitutions: Substitutions,
        interest: Interest,
    }

    impl Harness {
        fn new(statements: bool, rows: bool) -> Harness {
            Harness::rewriting(statements, rows, false)
        }

        fn rewriting(statements: bool, rows: bool, rewrite: bool) -> Harness {
            let interest = Interest {
                statements,
                rows,
                replies: false,
                outcomes: false,
                records: statements,
            };
            let seen = std::sync::Arc::new(Mutex::new(Seen::default()));
            let inspector: Box<dyn Inspector> = Box::new(Counter(seen.clone(), interest, rewrite));
            Harness {
                seen,
                inspector: Mutex::new(inspector),
                sync: SyncState::default(),
                substitutions: Substitutions::default(),
                interest,
            }
        }

        fn ctx(&self) -> PumpCtx<'_> {
            PumpCtx {
                inspector: &self.inspector,
                interest: self.interest,
                limits: Limits {
                    max_message_size: LIMIT,
                },
                sync: &self.sync,
                substitutions: &self.substitutions,
                approvals: None,
                notices: mpsc::unbounded_channel().0,
                cancel: None,
            }
        }
    }

    #[test]
    fn client_streams_pass_whole_in_order_however_they_are_cut() {
        for seed in 0..300 {
            let mut rng = StdRng::seed_from_u64(seed);
            let (input, statements, syncs) = client_stream(&mut rng);
            let h = Harness::new(true, false);
            let ctx = h.ctx();
            let (forwarded, end) = feed(&mut rng, &input, |p| scan_frontend(p, &ctx, false));
            assert!(
                matches!(end, Some(ScanEnd::Terminate)),
                "seed {seed}: ends at Terminate"
            );
            assert!(
                forwarded == input,
                "seed {seed}: bytes forwarded exactly once, in order"
            );
            assert_eq!(h.seen.lock().unwrap().statements, statements, "seed {seed}");
            assert_eq!(h.sync.sent.load(Ordering::Acquire), syncs, "seed {seed}");
        }
    }

    #[test]
    fn kept_sessions_do_not_forward_terminate() {
        let mut rng = StdRng::seed_from_u64(7);
        let (input, _, _) = client_stream(&mut rng);
        let h = Harness::new(false, false);
        let ctx = h.ctx();
        let (forwarded, end) = feed(&mut rng, &input, |p| scan_frontend(p, &ctx, true));
        assert!(matches!(end, Some(ScanEnd::Terminate)));
        assert_eq!(forwarded, input[..input.len() - 5]);
    }

    #[test]
    fn server_streams_pass_whole_and_rows_reach_the_seam_once() {
        for (seed, rows_wanted) in (0..300).map(|s| (s, s % 2 == 0)) {
            let mut rng = StdRng::seed_from_u64(1000 + seed);
            let (input, rows, row_bytes, ready) = server_stream(&mut rng, rows_wanted);
            let h = Harness::new(false, rows_wanted);
            let ctx = h.ctx();
            let mut last_was_error = false;
            let (forwarded, end) = feed(&mut rng, &input, |p| {
                scan_backend(p, &ctx, &mut last_was_error)
            });
            assert!(end.is_none(), "seed {seed}");
            assert!(
                forwarded == input,
                "seed {seed}: bytes forwarded exactly once, in order"
            );
            let seen = h.seen.lock().unwrap();
            let expected = if rows_wanted {
                (rows, row_bytes)
            } else {
                (0, 0)
            };
            assert_eq!((seen.rows, seen.row_bytes), expected, "seed {seed}");
            assert_eq!(
                h.sync.answered.load(Ordering::Acquire),
                ready,
                "seed {seed}"
            );
        }
    }

    #[test]
    fn rewritten_rows_replace_exactly_their_message() {
        for seed in 0..100 {
            let mut rng = StdRng::seed_from_u64(5000 + seed);
            let (input, rows, _, _) = server_stream(&mut rng, true);
            let h = Harness::rewriting(false, true, true);
            let ctx = h.ctx();
            let mut last_was_error = false;
            let (forwarded, end) = feed(&mut rng, &input, |p| {
                scan_backend(p, &ctx, &mut last_was_error)
            });
            assert!(end.is_none(), "seed {seed}");
            let mut expected = BytesMut::new();
            let mut rest = &input[..];
            while !rest.is_empty() {
                let h = frame::header(rest, PROTOCOL_MAX).unwrap().unwrap();
                if h.tag == be::DATA_ROW {
                    put_message(&mut expected, b'D', b"masked");
                } else {
                    expected.extend_from_slice(&rest[..h.total_len]);
                }
                rest = &rest[h.total_len..];
            }
            assert!(
                forwarded == expected,
                "seed {seed}: each row replaced, nothing else"
            );
            assert_eq!(h.seen.lock().unwrap().rows, rows, "seed {seed}");
        }
    }

    #[test]
    fn rows_too_large_to_inspect_fail_closed() {
        let h = Harness::new(false, true);
        let ctx = h.ctx();
        let mut input = BytesMut::new();
        put_message(&mut input, b'T', &[0, 0]);
        put_message(&mut input, b'D', &vec![0u8; 2 * LIMIT]);
        let mut rng = StdRng::seed_from_u64(3);
        let mut last_was_error = false;
        let (forwarded, end) = feed(&mut rng, &input, |p| {
            scan_backend(p, &ctx, &mut last_was_error)
        });
        assert!(matches!(end, Some(ScanEnd::Fail(e)) if e.code.0 == "54000"));
        assert_eq!(forwarded, input[..7], "only the RowDescription went out");
    }
}
