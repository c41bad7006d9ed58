//! The MySQL relay: commands from the client, read whole and shown to the inspector before
//! they are forwarded; answers from the database, relayed untouched as they arrive.
//!
//! The classic protocol answers commands one by one, in order. A refused command is answered
//! by Airlock alone (an ERR packet with the next sequence id) without the database ever seeing
//! it, and the session, and any open transaction, carries on exactly as after a statement the
//! database refused: MySQL does not abort a transaction on an error. A client may send its
//! next commands before it has read an answer (pipelining), so Airlock's ERR takes its place
//! in the queue of answers owed and goes out after the answers to the commands sent before the
//! refused one, never ahead of them. The one part of an answer
//! Airlock reads is the statement id in the answer to COM_STMT_PREPARE, so that each
//! COM_STMT_EXECUTE can be judged as what was prepared.
//!
//! LOAD DATA LOCAL INFILE, where allowed, is the one exchange that turns this around: the
//! database's answer to a COM_QUERY asks for a file, and the client's next packets (until an
//! empty one) are that file, relayed without inspection, before the answer goes on.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::Notify;

use crate::approval::Approvals;
use crate::inspect::{MysqlInspector, Rewrite, Verdict};
use crate::net::stream::{Stream, read_more, write_out};
use crate::protocol::mysql::MyError;
use crate::protocol::mysql::command::{self, Command};
use crate::protocol::mysql::packet::{self, HEADER_LEN, Next};
use crate::protocol::mysql::response::{self, Answer, Event, Tracker};
use crate::session::hold::{self, HoldEnd};

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
    /// The database asked for something Airlock does not relay (a local file, where not
    /// allowed); the client was told and the session closed.
    UpstreamRefused,
}

/// Maps a connection id a client names in KILL (one Airlock gave out) to the database's
/// thread id, if it is a session of the same user.
pub type Resolve<'a> = &'a (dyn Fn(u32) -> Option<u32> + Sync);

/// How a session is relayed.
#[derive(Clone)]
pub struct Settings {
    /// Largest logical packet held whole.
    pub max_packet_size: usize,
    /// The session negotiated CLIENT_DEPRECATE_EOF.
    pub deprecate_eof: bool,
    /// The database may ask for a client's file (`mysql.allow_local_infile`).
    pub local_infile: bool,
    /// Where statements a policy holds wait for approval; without it they are refused.
    pub approvals: Option<Arc<Approvals>>,
    /// A KILL of this session: withdraws a statement it holds for approval.
    pub kill: Arc<tokio::sync::Notify>,
}

/// Relays until one side is done. Returns how it ended and whether the database still owed
/// the client an answer (a statement was running).
pub async fn run(
    client: End,
    upstream: End,
    inspector: Box<dyn MysqlInspector>,
    settings: Settings,
    resolve: Resolve<'_>,
) -> (Outcome, bool) {
    let Settings {
        max_packet_size,
        deprecate_eof,
        local_infile,
        approvals,
        kill,
    } = settings;
    let wants_rows = inspector.wants_rows();
    let inspector = Mutex::new(inspector);
    let owed = Mutex::new(VecDeque::new());
    let ours = Notify::new();
    let idle = AtomicBool::new(true);
    let infile = AtomicBool::new(false);
    let (mut client_r, mut client_w) = tokio::io::split(client.stream);
    let (mut upstream_r, mut upstream_w) = tokio::io::split(upstream.stream);
    let shared = Shared {
        inspector: &inspector,
        owed: &owed,
        ours: &ours,
        idle: &idle,
        infile: local_infile.then_some(&infile),
        resolve,
        wants_rows,
        approvals: approvals.as_ref(),
        kill: Some(&kill),
    };
    let to_upstream = commands(
        &mut client_r,
        &mut upstream_w,
        client.buf,
        &shared,
        max_packet_size,
    );
    let to_client = answers(
        &mut upstream_r,
        &mut client_w,
        upstream.buf,
        &shared,
        deprecate_eof,
        max_packet_size,
    );
    tokio::pin!(to_upstream, to_client);
    let outcome = tokio::select! {
        outcome = &mut to_upstream => match outcome {
            // Let the client hear why before the connection closes.
            Outcome::ClientRefused => {
                let _ = tokio::time::timeout(std::time::Duration::from_secs(2), to_client).await;
                outcome
            }
            _ => outcome,
        },
        outcome = &mut to_client => outcome,
    };
    let busy = !idle.load(Ordering::Acquire)
        || shared.owed().iter().any(|o| matches!(o, Owed::Database(_)));
    (outcome, busy)
}

struct Shared<'a> {
    inspector: &'a Mutex<Box<dyn MysqlInspector>>,
    /// The answers owed to the client, in the order of its commands: the command pump adds
    /// each before it forwards the command (or instead of forwarding it); the answer pump
    /// takes the next between answers.
    owed: &'a Mutex<VecDeque<Owed>>,
    /// Wakes the answer pump for an answer of Airlock's own.
    ours: &'a Notify,
    /// The answer pump has no answer in progress.
    idle: &'a AtomicBool,
    /// Where LOCAL INFILE is allowed: the client is sending a file (set by the answer pump
    /// before the database's request reaches the client, cleared by the command pump after
    /// the file's last, empty, packet).
    infile: Option<&'a AtomicBool>,
    resolve: Resolve<'a>,
    /// The inspector reads column definitions and rows.
    wants_rows: bool,
    approvals: Option<&'a Arc<Approvals>>,
    kill: Option<&'a tokio::sync::Notify>,
}

impl Shared<'_> {
    fn inspector(&self) -> std::sync::MutexGuard<'_, Box<dyn MysqlInspector>> {
        self.inspector.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn owed(&self) -> std::sync::MutexGuard<'_, VecDeque<Owed>> {
        self.owed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The command pump forwarded a command that `answer`s.
    fn expect(&self, answer: Answer) {
        if answer != Answer::Nothing {
            self.owed().push_back(Owed::Database(answer));
        }
    }

    /// Answers a command with Airlock's ERR packet, once the answers owed before it are out;
    /// the session goes on.
    fn tell(&self, seq: u8, error: MyError) {
        self.answer_ourselves(Ours {
            seq,
            error,
            close: false,
        });
    }

    /// Like `tell`, then ends the session.
    fn close(&self, seq: u8, error: MyError) {
        self.answer_ourselves(Ours {
            seq,
            error,
            close: true,
        });
    }

    fn answer_ourselves(&self, ours: Ours) {
        self.owed().push_back(Owed::Airlock(ours));
        self.ours.notify_one();
    }

    /// Airlock's own answer, if it is next (between the database's answers).
    fn ours_next(&self) -> Option<Ours> {
        let mut owed = self.owed();
        match owed.front() {
            Some(Owed::Airlock(_)) => match owed.pop_front() {
                Some(Owed::Airlock(ours)) => Some(ours),
                _ => None,
            },
            _ => None,
        }
    }

    /// The database's next answer, if it owes one.
    fn database_next(&self) -> Option<Answer> {
        let mut owed = self.owed();
        match owed.front() {
            Some(Owed::Database(answer)) => {
                let answer = *answer;
                owed.pop_front();
                Some(answer)
            }
            _ => None,
        }
    }
}

/// An answer owed to the client.
enum Owed {
    /// The database's, to a command forwarded.
    Database(Answer),
    /// Airlock's, in place of a command not forwarded.
    Airlock(Ours),
}

/// An ERR packet of Airlock's, with its sequence id; `close`: the session ends after it.
struct Ours {
    seq: u8,
    error: MyError,
    close: bool,
}

/// Client to database: one logical packet is one command.
async fn commands(
    from: &mut ReadHalf<Stream>,
    to: &mut WriteHalf<Stream>,
    mut buf: BytesMut,
    shared: &Shared<'_>,
    max: usize,
) -> Outcome {
    loop {
        let next = match packet::logical(&buf, max) {
            Ok(n) => n,
            Err(e) => {
                let seq = packet::header(&buf).map_or(0, |h| h.seq).wrapping_add(1);
                shared.close(seq, MyError::packet_too_large(e.len, e.max));
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
        let wire_len = logical.wire_len;
        if let Some(infile) = shared.infile
            && infile.load(Ordering::Acquire)
        {
            let last = logical.payload.is_empty();
            drop(logical);
            if write_out(to, &buf[..wire_len]).await.is_err() {
                return Outcome::UpstreamClosed;
            }
            buf.advance(wire_len);
            if last {
                infile.store(false, Ordering::Release);
            }
            continue;
        }
        let reply_seq = logical.last_seq.wrapping_add(1);
        let code = logical.payload.first().copied().unwrap_or(0);
        let parsed = command::parse(&logical.payload);
        // KILL names Airlock's connection ids: map it to the database's (the client's way to
        // cancel a statement), without the policy, as a cancel request is in PostgreSQL.
        let kill = parsed
            .as_ref()
            .ok()
            .and_then(|c| command::kill(c, &logical.payload));
        let verdict = match parsed {
            Err(e) => {
                shared.close(reply_seq, MyError::bad_handshake(e));
                return Outcome::ClientRefused;
            }
            Ok(_) if kill.is_some() => Verdict::Forward,
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
            Ok(cmd) => shared.inspector().command(&cmd),
        };
        drop(logical);
        if let Some(kill) = kill {
            buf.advance(wire_len);
            match (shared.resolve)(kill.id) {
                Some(thread) => {
                    let mut rewritten = vec![command::COM_QUERY];
                    rewritten.extend_from_slice(kill.sql_for(thread).as_bytes());
                    let mut out = BytesMut::new();
                    packet::put(&mut out, 0, &rewritten);
                    shared.inspector().forwarded(true);
                    shared.expect(Answer::Results);
                    if write_out(to, &out).await.is_err() {
                        return Outcome::UpstreamClosed;
                    }
                }
                None => {
                    let e = MyError::unknown_thread(kill.id);
                    shared.inspector().refused(e.code);
                    shared.tell(reply_seq, e);
                }
            }
            continue;
        }
        let verdict = match (verdict, shared.approvals) {
            (Verdict::Hold(hold), Some(approvals)) => {
                // The classic protocol has no way to tell the client while it waits.
                let end = hold::wait(approvals, *hold, from, &mut buf, max, shared.kill, |_| {});
                match end.await {
                    HoldEnd::Approved => Verdict::Forward,
                    HoldEnd::Refused(denial) => Verdict::Deny(denial),
                    HoldEnd::Cancelled => {
                        buf.advance(wire_len);
                        let e = MyError::query_interrupted();
                        shared.inspector().refused(e.code);
                        shared.tell(reply_seq, e);
                        continue;
                    }
                    HoldEnd::ClientGone => return Outcome::ClientVanished,
                }
            }
            (Verdict::Hold(hold), None) => Verdict::Deny(hold.refusal),
            (verdict, _) => verdict,
        };
        match verdict {
            Verdict::Hold(_) => unreachable!("decided above"),
            Verdict::Forward => {
                if let Err(e) = audited(shared) {
                    tracing::error!(reason = %e.message, "statements refused: no audit trail");
                    shared.close(reply_seq, e);
                    return Outcome::ClientRefused;
                }
                // Before the database can answer: the answer pump reads it by this.
                shared.inspector().forwarded(command::expects_answer(code));
                shared.expect(Answer::to(code));
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
                shared.inspector().refused(e.code);
                buf.advance(wire_len);
                if command::expects_answer(code) {
                    shared.tell(reply_seq, e);
                }
            }
        }
    }
}

/// Whether the audit records of the commands the inspector was shown are durable
/// (`audit = "required"`; otherwise there are none to wait for).
fn audited(shared: &Shared<'_>) -> Result<(), MyError> {
    shared
        .inspector()
        .pending_records()
        .map_err(|e| MyError::audit_unavailable(&e.0))
}

fn unsupported(what: &str, fix: &str) -> crate::inspect::Denial {
    let e = MyError::unsupported_command(what, fix);
    crate::inspect::Denial {
        message: e.message,
        detail: None,
        hint: None,
    }
}

/// Database to client, untouched: each packet's start is shown to the tracker (for status
/// flags, statement ids and LOCAL INFILE requests) and the rest streams. Airlock's own ERR
/// packets go out between answers, in their place in the order of the client's commands.
async fn answers(
    from: &mut ReadHalf<Stream>,
    to: &mut WriteHalf<Stream>,
    buf: BytesMut,
    shared: &Shared<'_>,
    deprecate_eof: bool,
    max_packet_size: usize,
) -> Outcome {
    let mut scan = AnswerScan {
        buf,
        streaming: 0,
        continuing: false,
        tracker: Tracker::new(deprecate_eof),
        max: max_packet_size,
        answer: AnswerSoFar::default(),
    };
    loop {
        let (ready, need, refused) = scan.scan(shared);
        if ready > 0 {
            if write_out(to, &scan.buf[..ready]).await.is_err() {
                return Outcome::ClientVanished;
            }
            scan.buf.advance(ready);
        }
        match refused {
            Some(AnswerEnd::Refuse(e)) => {
                tracing::warn!(reason = %e.message, "closing the session");
                let _ = send(to, 1, &e).await;
                let _ = to.shutdown().await;
                return Outcome::UpstreamRefused;
            }
            Some(AnswerEnd::Replace { n, with }) => {
                if write_out(to, &with).await.is_err() {
                    return Outcome::ClientVanished;
                }
                scan.buf.advance(n);
                continue;
            }
            Some(AnswerEnd::Ours(Ours { seq, error, close })) => {
                if close {
                    let _ = send(to, seq, &error).await;
                    let _ = to.shutdown().await;
                    return Outcome::ClientRefused;
                }
                if send(to, seq, &error).await.is_err() {
                    return Outcome::ClientVanished;
                }
                continue;
            }
            None => {}
        }
        tokio::select! {
            () = shared.ours.notified() => {}
            read = read_more(from, &mut scan.buf, need) => {
                if read.is_err() {
                    return Outcome::UpstreamClosed;
                }
            }
        }
    }
}

/// The answer pump's buffer and where it is in the packet stream.
struct AnswerScan {
    buf: BytesMut,
    /// Bytes of the current physical packet still to pass through.
    streaming: usize,
    /// The current logical packet continues in the next physical one (16 MiB pieces).
    continuing: bool,
    tracker: Tracker,
    /// Largest packet held whole for an inspector that reads rows.
    max: usize,
    /// What the answer in progress said so far, for [`MysqlInspector::answered`].
    answer: AnswerSoFar,
}

#[derive(Default)]
struct AnswerSoFar {
    open: bool,
    rows: u64,
    result_set: bool,
    affected: Option<u64>,
    error: Option<u16>,
}

impl AnswerScan {
    /// Walks the buffer (pure: no I/O): returns the bytes that may go to the client, the
    /// buffer size needed to go on, and what must happen after those bytes: a packet
    /// rewritten, an answer of Airlock's own, or an error because the database must not be
    /// relayed further.
    fn scan(&mut self, shared: &Shared<'_>) -> (usize, usize, Option<AnswerEnd>) {
        let mut ready = 0;
        while ready < self.buf.len() {
            if self.streaming > 0 {
                let n = self.streaming.min(self.buf.len() - ready);
                self.streaming -= n;
                ready += n;
                continue;
            }
            if let Some(ours) = self.ours_next(shared) {
                return (ready, 0, Some(AnswerEnd::Ours(ours)));
            }
            let Some(h) = packet::header(&self.buf[ready..]) else {
                return (ready, ready + HEADER_LEN, None);
            };
            let start = !self.continuing;
            self.continuing = h.len == packet::MAX_CHUNK;
            if start {
                // An inspector that reads rows gets each packet whole (up to the limit).
                let whole = shared.wants_rows && h.len < packet::MAX_CHUNK && h.len <= self.max;
                let head_len = if whole {
                    h.len
                } else {
                    h.len.min(response::HEAD)
                };
                let head_end = ready + HEADER_LEN + head_len;
                if self.buf.len() < head_end {
                    self.continuing = !start;
                    return (ready, head_end, None);
                }
                if self.tracker.is_idle()
                    && let Some(next) = shared.database_next()
                {
                    self.tracker.expect(next);
                    shared.idle.store(false, Ordering::Release);
                    self.answer = AnswerSoFar {
                        open: true,
                        ..AnswerSoFar::default()
                    };
                }
                let event = self
                    .tracker
                    .packet(h.len, &self.buf[ready + HEADER_LEN..head_end]);
                if self.tracker.is_idle() {
                    shared.idle.store(true, Ordering::Release);
                }
                let head = &self.buf[ready + HEADER_LEN..head_end];
                match event {
                    Some(Event::Row { .. }) => self.answer.rows += 1,
                    Some(Event::Columns) => self.answer.result_set = true,
                    Some(Event::Status(_)) if head.first() == Some(&0) => {
                        self.answer.affected = response::ok_affected_rows(head);
                    }
                    Some(Event::Error) => self.answer.error = response::err_code(head),
                    _ => {}
                }
                if self.answer.open && self.tracker.is_idle() {
                    let a = std::mem::take(&mut self.answer);
                    let rows = if a.result_set {
                        Some(a.rows)
                    } else {
                        a.affected
                    };
                    shared.inspector().answered(rows, a.error);
                }
                match event {
                    Some(Event::Status(flags)) => shared.inspector().status(Some(flags)),
                    Some(Event::Prepared { id, params }) => {
                        shared.inspector().prepared(Some((id, params)))
                    }
                    Some(Event::Error) => shared.inspector().prepared(None),
                    Some(Event::Unexpected) => {
                        tracing::debug!(
                            "an answer Airlock did not follow; string syntax now unknown"
                        );
                        shared.inspector().status(None);
                    }
                    Some(Event::LocalInfile { text: true }) if shared.infile.is_some() => {
                        if let Some(infile) = shared.infile {
                            infile.store(true, Ordering::Release);
                        }
                    }
                    Some(Event::LocalInfile { .. }) => {
                        let e = MyError::local_infile_requested();
                        return (ready, 0, Some(AnswerEnd::Refuse(e)));
                    }
                    Some(Event::Definition | Event::Row { .. }) if shared.wants_rows && !whole => {
                        // Inspection fails closed: a row too large to hold is not passed unread.
                        let e = MyError::packet_too_large(h.len, self.max);
                        return (ready, 0, Some(AnswerEnd::Refuse(e)));
                    }
                    Some(Event::Columns) if shared.wants_rows => shared.inspector().columns(),
                    Some(Event::Definition) if shared.wants_rows => shared
                        .inspector()
                        .definition(&self.buf[ready + HEADER_LEN..head_end]),
                    Some(Event::Columns | Event::Definition) | None => {}
                    Some(Event::Row { .. }) if !shared.wants_rows => {}
                    Some(Event::Row { binary }) => {
                        let payload = &self.buf[ready + HEADER_LEN..head_end];
                        let rewrite = shared.inspector().row(binary, payload);
                        if let Some(end) = rewritten(rewrite, h.seq, HEADER_LEN + h.len) {
                            return (ready, 0, Some(end));
                        }
                    }
                }
                if event == Some(Event::Error) && shared.wants_rows && whole {
                    let payload = &self.buf[ready + HEADER_LEN..head_end];
                    let rewrite = shared.inspector().error(payload);
                    if let Some(end) = rewritten(rewrite, h.seq, HEADER_LEN + h.len) {
                        return (ready, 0, Some(end));
                    }
                }
            }
            self.streaming = HEADER_LEN + h.len;
        }
        if self.streaming == 0
            && let Some(ours) = self.ours_next(shared)
        {
            return (ready, 0, Some(AnswerEnd::Ours(ours)));
        }
        (ready, 0, None)
    }

    /// Airlock's own answer, if it is next: only between the database's answers.
    fn ours_next(&self, shared: &Shared<'_>) -> Option<Ours> {
        if self.continuing || !self.tracker.is_idle() {
            return None;
        }
        shared.ours_next()
    }
}

/// What the answer pump must do after the bytes a scan found ready.
enum AnswerEnd {
    /// Send the client this error and end the session.
    Refuse(MyError),
    /// Send `with` in place of the next `n` bytes (a packet an inspector rewrote).
    Replace { n: usize, with: BytesMut },
    /// Send Airlock's own answer to a command it did not forward.
    Ours(Ours),
}

/// What becomes of the packet of `n` bytes with sequence id `seq` that an inspector was
/// shown, if not passed as it is.
fn rewritten(rewrite: Rewrite, seq: u8, n: usize) -> Option<AnswerEnd> {
    match rewrite {
        Rewrite::Keep => None,
        Rewrite::Replace(payload) if payload.len() < packet::MAX_CHUNK => {
            let mut with = BytesMut::with_capacity(HEADER_LEN + payload.len());
            packet::put(&mut with, seq, &payload);
            Some(AnswerEnd::Replace { n, with })
        }
        Rewrite::Replace(_) => Some(AnswerEnd::Refuse(MyError::unmaskable(
            "a masked row would exceed 16 MiB",
        ))),
        Rewrite::Refuse(reason) => Some(AnswerEnd::Refuse(MyError::unmaskable(&reason))),
    }
}

async fn send(to: &mut WriteHalf<Stream>, seq: u8, e: &MyError) -> std::io::Result<()> {
    let mut out = BytesMut::new();
    e.encode(seq, &mut out);
    write_out(to, &out).await
}

#[cfg(test)]
mod tests {
    //! The answer scanner against random answers cut at random points: every byte passes
    //! exactly once and in order, and every OK/EOF's status reaches the inspector.

    use super::*;
    use crate::inspect::{Denial, MysqlInspector};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    #[derive(Default)]
    struct Seen {
        statuses: Vec<Option<u16>>,
        prepared: Vec<Option<(u32, u16)>>,
        rows: usize,
        row_bytes: usize,
    }

    struct Recorder(std::sync::Arc<Mutex<Seen>>);

    impl MysqlInspector for Recorder {
        fn command(&mut self, _c: &Command<'_>) -> Verdict {
            Verdict::Deny(Denial {
                message: String::new(),
                detail: None,
                hint: None,
            })
        }
        fn prepared(&mut self, id: Option<(u32, u16)>) {
            self.0.lock().unwrap().prepared.push(id);
        }
        fn status(&mut self, flags: Option<u16>) {
            self.0.lock().unwrap().statuses.push(flags);
        }
        fn wants_rows(&self) -> bool {
            true
        }
        fn row(&mut self, _binary: bool, payload: &[u8]) -> Rewrite {
            let mut seen = self.0.lock().unwrap();
            seen.rows += 1;
            seen.row_bytes += payload.len();
            Rewrite::Keep
        }
    }

    fn put(out: &mut BytesMut, seq: &mut u8, payload: &[u8]) {
        *seq = packet::put(out, *seq, payload).wrapping_add(1);
    }

    /// What the pumps share, owned by the test.
    struct Fixture {
        inspector: Mutex<Box<dyn MysqlInspector>>,
        owed: Mutex<VecDeque<Owed>>,
        ours: Notify,
        idle: AtomicBool,
        infile: AtomicBool,
    }

    impl Fixture {
        fn new(seen: std::sync::Arc<Mutex<Seen>>) -> Fixture {
            Fixture {
                inspector: Mutex::new(Box::new(Recorder(seen))),
                owed: Mutex::new(VecDeque::new()),
                ours: Notify::new(),
                idle: AtomicBool::new(true),
                infile: AtomicBool::new(false),
            }
        }

        fn shared(&self, wants_rows: bool, local_infile: bool) -> Shared<'_> {
            Shared {
                inspector: &self.inspector,
                owed: &self.owed,
                ours: &self.ours,
                idle: &self.idle,
                infile: local_infile.then_some(&self.infile),
                resolve: &|_| None,
                wants_rows,
                approvals: None,
                kill: None,
            }
        }
    }

    fn scanner(deprecate_eof: bool) -> AnswerScan {
        AnswerScan {
            buf: BytesMut::new(),
            streaming: 0,
            continuing: false,
            tracker: Tracker::new(deprecate_eof),
            max: 1 << 20,
            answer: AnswerSoFar::default(),
        }
    }

    fn terminator(deprecate: bool, status: u16) -> Vec<u8> {
        if deprecate {
            let mut p = vec![0xfe, 0, 0];
            p.extend(status.to_le_bytes());
            p.extend([0, 0]);
            p
        } else {
            let mut p = vec![0xfe, 0, 0];
            p.extend(status.to_le_bytes());
            p
        }
    }

    /// A random result-set answer; returns it with the statuses it reports and its rows (count
    /// and payload bytes).
    fn results(rng: &mut StdRng, deprecate: bool) -> (Vec<u8>, Vec<Option<u16>>, (usize, usize)) {
        let mut rows = (0, 0);
        let mut out = BytesMut::new();
        let mut seq = 1;
        let mut statuses = Vec::new();
        let sets = rng.random_range(1..4);
        for i in 0..sets {
            let more = if i + 1 < sets { 0x0008 } else { 0 };
            let status = 0x0002 | more | (rng.random_range(0..2u16) * 0x0200);
            if rng.random_bool(0.3) {
                let mut ok = vec![0x00, 0x01, 0x00];
                ok.extend(status.to_le_bytes());
                ok.extend([0, 0]);
                put(&mut out, &mut seq, &ok);
                statuses.push(Some(status));
                continue;
            }
            let columns = rng.random_range(1..5u8);
            put(&mut out, &mut seq, &[columns]);
            for _ in 0..columns {
                put(
                    &mut out,
                    &mut seq,
                    b"\x03def\x04test\x01t\x01t\x01c\x01c\x0c",
                );
            }
            if !deprecate {
                put(&mut out, &mut seq, &terminator(false, 0x0002));
                statuses.push(Some(0x0002));
            }
            for _ in 0..rng.random_range(0..30) {
                // Rows that start like OK, NULL or a long string, some longer than a chunk.
                let first = [0x00, 0xfb, 0x05, 0xfc][rng.random_range(0..4)];
                let len = rng.random_range(1..40_000);
                let mut row = vec![7u8; len];
                row[0] = first;
                put(&mut out, &mut seq, &row);
                rows.0 += 1;
                rows.1 += len;
            }
            put(&mut out, &mut seq, &terminator(deprecate, status));
            statuses.push(Some(status));
        }
        (out.to_vec(), statuses, rows)
    }

    #[test]
    fn answers_pass_whole_in_order_and_report_every_status() {
        for seed in 0..200 {
            let mut rng = StdRng::seed_from_u64(seed);
            let deprecate = seed % 2 == 0;
            let seen = std::sync::Arc::new(Mutex::new(Seen::default()));
            let fixture = Fixture::new(seen.clone());
            let shared = fixture.shared(true, false);
            let mut expected = Vec::new();
            let mut rows = (0, 0);
            for _ in 0..rng.random_range(1..6) {
                let (input, statuses, r) = results(&mut rng, deprecate);
                expected.extend(statuses);
                rows = (rows.0 + r.0, rows.1 + r.1);
                shared.expect(Answer::Results);
                let mut scan = scanner(deprecate);
                let mut forwarded = Vec::new();
                let mut rest = &input[..];
                while !rest.is_empty() {
                    let n = rng.random_range(1..5000).min(rest.len());
                    scan.buf.extend_from_slice(&rest[..n]);
                    rest = &rest[n..];
                    let (ready, _, end) = scan.scan(&shared);
                    assert!(end.is_none());
                    forwarded.extend_from_slice(&scan.buf[..ready]);
                    scan.buf.advance(ready);
                }
                assert!(forwarded == input, "seed {seed}: every byte once, in order");
                assert!(scan.tracker.is_idle(), "seed {seed}: the answer ended");
                assert!(shared.idle.load(Ordering::Acquire) && shared.owed().is_empty());
            }
            let seen = seen.lock().unwrap();
            assert_eq!(seen.statuses, expected, "seed {seed}");
            assert_eq!(
                (seen.rows, seen.row_bytes),
                rows,
                "seed {seed}: every row seen whole"
            );
        }
    }

    /// Commands pipelined as [forwarded, refused, forwarded]: Airlock's ERR goes out after the
    /// whole first answer and before any of the second, however the bytes arrive.
    #[test]
    fn airlocks_own_answer_waits_for_the_answers_owed_before_it() {
        for seed in 0..100 {
            let mut rng = StdRng::seed_from_u64(seed);
            let fixture = Fixture::new(Default::default());
            let shared = fixture.shared(false, false);
            let (first, _, _) = results(&mut rng, true);
            let (second, _, _) = results(&mut rng, true);
            shared.expect(Answer::Results);
            shared.tell(1, MyError::query_interrupted());
            shared.expect(Answer::Results);
            let mut scan = scanner(true);
            let input = [first.clone(), second].concat();
            let mut client = Vec::new();
            let mut ours_at = None;
            let mut rest = &input[..];
            loop {
                let (ready, _, end) = scan.scan(&shared);
                client.extend_from_slice(&scan.buf[..ready]);
                scan.buf.advance(ready);
                match end {
                    Some(AnswerEnd::Ours(o)) => {
                        assert!(ours_at.is_none() && !o.close, "seed {seed}: told once");
                        ours_at = Some(client.len());
                    }
                    Some(_) => panic!("seed {seed}: nothing to rewrite or refuse"),
                    None if rest.is_empty() => break,
                    None => {
                        let n = rng.random_range(1..5000).min(rest.len());
                        scan.buf.extend_from_slice(&rest[..n]);
                        rest = &rest[n..];
                    }
                }
            }
            assert!(client == input, "seed {seed}: every byte once, in order");
            assert_eq!(
                ours_at,
                Some(first.len()),
                "seed {seed}: between the answers"
            );
            assert!(shared.owed().is_empty());
        }
    }

    /// Scans a LOCAL INFILE request in answer to `answer`: what reached the client, whether
    /// the session was refused and whether the command pump now expects the file.
    fn local_infile_request(allowed: bool, answer: Answer) -> (usize, Option<u16>, bool) {
        let fixture = Fixture::new(Default::default());
        let shared = fixture.shared(false, allowed);
        shared.expect(answer);
        let mut scan = scanner(true);
        packet::put(&mut scan.buf, 1, b"\xfb/etc/passwd");
        let (ready, _, end) = scan.scan(&shared);
        (
            ready,
            end.map(|e| match e {
                AnswerEnd::Refuse(e) => e.code,
                AnswerEnd::Replace { .. } => panic!("nothing to rewrite"),
                AnswerEnd::Ours(_) => panic!("Airlock owes no answer of its own"),
            }),
            fixture.infile.load(Ordering::Acquire),
        )
    }

    #[test]
    fn a_local_infile_request_is_relayed_only_where_allowed_and_only_for_com_query() {
        assert_eq!(
            local_infile_request(false, Answer::Results),
            (0, Some(2068), false),
            "not allowed: nothing of it reaches the client"
        );
        assert_eq!(
            local_infile_request(true, Answer::Results),
            (HEADER_LEN + 12, None, true),
            "allowed: relayed, and the client's next packets are the file"
        );
        assert_eq!(
            local_infile_request(true, Answer::BinaryResults),
            (0, Some(2068), false),
            "a prepared statement cannot LOAD DATA: a request there is refused"
        );
    }
}
