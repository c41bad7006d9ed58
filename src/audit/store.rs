//! The audit trail's store: `audit.db` (SQLite, WAL) in the state directory, appended to by
//! one background writer that commits whatever has queued up as one transaction (group
//! commit), and read back in order for verification and export.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::oneshot;

use super::checkpoint::{Checkpoint, Signer};
use super::journal::{self, Journal};
use super::record::{Event, Head, Record};

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

/// Resolves once a record is durable (or could not be written).
pub type Ack = oneshot::Receiver<Result<(), AuditError>>;

/// Waits until every record in `acks` is durable: the first failure, if any.
pub async fn durable(acks: Vec<Ack>) -> Result<(), AuditError> {
    for ack in acks {
        ack.await
            .unwrap_or_else(|_| Err(AuditError("the audit writer stopped".into())))?;
    }
    Ok(())
}

/// Whether statements wait for their records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A statement is forwarded only once its record is durable; if the store cannot be
    /// written, statements are refused.
    Required,
    /// Records are written in the background; a statement never waits for its record.
    BestEffort,
}

/// The audit log. Records are chained and buffered under one short lock; a record that
/// must be durable ([`AuditLog::append`]) is written to the journal at once, in the caller's
/// thread, with the records buffered before it (outcomes, connects). A background flusher
/// takes the buffer every few milliseconds and commits it to `audit.db` under a second lock,
/// so sessions never wait for SQLite. No thread hand-off sits between a statement and its
/// durable record.
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

/// The chain's head and the records not yet handed to `audit.db`.
struct Chain {
    head: Head,
    buffer: Vec<Record>,
    /// With `required` audit: where records are durable before they reach `audit.db`.
    journal: Option<Journal>,
    /// How many records at the start of `buffer` are in the journal.
    journaled: usize,
    /// Frames on their way to the journal (kept for its capacity).
    frames: Vec<u8>,
}

struct Store {
    db: Connection,
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
                head,
                buffer: Vec::new(),
                journal,
                journaled: 0,
                frames: Vec::new(),
            }),
            store: Mutex::new(Store {
                db,
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

    /// Appends `event` and makes it durable (with whatever was buffered before it) before
    /// returning: in the journal, or without one by committing to `audit.db`. The answer
    /// says whether it is durable.
    pub fn append(&self, event: &Event) -> Ack {
        let event = json(event);
        let mut chain = self.inner.chain();
        chain.push(event);
        let result = match chain.journal.is_some() {
            true => chain.within_bounds().and_then(|()| chain.journal_buffer()),
            false => {
                drop(chain);
                self.inner.flush()
            }
        };
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(result);
        rx
    }

    /// Appends `event`; it is committed with the next durable record or by the flusher.
    pub fn record(&self, event: &Event) {
        let event = json(event);
        let mut chain = self.inner.chain();
        chain.push(event);
        if chain.buffer.len() >= BATCH {
            drop(chain);
            self.flusher.unpark();
        }
    }
}

/// `event` as stored: JSON text.
fn json(event: &Event) -> String {
    // Most events fit without growing the buffer.
    let mut out = Vec::with_capacity(512);
    serde_json::to_writer(&mut out, event).expect("events serialize");
    String::from_utf8(out).expect("JSON is UTF-8")
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        if let Err(e) = self.inner.flush() {
            tracing::error!(error = %e, "audit records not written");
        }
    }
}

impl Chain {
    fn push(&mut self, event: String) {
        let r = self.head.next(now_micros(), event);
        self.head = Head {
            seq: r.seq,
            hash: r.hash,
        };
        self.buffer.push(r);
    }

    /// Whether the buffer is small enough to take more records that must be durable.
    fn within_bounds(&self) -> Result<(), AuditError> {
        match self.buffer.len() > BUFFER_MAX {
            true => Err(AuditError(format!(
                "{} records wait for audit.db, which cannot be written",
                self.buffer.len()
            ))),
            false => Ok(()),
        }
    }

    /// Writes to the journal the buffered records not yet in it (one `write`); nothing
    /// without a journal.
    fn journal_buffer(&mut self) -> Result<(), AuditError> {
        let Some(journal) = &mut self.journal else {
            return Ok(());
        };
        if self.journaled == self.buffer.len() {
            return Ok(());
        }
        self.frames.clear();
        for r in &self.buffer[self.journaled..] {
            journal::frame(r, &mut self.frames);
        }
        journal
            .append(&self.frames)
            .map_err(|e| AuditError(format!("cannot write the audit journal: {e}")))?;
        self.journaled = self.buffer.len();
        Ok(())
    }
}

impl Shared {
    fn chain(&self) -> std::sync::MutexGuard<'_, Chain> {
        self.chain.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Commits the buffer to `audit.db`, holding the chain's lock only to take the buffer
    /// (journaled whole first, so that the journal never skips a record) and to remove a
    /// journal set aside after. On failure the records go back to the buffer's front for the
    /// next attempt.
    fn flush(&self) -> Result<(), AuditError> {
        let mut store = self.store.lock().unwrap_or_else(|p| p.into_inner());
        let (records, journaled) = {
            let mut chain = self.chain();
            if chain.buffer.is_empty() {
                return Ok(());
            }
            if let Err(e) = chain.journal_buffer() {
                // The journal cannot be written: commit the buffer without letting go of it,
                // so that no later record is journaled past the ones missing there.
                tracing::error!(error = %e.0, "audit records committed past the journal");
                insert(&mut store.db, &chain.buffer)?;
                chain.buffer.clear();
                chain.journaled = 0;
                return Ok(());
            }
            if let Some(j) = &mut chain.journal
                && let Err(e) = j.rotate(JOURNAL_MAX)
            {
                tracing::error!(error = %e, "cannot set the full audit journal aside");
            }
            let journaled = std::mem::take(&mut chain.journaled);
            (std::mem::take(&mut chain.buffer), journaled)
        };
        if let Err(e) = insert(&mut store.db, &records) {
            tracing::error!(error = %e, records = records.len(), "audit records not written yet");
            let mut chain = self.chain();
            let newer = std::mem::replace(&mut chain.buffer, records);
            chain.buffer.extend(newer);
            chain.journaled += journaled;
            return Err(e);
        }
        if let Some(j) = &mut self.chain().journal
            && let Err(e) = j.drop_retired()
        {
            // Everything journaled before the take is in audit.db now.
            tracing::error!(error = %e, "cannot remove the audit journal set aside");
        }
        let last = records.last().expect("a non-empty batch");
        let committed = Head {
            seq: last.seq,
            hash: last.hash,
        };
        let store = &mut *store;
        if let Some(c) = &store.checkpoints
            && store.last_checkpoint.elapsed() >= c.every
        {
            store.last_checkpoint = std::time::Instant::now();
            let checkpoint = c.signer.sign(committed, now_micros(), "periodic");
            if let Err(e) = save_checkpoint(&store.db, &checkpoint) {
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

/// Moves into `db` the records the journal in `dir` holds beyond `db`'s head (what a crash
/// left there), then empties the journal; returns the chain head.
fn recover(dir: &Path, db: &mut Connection) -> Result<Head, AuditError> {
    let stored = head(db)?;
    let (mut journal, records) = Journal::open(dir)
        .map_err(|e| AuditError(format!("cannot open the audit journal: {e}")))?;
    let mut v = super::record::Verifier { head: stored };
    let missing: Vec<Record> = records
        .into_iter()
        .filter(|r| r.seq > stored.seq)
        .take_while(|r| v.check(r).is_ok())
        .collect();
    if !missing.is_empty() {
        insert(db, &missing)?;
        tracing::info!(
            records = missing.len(),
            "audit records recovered from the journal"
        );
    }
    if !journal.is_empty() {
        journal
            .clear()
            .map_err(|e| AuditError(format!("cannot empty the audit journal: {e}")))?;
    }
    Ok(v.head)
}

/// The records the journal in `dir` holds beyond `after` that follow it in the chain (what
/// a running Airlock has not committed to `audit.db` yet, or what a crash left there),
/// read without changing anything.
pub fn journal_tail(dir: &Path, after: Head) -> Vec<Record> {
    let records = journal::read(dir);
    let mut v = super::record::Verifier { head: after };
    records
        .into_iter()
        .filter(|r| r.seq > after.seq)
        .take_while(|r| v.check(r).is_ok())
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

fn insert(db: &mut Connection, records: &[Record]) -> Result<(), AuditError> {
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
    use crate::audit::record::Verifier;

    fn event(i: u64) -> Event {
        Event::Disconnect {
            listener: "postgres".into(),
            session: i as i64,
            duration_ms: i,
            statements: i,
        }
    }

    /// What a crash leaves: records in the journal only, the last one cut short. The next
    /// open commits the whole ones and drops the torn one.
    #[tokio::test]
    async fn records_left_in_the_journal_are_recovered() {
        let dir = tempfile::tempdir().unwrap();
        drop(AuditLog::open(dir.path(), Mode::Required).unwrap());
        let mut head = Head::EMPTY;
        let mut bytes = Vec::new();
        for i in 0..5 {
            let r = head.next(i, serde_json::to_string(&event(i as u64)).unwrap());
            head = Head {
                seq: r.seq,
                hash: r.hash,
            };
            journal::frame(&r, &mut bytes);
        }
        let torn = head.next(9, "{}".into());
        let mut last = Vec::new();
        journal::frame(&torn, &mut last);
        bytes.extend_from_slice(&last[..last.len() - 3]);
        std::fs::write(dir.path().join("audit.journal"), &bytes).unwrap();
        // Readers see them before any restart...
        assert_eq!(crate::audit::records(dir.path()).unwrap().len(), 5);
        // ...and opening the log moves them into audit.db and goes on from them.
        let log = AuditLog::open(dir.path(), Mode::Required).unwrap();
        log.append(&event(5)).await.unwrap().unwrap();
        drop(log);
        assert_eq!(stored_head(dir.path()).seq, 6);
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
    /// once its records are committed; the records after it go to a new journal.
    #[tokio::test]
    async fn a_full_journal_is_set_aside_and_removed_once_committed() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path(), Mode::Required).unwrap();
        let big = |i: i64| Event::AuthFailed {
            listener: "postgres".into(),
            user: Some(format!("user{i}")),
            client_addr: "127.0.0.1".into(),
            reason: "x".repeat(1024),
        };
        for i in 0..5000 {
            log.append(&big(i)).await.unwrap().unwrap();
        }
        log.inner.flush().unwrap();
        assert!(!dir.path().join("audit.journal.old").exists());
        for i in 0..10 {
            log.append(&big(i)).await.unwrap().unwrap();
        }
        // ~6 MB went through: the journal was set aside at least once, and what it holds
        // now runs without a gap to the last record.
        let seqs: Vec<u64> = journal::read(dir.path()).iter().map(|r| r.seq).collect();
        assert!(seqs[0] > 1, "the journal was never set aside");
        assert_eq!(seqs, (seqs[0]..=5010).collect::<Vec<_>>());
        assert!(
            std::fs::metadata(dir.path().join("audit.journal"))
                .unwrap()
                .len()
                < 2 * JOURNAL_MAX
        );
        drop(log);
        assert_eq!(stored_head(dir.path()).seq, 5010);
    }

    #[tokio::test]
    async fn appended_records_are_durable_chained_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = AuditLog::open(dir.path(), Mode::Required).unwrap();
            let acks: Vec<Ack> = (0..1000).map(|i| log.append(&event(i))).collect();
            for ack in acks {
                ack.await.unwrap().unwrap();
            }
        }
        let log = AuditLog::open(dir.path(), Mode::Required).unwrap();
        log.append(&event(1000)).await.unwrap().unwrap();
        drop(log);
        assert_eq!(stored_head(dir.path()).seq, 1001);
        let db = open_db(dir.path()).unwrap();
        let t: String = db
            .query_row("SELECT type FROM audit WHERE seq = 1", [], |r| r.get(0))
            .unwrap();
        assert_eq!(t, "disconnect");
    }
}
