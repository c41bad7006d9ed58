//! Where tickets are kept: a small trait, so that a shared PostgreSQL store can later serve
//! several Airlock instances, and its SQLite implementation (rusqlite, the library built in),
//! in WAL mode under the config's state directory.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use super::ticket::{Request, State, Ticket};

#[derive(Debug, thiserror::Error)]
#[error("the approval store failed: {0}")]
pub struct StoreError(String);

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError(e.to_string())
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        StoreError(format!("a stored ticket is not readable: {e}"))
    }
}

/// One thing that happened to a ticket: who (an approver, or Airlock itself when `None`),
/// what, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    /// Unix seconds.
    pub at: i64,
    pub actor: Option<String>,
    /// created, approval, approved, denied, escalated, expired, abandoned.
    pub event: String,
    pub detail: Option<String>,
}

/// The ticket store. Callers serialise read-modify-save sequences themselves (the hub holds
/// one lock around each decision).
pub trait TicketStore: Send + Sync {
    /// Stores a new pending ticket for `request`, due at `deadline`.
    fn create(&self, request: &Request, now: i64, deadline: i64) -> Result<Ticket, StoreError>;
    fn get(&self, id: i64) -> Result<Option<Ticket>, StoreError>;
    /// The newest tickets first, in `state` if given.
    fn list(&self, state: Option<State>, limit: usize) -> Result<Vec<Ticket>, StoreError>;
    /// Saves the ticket's state, approvals and decision, with the event that changed them.
    fn save(&self, ticket: &Ticket, event: &Event) -> Result<(), StoreError>;
    fn events(&self, id: i64) -> Result<Vec<Event>, StoreError>;
    /// Marks every ticket still waiting as abandoned (at start-up: no session waits for them).
    fn abandon_open(&self, now: i64) -> Result<usize, StoreError>;
}

/// Tickets in a SQLite database file.
pub struct SqliteStore {
    db: Mutex<Connection>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tickets (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    state TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    deadline INTEGER NOT NULL,
    request TEXT NOT NULL,
    approvals TEXT NOT NULL,
    decided_by TEXT,
    reason TEXT,
    decided_at INTEGER
);
CREATE INDEX IF NOT EXISTS tickets_by_state ON tickets (state, id);
CREATE TABLE IF NOT EXISTS ticket_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ticket INTEGER NOT NULL REFERENCES tickets (id),
    at INTEGER NOT NULL,
    actor TEXT,
    event TEXT NOT NULL,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS ticket_events_by_ticket ON ticket_events (ticket, id);
";

impl SqliteStore {
    /// Opens (creating if needed) `airlock.db` in `dir`.
    pub fn open(dir: &Path) -> Result<SqliteStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError(format!(
                "cannot create the state directory {}: {e}",
                dir.display()
            ))
        })?;
        let db = Connection::open(dir.join("airlock.db"))?;
        db.busy_timeout(std::time::Duration::from_secs(5))?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        // A decision is durable once it is acknowledged.
        db.pragma_update(None, "synchronous", "FULL")?;
        db.pragma_update(None, "foreign_keys", "ON")?;
        db.execute_batch(SCHEMA)?;
        Ok(SqliteStore { db: Mutex::new(db) })
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }
}

const COLUMNS: &str =
    "id, state, created_at, deadline, request, approvals, decided_by, reason, decided_at";

fn ticket_of(row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<Ticket, StoreError>> {
    let state: String = row.get(1)?;
    let request: String = row.get(4)?;
    let approvals: String = row.get(5)?;
    let id: i64 = row.get(0)?;
    let (created_at, deadline) = (row.get(2)?, row.get(3)?);
    let (decided_by, reason, decided_at) = (row.get(6)?, row.get(7)?, row.get(8)?);
    Ok((|| {
        Ok(Ticket {
            id,
            request: serde_json::from_str(&request)?,
            state: State::parse(&state)
                .ok_or_else(|| StoreError(format!("ticket {id} has an unknown state {state}")))?,
            created_at,
            deadline,
            approvals: serde_json::from_str(&approvals)?,
            decided_by,
            reason,
            decided_at,
        })
    })())
}

fn add_event(db: &Connection, ticket: i64, e: &Event) -> rusqlite::Result<()> {
    db.execute(
        "INSERT INTO ticket_events (ticket, at, actor, event, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![ticket, e.at, e.actor, e.event, e.detail],
    )?;
    Ok(())
}

impl TicketStore for SqliteStore {
    fn create(&self, request: &Request, now: i64, deadline: i64) -> Result<Ticket, StoreError> {
        let mut db = self.db();
        let tx = db.transaction()?;
        tx.execute(
            "INSERT INTO tickets (state, created_at, deadline, request, approvals) \
             VALUES ('pending', ?1, ?2, ?3, '[]')",
            params![now, deadline, serde_json::to_string(request)?],
        )?;
        let id = tx.last_insert_rowid();
        let created = Event {
            at: now,
            actor: None,
            event: "created".into(),
            detail: Some(format!("rule {}", request.rule)),
        };
        add_event(&tx, id, &created)?;
        tx.commit()?;
        Ok(Ticket {
            id,
            request: request.clone(),
            state: State::Pending,
            created_at: now,
            deadline,
            approvals: Vec::new(),
            decided_by: None,
            reason: None,
            decided_at: None,
        })
    }

    fn get(&self, id: i64) -> Result<Option<Ticket>, StoreError> {
        let db = self.db();
        let sql = format!("SELECT {COLUMNS} FROM tickets WHERE id = ?1");
        db.query_row(&sql, [id], ticket_of).optional()?.transpose()
    }

    fn list(&self, state: Option<State>, limit: usize) -> Result<Vec<Ticket>, StoreError> {
        let db = self.db();
        let limit = limit.min(i64::MAX as usize) as i64;
        let rows = match state {
            Some(s) => {
                let sql = format!(
                    "SELECT {COLUMNS} FROM tickets WHERE state = ?1 ORDER BY id DESC LIMIT ?2"
                );
                let mut stmt = db.prepare(&sql)?;
                stmt.query_map(params![s.as_str(), limit], ticket_of)?
                    .collect::<Result<Vec<_>, _>>()?
            }
            None => {
                let sql = format!("SELECT {COLUMNS} FROM tickets ORDER BY id DESC LIMIT ?1");
                let mut stmt = db.prepare(&sql)?;
                stmt.query_map([limit], ticket_of)?
                    .collect::<Result<Vec<_>, _>>()?
            }
        };
        rows.into_iter().collect()
    }

    fn save(&self, t: &Ticket, event: &Event) -> Result<(), StoreError> {
        let mut db = self.db();
        let tx = db.transaction()?;
        tx.execute(
            "UPDATE tickets SET state = ?2, deadline = ?3, approvals = ?4, decided_by = ?5, \
             reason = ?6, decided_at = ?7 WHERE id = ?1",
            params![
                t.id,
                t.state.as_str(),
                t.deadline,
                serde_json::to_string(&t.approvals)?,
                t.decided_by,
                t.reason,
                t.decided_at
            ],
        )?;
        add_event(&tx, t.id, event)?;
        tx.commit()?;
        Ok(())
    }

    fn events(&self, id: i64) -> Result<Vec<Event>, StoreError> {
        let db = self.db();
        let mut stmt = db.prepare(
            "SELECT at, actor, event, detail FROM ticket_events WHERE ticket = ?1 ORDER BY id",
        )?;
        let events = stmt
            .query_map([id], |r| {
                Ok(Event {
                    at: r.get(0)?,
                    actor: r.get(1)?,
                    event: r.get(2)?,
                    detail: r.get(3)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(events)
    }

    fn abandon_open(&self, now: i64) -> Result<usize, StoreError> {
        let mut db = self.db();
        let tx = db.transaction()?;
        let open: Vec<i64> = {
            let mut stmt =
                tx.prepare("SELECT id FROM tickets WHERE state IN ('pending', 'escalated')")?;
            stmt.query_map([], |r| r.get(0))?
                .collect::<Result<Vec<_>, _>>()?
        };
        for id in &open {
            tx.execute(
                "UPDATE tickets SET state = 'abandoned', decided_at = ?2 WHERE id = ?1",
                params![id, now],
            )?;
            let event = Event {
                at: now,
                actor: None,
                event: "abandoned".into(),
                detail: Some("Airlock stopped while it was held".into()),
            };
            add_event(&tx, *id, &event)?;
        }
        tx.commit()?;
        Ok(open.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::approval::ticket::{Request, Scope};

    fn request(statement: &str) -> Request {
        Request {
            sha256: String::new(),
            requester: "app".into(),
            session: 1,
            groups: vec![],
            client_addr: "127.0.0.1:1".into(),
            listener: "postgres".into(),
            database: "test".into(),
            statement: statement.into(),
            params: vec![],
            kind: "ddl".into(),
            findings: vec!["drop".into()],
            rule: "ddl".into(),
            message: Some("schema changes need a DBA".into()),
            approvers: vec!["dba".into()],
            required: 1,
            timeout_secs: 60,
            escalation: None,
        }
    }

    #[test]
    fn tickets_survive_reopening_and_open_ones_are_abandoned() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = {
            let store = SqliteStore::open(dir.path()).unwrap();
            let a = store.create(&request("drop table a"), 100, 160).unwrap();
            let mut b = store.create(&request("drop table b"), 101, 161).unwrap();
            b.approve("alice", &["dba".to_owned()], Scope::Once, 105)
                .unwrap();
            let approved = Event {
                at: 105,
                actor: Some("alice".into()),
                event: "approved".into(),
                detail: None,
            };
            store.save(&b, &approved).unwrap();
            (a, b)
        };
        let store = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(store.get(b.id).unwrap(), Some(b.clone()));
        assert_eq!(store.abandon_open(200).unwrap(), 1);
        let a = store.get(a.id).unwrap().unwrap();
        assert_eq!(a.state, State::Abandoned);
        assert_eq!(
            store.list(Some(State::Approved), 10).unwrap(),
            vec![b.clone()]
        );
        assert_eq!(store.list(None, 10).unwrap().len(), 2);
        let events: Vec<String> = store
            .events(a.id)
            .unwrap()
            .into_iter()
            .map(|e| e.event)
            .collect();
        assert_eq!(events, ["created", "abandoned"]);
        assert_eq!(store.get(999).unwrap(), None);
    }
}
