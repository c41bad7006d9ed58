//! The audit trail's store: `audit.db` (SQLite, WAL) in the state directory, appended to by
//! one background flusher that commits whatever has queued up as one transaction (group
//! commit), with the journal before it when audit is required, and read back in order for
//! verification and export.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, params};

use super::checkpoint::{Checkpoint, Signer};
use super::journal::{self, Journal};
use super::record::{Event, Head, Outcome, Record};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY,
    at INTEGER NOT NULL,
    type TEXT NOT NULL,
    event TEXT NOT NULL,
    prev BLOB NOT NULL,
    hash BLOB NOT NULL
);
-- No index on time: every index is another page written per commit. Records are
-- appended in time order, so a period is read by a scan.
CREATE TABLE IF NOT EXISTS checkpoints (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    seq INTEGER NOT NULL,
    body TEXT NOT NULL
);
";

/// Buffered records that wake the flusher before its time.
const BATCH: usize = 4096;

/// The audit store cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the audit store cannot be written: {0}")]
pub struct AuditError(pub String);

impl From<rusqlite::Error> for AuditError {
    fn from(e: rusqlite::Error) -> Self {
        AuditError(e.to_string())
    }
}

/// Whether a statement's intent is durable (it is written in the session's own thread, so
/// the answer is known when [`AuditLog::begin`] returns).
pub type Ack = Result<(), AuditError>;

/// Whether statements wait for their records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A statement is forwarded only once its record is durable; if the store cannot be
    /// written, statements are refused.
    Required,
    /// Records are written in the background; a statement never waits for its record.
    BestEffort,
}

/// The audit log. Records are numbered and buffered under one short lock. A statement is
/// recorded once, when its answer is known ([`AuditLog::settle`]); with `required` audit its
/// intent ([`AuditLog::begin`]) is written to the journal before it is forwarded, in the
/// caller's thread, with the records buffered before it (a statement's record as its
/// outcome alone). A background flusher takes the buffer every few milliseconds, seals the
/// records (the chain's hashes) and commits them to `audit.db` under a second lock, so
/// sessions neither hash the chain nor wait for SQLite. No thread hand-off sits between a
/// statement and its durable intent.
pub struct AuditLog {
    inner: Arc<Shared>,
    flusher: std::thread::Thread,
    pub mode: Mode,
}

struct Shared {
    chain: Mutex<Chain>,
    /// Taken before `chain` whenever both are held.
    store: Mutex<Store>,
}

/// The records not yet handed to `audit.db`, numbered but not sealed: the flusher computes
/// their hashes as it commits them.
struct Chain {
    /// The number of the last record.
    seq: u64,
    buffer: Vec<Unsealed>,
    /// Records sealed but not committed (a commit failed; it is tried again), counted so that
    /// a required trail refuses statements once too many wait.
    backlog: usize,
    /// With `required` audit: where records are durable before they reach `audit.db`.
    journal: Option<Journal>,
    /// How many records at the start of `buffer` are in the journal.
    journaled: usize,
    /// Frames on their way to the journal (kept for its capacity).
    frames: Vec<u8>,
    /// The last intent numbered.
    intents: u64,
    /// The intents in the journal that no record has settled yet (statements awaiting their
    /// answer), in the order they were numbered, which is mostly the order they are settled
    /// in: each one's number and where its frame is in the journal, to carry into a new one.
    open: VecDeque<(u64, usize)>,
}

/// A record numbered, with its time and event, but not sealed yet.
struct Unsealed {
    seq: u64,
    at: i64,
    event: String,
    /// For a statement's record: the intent it settles (0: none), and where in `event` its
    /// outcome starts (what the journal holds of it).
    settles: u64,
    outcome_from: Option<usize>,
}

/// A statement's record in the making: its event as JSON with no outcome yet, when it was
/// received, and with `required` audit the number of the intent that stands for it in the
/// journal.
#[derive(Debug)]
pub struct Intent {
    id: u64,
    at: i64,
    event: String,
}

/// The flusher's side: the sealed chain's head, and `audit.db`.
struct Store {
    db: Connection,
    head: Head,
    /// Records sealed whose commit failed, for the next attempt.
    unsaved: Vec<Record>,
    checkpoints: Option<Checkpointing>,
    last_checkpoint: std::time::Instant,
}

/// How often the background flusher commits buffered records without a journal (and how
/// much a crash may lose of records nothing waited for).
const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(5);

/// How often the flusher commits records that are durable in the journal already. Larger
/// batches cost less per record; readers see the journal's tail meanwhile.
const FLUSH_JOURNALED_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

/// The journal is set aside for a new one at this size, and removed once everything in it
/// is in `audit.db`.
const JOURNAL_MAX: u64 = 4 << 20;

/// Records kept for a later attempt while `audit.db` cannot be written; past this, a
/// required trail refuses statements.
const BUFFER_MAX: usize = 64 * BATCH;

pub fn open_db(dir: &Path) -> Result<Connection, AuditError> {
    std::fs::create_dir_all(dir).map_err(|e| {
        AuditError(format!(
            "cannot create the state directory {}: {e}",
            dir.display()
        ))
    })?;
    let db = Connection::open(dir.join("audit.db"))?;
    db.busy_timeout(std::time::Duration::from_secs(5))?;
    // 16 KiB pages: a quarter of the pages to write to the WAL and copy back at each
    // checkpoint, for records appended in order (the flusher spent 30% less CPU per record
    // than with 4 KiB). Only a new audit.db takes it; an existing one keeps its pages.
    db.pragma_update(None, "page_size", 16384)?;
    db.pragma_update(None, "journal_mode", "WAL")?;
    // WAL with NORMAL keeps every committed transaction through a crash of Airlock (kill -9)
    // without an fsync per commit; power loss may lose the last commits.
    db.pragma_update(None, "synchronous", "NORMAL")?;
    db.execute_batch(SCHEMA)?;
    Ok(db)
}

/// Signs a checkpoint of the head every `every` while records are written.
pub struct Checkpointing {
    pub signer: Signer,
    pub every: std::time::Duration,
}

impl AuditLog {
    /// Opens (creating if needed) `audit.db` in `dir` and starts its flusher.
    pub fn open(dir: &Path, mode: Mode) -> Result<AuditLog, AuditError> {
        AuditLog::open_signed(dir, mode, None)
    }

    /// As [`AuditLog::open`], with periodic signed checkpoints.
    pub fn open_signed(
        dir: &Path,
        mode: Mode,
        checkpoints: Option<Checkpointing>,
    ) -> Result<AuditLog, AuditError> {
        let mut db = open_db(dir)?;
        let head = recover(dir, &mut db)?;
        let journal = match mode {
            Mode::Required => Some(
                Journal::open(dir)
                    .map(|(j, _)| j)
                    .map_err(|e| AuditError(format!("cannot open the audit journal: {e}")))?,
            ),
            Mode::BestEffort => None,
        };
        let inner = Arc::new(Shared {
            chain: Mutex::new(Chain {
                seq: head.seq,
                buffer: Vec::new(),
                backlog: 0,
                journal,
                journaled: 0,
                frames: Vec::new(),
                intents: 0,
                open: VecDeque::new(),
            }),
            store: Mutex::new(Store {
                db,
                head,
                unsaved: Vec::new(),
                checkpoints,
                last_checkpoint: std::time::Instant::now(),
            }),
        });
        let weak = Arc::downgrade(&inner);
        let every = match mode {
            Mode::Required => FLUSH_JOURNALED_EVERY,
            Mode::BestEffort => FLUSH_EVERY,
        };
        let flusher = std::thread::Builder::new()
            .name("airlock-audit".into())
            .spawn(move || flusher(weak, every))
            .map_err(|e| AuditError(format!("cannot start the audit flusher: {e}")))?
            .thread()
            .clone();
        Ok(AuditLog {
            inner,
            flusher,
            mode,
        })
    }

    /// Begins the record of a statement received at `at`: `event` is its JSON text with no
    /// outcome (see [`super::statement_json`]). With `required` audit its intent is written
    /// to the journal, with the records buffered before it, and the answer says whether it
    /// is durable: the statement must not be forwarded before.
    pub fn begin(&self, event: String, at: i64) -> (Intent, Option<Ack>) {
        if self.mode == Mode::BestEffort {
            return (Intent { id: 0, at, event }, None);
        }
        let mut chain = self.inner.chain();
        chain.intents += 1;
        let id = chain.intents;
        let result = chain
            .within_bounds()
            .and_then(|()| chain.journal_buffer(Some((id, at, &event))));
        let result = result.map(|frame| {
            if let Some(frame) = frame {
                chain.open.push_back((id, frame));
            }
        });
        drop(chain);
        (Intent { id, at, event }, Some(result))
    }

    /// Records a statement begun with [`AuditLog::begin`], now that `outcome` is known; it
    /// is committed with the flusher's next batch (and journaled with the next intent).
    pub fn settle(&self, intent: Intent, outcome: &Outcome) {
        let outcome_from = super::record::outcome_from(&intent.event);
        let event = super::record::with_outcome(intent.event, outcome);
        let mut chain = self.inner.chain();
        // Its time is when its answer came: received, plus how long it took (no clock read).
        let at = intent.at.saturating_add_unsigned(outcome.duration_us);
        chain.push(event, at, intent.id, outcome_from);
        if intent.id != 0
            && let Ok(i) = chain.open.binary_search_by_key(&intent.id, |&(id, _)| id)
        {
            chain.open.remove(i);
        }
        if chain.buffer.len() >= BATCH {
            drop(chain);
            self.flusher.unpark();
        }
    }

    /// Appends `event`; it is committed with the flusher's next batch (and journaled with the
    /// next intent).
    pub fn record(&self, event: &Event) {
        let event = json(event);
        let mut chain = self.inner.chain();
        chain.push(event, now_micros(), 0, None);
        if chain.buffer.len() >= BATCH {
            drop(chain);
            self.flusher.unpark();
        }
    }
}

/// `event` as stored: JSON text.
fn json(event: &impl serde::Serialize) -> String {
    serde_json::to_string(event).expect("events serialize")
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        if let Err(e) = self.inner.flush() {
            tracing::error!(error = %e, "audit records not written");
        }
    }
}

impl Chain {
    fn push(&mut self, event: String, at: i64, settles: u64, outcome_from: Option<usize>) {
        self.seq += 1;
        self.buffer.push(Unsealed {
            seq: self.seq,
            at,
            event,
            settles,
            outcome_from,
        });
    }

    /// Sets a full journal aside for a new one, which starts with the intents still open.
    fn rotate(&mut self) {
        let Some(journal) = &mut self.journal else {
            return;
        };
        if !journal.due(JOURNAL_MAX) {
            return;
        }
        // The open intents' frames, copied from the journal, and where each lands in the new.
        self.frames.clear();
        let mut moved = Vec::with_capacity(self.open.len());
        for &(_, frame) in &self.open {
            moved.push(self.frames.len());
            if let Err(e) = journal.copy_frame(frame, &mut self.frames) {
                tracing::error!(error = %e, "cannot carry an open intent out of the full audit journal");
                return;
            }
        }
        match journal.rotate(JOURNAL_MAX, &self.frames) {
            Ok(()) => {
                for ((_, frame), moved) in self.open.iter_mut().zip(moved) {
                    *frame = moved;
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot set the full audit journal aside"),
        }
    }

    /// Whether few enough records wait to take more statements.
    fn within_bounds(&self) -> Result<(), AuditError> {
        let waiting = self.buffer.len() + self.backlog;
        match waiting > BUFFER_MAX {
            true => Err(AuditError(format!(
                "{waiting} records wait for audit.db, which cannot be written"
            ))),
            false => Ok(()),
        }
    }

    /// Writes to the journal the buffered records not yet in it, then `intent` (number,
    /// time, event) if any, as one batch; nothing without a journal. Returns where the
    /// intent's frame is in the journal.
    fn journal_buffer(
        &mut self,
        intent: Option<(u64, i64, &str)>,
    ) -> Result<Option<usize>, AuditError> {
        let Some(journal) = &mut self.journal else {
            return Ok(None);
        };
        if self.journaled == self.buffer.len() && intent.is_none() {
            return Ok(None);
        }
        self.frames.clear();
        for u in &self.buffer[self.journaled..] {
            match u.outcome_from {
                // A statement's record: its outcome completes the intent journaled before.
                Some(from) if u.settles != 0 => journal::frame_unsealed(
                    u.seq,
                    u.at,
                    u.settles,
                    &u.event[from..u.event.len() - 1],
                    &mut self.frames,
                ),
                _ => journal::frame_unsealed(u.seq, u.at, 0, &u.event, &mut self.frames),
            }
        }
        let frame = intent.map(|(id, at, event)| {
            let frame = journal.len() + self.frames.len();
            journal::frame_intent(id, at, event, &mut self.frames);
            frame
        });
        journal
            .append(&self.frames)
            .map_err(|e| AuditError(format!("cannot write the audit journal: {e}")))?;
        self.journaled = self.buffer.len();
        Ok(frame)
    }
}

impl Shared {
    fn chain(&self) -> std::sync::MutexGuard<'_, Chain> {
        self.chain.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Commits the buffer to `audit.db`, holding the chain's lock only to take the buffer
    /// (journaled whole first, so that the journal never skips a record) and to remove a
    /// journal set aside after; the records are sealed (hashed) outside it. Records that
    /// cannot be committed are kept, sealed, for the next attempt.
    fn flush(&self) -> Result<(), AuditError> {
        let mut store = self.store.lock().unwrap_or_else(|p| p.into_inner());
        let store = &mut *store;
        let taken = {
            let mut chain = self.chain();
            if chain.buffer.is_empty() && store.unsaved.is_empty() {
                return Ok(());
            }
            if let Err(e) = chain.journal_buffer(None) {
                // The journal cannot be written: commit the buffer without letting go of it,
                // so that no later record is journaled past the ones missing there. (Should
                // Airlock then crash, the intents these records settle are recovered as
                // statements with no outcome, next to their records: one too many, never
                // one missing.)
                tracing::error!(error = %e.0, "audit records committed past the journal");
                let taken = std::mem::take(&mut chain.buffer);
                chain.journaled = 0;
                store.seal(taken);
                let committed = store.commit();
                chain.backlog = store.unsaved.len();
                return committed;
            }
            chain.rotate();
            chain.journaled = 0;
            std::mem::take(&mut chain.buffer)
        };
        store.seal(taken);
        let committed = store.commit();
        let mut chain = self.chain();
        chain.backlog = store.unsaved.len();
        committed?;
        if let Some(j) = &mut chain.journal
            && let Err(e) = j.recycle_retired()
        {
            // Everything journaled before the take is in audit.db now.
            tracing::error!(error = %e, "cannot empty the audit journal set aside");
        }
        Ok(())
    }
}

impl Store {
    /// Seals `records`, in order, onto the chain.
    fn seal(&mut self, records: Vec<Unsealed>) {
        self.unsaved.reserve(records.len());
        for u in records {
            let record = self.head.next(u.at, u.event);
            debug_assert_eq!(record.seq, u.seq, "records are sealed in their order");
            self.head = record.head();
            self.unsaved.push(record);
        }
    }

    /// Commits the sealed records in one transaction, then signs a checkpoint if one is due.
    fn commit(&mut self) -> Result<(), AuditError> {
        let Some(committed) = self.unsaved.last().map(Record::head) else {
            return Ok(());
        };
        if let Err(e) = insert(&mut self.db, &self.unsaved) {
            tracing::error!(error = %e, records = self.unsaved.len(), "audit records not written yet");
            return Err(e);
        }
        self.unsaved.clear();
        if let Some(c) = &self.checkpoints
            && self.last_checkpoint.elapsed() >= c.every
        {
            self.last_checkpoint = std::time::Instant::now();
            let checkpoint = c.signer.sign(committed, now_micros(), "periodic");
            if let Err(e) = save_checkpoint(&self.db, &checkpoint) {
                tracing::error!(error = %e, "audit checkpoint not written");
            }
        }
        Ok(())
    }
}

/// Commits buffered records every `every` (or sooner when woken by a full buffer) until the
/// log is dropped.
fn flusher(log: std::sync::Weak<Shared>, every: std::time::Duration) {
    loop {
        std::thread::park_timeout(every);
        let Some(inner) = log.upgrade() else {
            return;
        };
        let _ = inner.flush();
    }
}

pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// The chain head in `db`.
pub fn head(db: &Connection) -> Result<Head, AuditError> {
    let head = db
        .query_row(
            "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)),
        )
        .optional()?;
    match head {
        None => Ok(Head::EMPTY),
        Some((seq, hash)) => Ok(Head {
            seq: seq as u64,
            hash: hash
                .try_into()
                .map_err(|_| AuditError(format!("record {seq} has a malformed hash")))?,
        }),
    }
}

/// Moves into `db` what a crash left in the journal in `dir`: the records beyond `db`'s head
/// that follow it in the chain, then, as statements with no outcome, those whose intent no
/// record settles (forwarded, or about to be, when Airlock stopped). Empties the journal;
/// returns the chain head.
fn recover(dir: &Path, db: &mut Connection) -> Result<Head, AuditError> {
    let stored = head(db)?;
    if !journal::exists(dir) {
        return Ok(stored);
    }
    let (mut journal, entries) = Journal::open(dir)
        .map_err(|e| AuditError(format!("cannot open the audit journal: {e}")))?;
    let replayed = journal::replay(entries, stored);
    let mut missing: Vec<Record> = replayed.records.into_iter().map(|(r, _)| r).collect();
    let recovered = missing.len();
    let mut head = missing.last().map_or(stored, Record::head);
    for (id, (at, event)) in replayed.intents {
        if !replayed.settled.contains(&id) {
            let r = head.next(at, event);
            head = r.head();
            missing.push(r);
        }
    }
    if !missing.is_empty() {
        insert(db, &missing)?;
        tracing::info!(
            records = recovered,
            unanswered = missing.len() - recovered,
            "audit records recovered from the journal"
        );
    }
    if !journal.is_empty() {
        journal
            .clear()
            .map_err(|e| AuditError(format!("cannot empty the audit journal: {e}")))?;
    }
    Ok(head)
}

/// The records the journal in `dir` holds beyond `after` that follow it in the chain (what
/// a running Airlock has not committed to `audit.db` yet, or what a crash left there),
/// read without changing anything.
pub fn journal_tail(dir: &Path, after: Head) -> Vec<Record> {
    journal::replay(journal::read(dir), after)
        .records
        .into_iter()
        .map(|(r, _)| r)
        .collect()
}

/// Stores a signed checkpoint with the trail.
pub fn save_checkpoint(db: &Connection, c: &Checkpoint) -> Result<(), AuditError> {
    let body = serde_json::to_string(c).expect("checkpoints serialize");
    db.execute(
        "INSERT INTO checkpoints (seq, body) VALUES (?1, ?2)",
        params![c.seq as i64, body],
    )?;
    Ok(())
}

/// The checkpoints stored with the trail, oldest first. One that does not parse is an
/// error: it was tampered with.
pub fn checkpoints(db: &Connection) -> Result<Vec<Checkpoint>, AuditError> {
    let mut stmt = db.prepare("SELECT id, body FROM checkpoints ORDER BY id")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
    let mut out = Vec::new();
    for row in rows {
        let (id, body) = row?;
        out.push(
            serde_json::from_str(&body).map_err(|e| {
                AuditError(format!("stored checkpoint {id} is not a checkpoint: {e}"))
            })?,
        );
    }
    Ok(out)
}

/// Removes records up to and including `upto`, after storing `checkpoint` (which must vouch
/// for record `upto`), in one transaction.
pub fn prune(db: &mut Connection, upto: u64, checkpoint: &Checkpoint) -> Result<u64, AuditError> {
    let tx = db.transaction()?;
    save_checkpoint(&tx, checkpoint)?;
    let n = tx.execute("DELETE FROM audit WHERE seq <= ?1", params![upto as i64])?;
    tx.commit()?;
    Ok(n as u64)
}

fn insert<'a>(
    db: &mut Connection,
    records: impl IntoIterator<Item = &'a Record>,
) -> Result<(), AuditError> {
    let tx = db.transaction()?;
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO audit (seq, at, type, event, prev, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for r in records {
            insert.execute(params![
                r.seq as i64,
                r.at,
                event_type(&r.event),
                r.event,
                &r.prev[..],
                &r.hash[..]
            ])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// The `type` of an event's JSON text, for the column that indexes it.
fn event_type(event: &str) -> &str {
    event
        .strip_prefix("{\"type\":\"")
        .and_then(|rest| rest.split('"').next())
        .unwrap_or("")
}

/// Reads records in order, from `after` (exclusive), with a time window.
pub fn read(
    db: &Connection,
    after: u64,
    since: Option<i64>,
    until: Option<i64>,
    mut each: impl FnMut(Record) -> Result<(), AuditError>,
) -> Result<(), AuditError> {
    let mut stmt = db.prepare(
        "SELECT seq, at, event, prev, hash FROM audit WHERE seq > ?1 AND at >= ?2 AND at < ?3 \
         ORDER BY seq",
    )?;
    let mut rows = stmt.query(params![
        after as i64,
        since.unwrap_or(i64::MIN),
        until.unwrap_or(i64::MAX)
    ])?;
    while let Some(row) = rows.next()? {
        let seq: i64 = row.get(0)?;
        let blob = |i: usize| -> Result<[u8; 32], AuditError> {
            row.get::<_, Vec<u8>>(i)?
                .try_into()
                .map_err(|_| AuditError(format!("record {seq} has a malformed hash")))
        };
        each(Record {
            seq: seq as u64,
            at: row.get(1)?,
            event: row.get(2)?,
            prev: blob(3)?,
            hash: blob(4)?,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::journal::Entry;
    use crate::audit::record::Verifier;

    fn statement(i: u64, text: &str) -> Event {
        Event::Statement {
            listener: "postgres".into(),
            session: 1,
            seq: i,
            user: "app".into(),
            text: text.into(),
            params: vec![],
            fingerprint: text.into(),
            kind: "read".into(),
            findings: vec![],
            rule: None,
            decision: "allow".into(),
            sha256: String::new(),
            received: i as i64,
            outcome: None,
        }
    }

    /// Begins the record of `event` (a statement with no outcome) now.
    fn begin(log: &AuditLog, event: &Event) -> (Intent, Option<Ack>) {
        log.begin(json(event), now_micros())
    }

    fn ran() -> Outcome {
        Outcome {
            duration_us: 1,
            ran: true,
            rows: Some(1),
            error: None,
            sample: vec![],
        }
    }

    /// Begins statement `i`, waits for its intent to be durable, and settles it.
    async fn run(log: &AuditLog, i: u64, text: &str) {
        let (intent, durable) = begin(log, &statement(i, text));
        durable.expect("a required trail").unwrap();
        log.settle(intent, &ran());
    }

    /// What a crash leaves: records and intents in the journal only, the last record cut
    /// short. The next open commits the whole records, then the statement whose intent no
    /// record settled (with no outcome), and drops the torn record.
    #[tokio::test]
    async fn what_a_crash_left_in_the_journal_is_recovered() {
        let dir = tempfile::tempdir().unwrap();
        drop(AuditLog::open(dir.path(), Mode::Required).unwrap());
        let mut head = Head::EMPTY;
        let mut bytes = Vec::new();
        let begun = |i: u64| serde_json::to_string(&statement(i, "select 1")).unwrap();
        journal::frame_intent(1, 0, &begun(1), &mut bytes);
        journal::frame_intent(2, 0, &begun(2), &mut bytes);
        for i in 0..5 {
            let event = match i {
                // Statement 1 answered, and recorded.
                3 => crate::audit::record::with_outcome(begun(1), &ran()),
                _ => serde_json::to_string(&Event::Disconnect {
                    listener: "postgres".into(),
                    session: i,
                    duration_ms: 0,
                    statements: 0,
                })
                .unwrap(),
            };
            let r = head.next(i, event);
            head = r.head();
            journal::frame(&r, if i == 3 { 1 } else { 0 }, &mut bytes);
        }
        let torn = head.next(9, "{}".into());
        let mut last = Vec::new();
        journal::frame(&torn, 0, &mut last);
        bytes.extend_from_slice(&last[..last.len() - 3]);
        std::fs::write(dir.path().join("audit.journal"), &bytes).unwrap();
        // Readers see the records before any restart...
        assert_eq!(crate::audit::records(dir.path()).unwrap().len(), 5);
        // ...and opening the log moves them into audit.db, with statement 2 unanswered, and
        // goes on from them.
        let log = AuditLog::open(dir.path(), Mode::Required).unwrap();
        run(&log, 3, "select 3").await;
        drop(log);
        assert_eq!(stored_head(dir.path()).seq, 7);
        let records = crate::audit::records(dir.path()).unwrap();
        let recovered: Event = serde_json::from_str(&records[5].event).unwrap();
        assert_eq!(recovered, statement(2, "select 1"));
        // Statement 3's intent, still in the journal, is settled there: nothing more.
        drop(AuditLog::open(dir.path(), Mode::Required).unwrap());
        assert_eq!(stored_head(dir.path()).seq, 7);
    }

    /// How many statements `dir`'s audit.db holds with no outcome.
    fn unanswered(dir: &Path) -> i64 {
        open_db(dir)
            .unwrap()
            .query_row(
                "SELECT count(*) FROM audit WHERE event LIKE '%\"outcome\":null}'",
                [],
                |r| r.get(0),
            )
            .unwrap()
    }

    /// The head of the chain in `dir`'s audit.db, which must verify.
    fn stored_head(dir: &Path) -> Head {
        let db = open_db(dir).unwrap();
        let mut v = Verifier::new();
        read(&db, 0, None, None, |r| {
            v.check(&r).map_err(|e| AuditError(e.to_string()))
        })
        .unwrap();
        v.head
    }

    /// A journal past its size is set aside when the flusher takes the buffer, and removed
    /// once its records are committed; the records after it go to a new journal, which
    /// starts with the intents still open.
    #[tokio::test]
    async fn a_full_journal_is_set_aside_and_removed_once_committed() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path(), Mode::Required).unwrap();
        let big = "x".repeat(1024);
        let (held, durable) = begin(&log, &statement(0, "select pg_sleep(1000)"));
        durable.unwrap().unwrap();
        let held_id = held.id;
        for i in 1..=5000 {
            run(&log, i, &big).await;
        }
        log.inner.flush().unwrap();
        assert!(!dir.path().join("audit.journal.old").exists());
        for i in 5001..=5010 {
            run(&log, i, &big).await;
        }
        // ~6 MB went through: the journal was set aside at least once; what it holds now
        // starts with the statement still running, and its records run without a gap to the
        // last one journaled (the last one waits in the buffer for the next intent or the
        // flusher).
        let entries = journal::read(dir.path());
        assert!(
            matches!(&entries[0], Entry::Intent { id, event, .. }
                if *id == held_id && event.contains("pg_sleep(1000)")),
            "{:?}",
            entries.first()
        );
        let seqs: Vec<u64> = entries
            .iter()
            .filter_map(|e| match e {
                Entry::Unsealed { seq, .. } => Some(*seq),
                _ => None,
            })
            .collect();
        let last = seqs.last().copied().unwrap_or(0);
        if let Some(&first) = seqs.first() {
            assert!(first > 1, "the journal was never set aside");
            assert_eq!(seqs, (first..=last).collect::<Vec<_>>());
            assert!(last >= 5009, "{last}");
        }
        // Replayed after what audit.db holds, they seal into the records that follow it,
        // each statement's outcome completing its intent.
        let committed = head(&open_db(dir.path()).unwrap()).unwrap();
        let tail = journal::replay(entries, committed).records;
        let seqs: Vec<u64> = tail.iter().map(|(r, _)| r.seq).collect();
        assert_eq!(seqs, (committed.seq + 1..=last).collect::<Vec<_>>());
        if let Some((r, settles)) = tail.last() {
            let event: Event = serde_json::from_str(&r.event).unwrap();
            assert!(matches!(
                event,
                Event::Statement {
                    outcome: Some(_),
                    ..
                }
            ));
            assert_ne!(*settles, 0);
        }
        // The journal's frames (its file is preallocated beyond them).
        let bytes = std::fs::read(dir.path().join("audit.journal")).unwrap();
        assert!((journal::frames(&bytes).1 as u64) < 2 * JOURNAL_MAX);
        log.settle(held, &ran());
        drop(log);
        assert_eq!(stored_head(dir.path()).seq, 5011);
    }

    /// An intent open while full journals are set aside is carried into each new one
    /// whole: after a crash its statement is still recorded (with no outcome).
    #[tokio::test]
    async fn an_open_intent_is_carried_through_rotations() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path(), Mode::Required).unwrap();
        let big = "x".repeat(1024);
        // Not the journal's first frame, as it is in each new journal.
        run(&log, 100_000, &big).await;
        let (held, durable) = begin(&log, &statement(0, "select pg_sleep(1000)"));
        durable.unwrap().unwrap();
        for round in 0..3 {
            for i in 1..=5000 {
                run(&log, round * 10_000 + i, &big).await;
            }
            // Over 4 MiB journaled since the last time: set aside now.
            log.inner.flush().unwrap();
            let bytes = std::fs::read(dir.path().join("audit.journal")).unwrap();
            let (entries, used) = journal::frames(&bytes);
            assert!((used as u64) < JOURNAL_MAX, "not set aside: {used} bytes");
            assert!(
                matches!(&entries[0], Entry::Intent { id, event, .. }
                    if *id == held.id && event.contains("pg_sleep(1000)")),
                "{:?}",
                entries.first()
            );
        }
        // Airlock stops with the statement unanswered.
        drop(held);
        drop(log);
        drop(AuditLog::open(dir.path(), Mode::Required).unwrap());
        assert_eq!(stored_head(dir.path()).seq, 15_002);
        let event: String = open_db(dir.path())
            .unwrap()
            .query_row(
                "SELECT event FROM audit WHERE event LIKE '%\"outcome\":null}'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(event.contains("pg_sleep(1000)"), "{event}");
    }

    /// Sessions in several threads begin and settle statements at once while the flusher
    /// sets full journals aside: every statement is recorded once, answered, in one chain.
    #[test]
    fn sessions_at_once_through_rotations_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path(), Mode::Required).unwrap();
        let big = "y".repeat(1024);
        std::thread::scope(|s| {
            for t in 0..4 {
                let (log, big) = (&log, &big);
                s.spawn(move || {
                    for i in 0..3000 {
                        let (intent, durable) = begin(log, &statement(t * 10_000 + i, big));
                        durable.unwrap().unwrap();
                        log.settle(intent, &ran());
                    }
                });
            }
        });
        drop(log);
        assert_eq!(stored_head(dir.path()).seq, 12_000);
        assert_eq!(unanswered(dir.path()), 0);
        // What the journals hold is in audit.db: a restart adds nothing.
        drop(AuditLog::open(dir.path(), Mode::Required).unwrap());
        assert_eq!(stored_head(dir.path()).seq, 12_000);
    }

    #[tokio::test]
    async fn statements_are_durable_chained_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = AuditLog::open(dir.path(), Mode::Required).unwrap();
            let begun: Vec<(Intent, Option<Ack>)> = (0..1000)
                .map(|i| begin(&log, &statement(i, "select 1")))
                .collect();
            for (intent, durable) in begun {
                durable.unwrap().unwrap();
                log.settle(intent, &ran());
            }
        }
        let log = AuditLog::open(dir.path(), Mode::Required).unwrap();
        run(&log, 1000, "select 2").await;
        drop(log);
        assert_eq!(stored_head(dir.path()).seq, 1001);
        let db = open_db(dir.path()).unwrap();
        let t: String = db
            .query_row("SELECT type FROM audit WHERE seq = 1", [], |r| r.get(0))
            .unwrap();
        assert_eq!(t, "statement");
        // Nothing is left open: no statement is recovered as unanswered.
        assert_eq!(unanswered(dir.path()), 0);
    }

    /// A best-effort trail keeps no journal (and audit.db is made with 16 KiB pages), and a
    /// second Airlock cannot share a required trail's journal.
    #[tokio::test]
    async fn only_a_required_trail_keeps_a_journal_and_only_one_airlock_uses_it() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path(), Mode::BestEffort).unwrap();
        let (intent, durable) = begin(&log, &statement(0, "select 1"));
        assert!(durable.is_none());
        log.settle(intent, &ran());
        drop(log);
        assert!(!journal::exists(dir.path()));
        let page: i64 = open_db(dir.path())
            .unwrap()
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .unwrap();
        assert_eq!(page, 16384);
        let log = AuditLog::open(dir.path(), Mode::Required).unwrap();
        run(&log, 1, "select 2").await;
        let e = AuditLog::open(dir.path(), Mode::Required).err().unwrap();
        assert!(e.0.contains("in use by another Airlock"), "{e}");
        drop(log);
        assert_eq!(stored_head(dir.path()).seq, 2);
    }
}
