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

/// Most records committed in one transaction.
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

/// The audit log. Records are chained and buffered under one lock. A record that must be
/// durable ([`AuditLog::append`]) is written to the journal at once, in the caller's
/// thread, with the records buffered before it (outcomes, connects); a background flusher
/// commits the buffer to `audit.db` every few milliseconds. No thread hand-off sits
/// between a statement and its durable record.
pub struct AuditLog {
    inner: Arc<Mutex<Writer>>,
    pub mode: Mode,
}

struct Writer {
    db: Connection,
    head: Head,
    /// Records chained but not yet committed to `audit.db`.
    buffer: Vec<Record>,
    /// With `required` audit: where records are durable before they reach `audit.db`.
    journal: Option<Journal>,
    /// How many records at the start of `buffer` are in the journal.
    journaled: usize,
    checkpoints: Option<Checkpointing>,
    last_checkpoint: std::time::Instant,
}

/// How often the background flusher commits buffered records (and how much a crash may
/// lose of records nothing waited for).
const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(5);

/// The journal is emptied once everything in it is in `audit.db` and it is this large.
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
        let inner = Arc::new(Mutex::new(Writer {
            db,
            head,
            buffer: Vec::new(),
            journal,
            journaled: 0,
            checkpoints,
            last_checkpoint: std::time::Instant::now(),
        }));
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("airlock-audit".into())
            .spawn(move || flusher(weak))
            .map_err(|e| AuditError(format!("cannot start the audit flusher: {e}")))?;
        Ok(AuditLog { inner, mode })
    }

    fn writer(&self) -> std::sync::MutexGuard<'_, Writer> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends `event` and makes it durable (with whatever was buffered before it) before
    /// returning: in the journal, or without one by committing to `audit.db`. The answer
    /// says whether it is durable.
    pub fn append(&self, event: &Event) -> Ack {
        let mut w = self.writer();
        w.push(event);
        let result = w.make_durable();
        drop(w);
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(result);
        rx
    }

    /// Appends `event`; it is committed with the next durable record or by the flusher.
    pub fn record(&self, event: &Event) {
        let mut w = self.writer();
        w.push(event);
        if w.buffer.len() >= BATCH
            && let Err(e) = w.flush()
        {
            tracing::error!(error = %e, "audit records not written");
        }
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        if let Err(e) = self.writer().flush() {
            tracing::error!(error = %e, "audit records not written");
        }
    }
}

impl Writer {
    /// Makes every buffered record durable.
    fn make_durable(&mut self) -> Result<(), AuditError> {
        if self.buffer.len() > BUFFER_MAX {
            return Err(AuditError(format!(
                "{} records wait for audit.db, which cannot be written",
                self.buffer.len()
            )));
        }
        let Some(journal) = &mut self.journal else {
            return self.flush();
        };
        let mut bytes = Vec::new();
        for r in &self.buffer[self.journaled..] {
            journal::frame(r, &mut bytes);
        }
        journal
            .append(&bytes)
            .map_err(|e| AuditError(format!("cannot write the audit journal: {e}")))?;
        self.journaled = self.buffer.len();
        Ok(())
    }

    fn push(&mut self, event: &Event) {
        let event = serde_json::to_string(event).expect("events serialize");
        let r = self.head.next(now_micros(), event);
        self.head = Head {
            seq: r.seq,
            hash: r.hash,
        };
        self.buffer.push(r);
    }

    /// Commits the buffer to `audit.db`. On failure the records stay buffered (and in the
    /// journal, if they were journaled) for the next attempt.
    fn flush(&mut self) -> Result<(), AuditError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let result = insert(&mut self.db, &self.buffer);
        match &result {
            Ok(()) => {
                self.buffer.clear();
                self.journaled = 0;
                if let Some(j) = &mut self.journal
                    && j.len() > JOURNAL_MAX
                    && let Err(e) = j.clear()
                {
                    tracing::error!(error = %e, "cannot empty the audit journal");
                }
            }
            Err(e) => {
                tracing::error!(error = %e, records = self.buffer.len(), "audit records not written yet");
            }
        }
        if let Some(c) = &self.checkpoints
            && result.is_ok()
            && self.last_checkpoint.elapsed() >= c.every
        {
            self.last_checkpoint = std::time::Instant::now();
            let checkpoint = c.signer.sign(self.head, now_micros(), "periodic");
            if let Err(e) = save_checkpoint(&self.db, &checkpoint) {
                tracing::error!(error = %e, "audit checkpoint not written");
            }
        }
        result
    }
}

/// Commits buffered records every [`FLUSH_EVERY`] until the log is dropped.
fn flusher(log: std::sync::Weak<Mutex<Writer>>) {
    loop {
        std::thread::sleep(FLUSH_EVERY);
        let Some(inner) = log.upgrade() else {
            return;
        };
        let mut w = inner.lock().unwrap_or_else(|p| p.into_inner());
        if !w.buffer.is_empty() {
            let _ = w.flush();
        }
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
    let Ok(bytes) = std::fs::read(dir.join("audit.journal")) else {
        return Vec::new();
    };
    let (records, _) = journal::frames(&bytes);
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
