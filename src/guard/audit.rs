//! A session's audit records, as its guard sees it: the connect, each statement with what
//! the policy decided (text and parameters masked) and how it ended, and the disconnect when
//! the guard is dropped. With `required` audit, `pending` tells the relay whether the
//! intents of the statements it showed are durable, before it forwards them.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use super::{Guard, Judged, Who};
use crate::audit::record::Outcome;
use crate::audit::statement_json::{self, SessionJson};
use crate::audit::store::{Intent, now_micros};
use crate::audit::{Ack, AuditLog, Event};
use crate::inspect::SessionInfo;
use crate::sql::classify::Classified;

pub struct SessionAudit {
    log: Arc<AuditLog>,
    guard: Arc<Guard>,
    session: i64,
    /// The session's part of its statements' records.
    json: SessionJson,
    statements: u64,
    started: Instant,
    /// Whether the intents of the statements begun since the relay last asked are durable:
    /// the first failure.
    pending: Ack,
    /// Statements (and sync points) awaiting their answers, in order.
    awaiting: VecDeque<Awaiting>,
    /// PostgreSQL: after an error the database skips to the next Sync.
    skips_to_sync: bool,
    /// Rows of each result kept with its outcome (the policy's `[audit] sample_rows`).
    sample_rows: usize,
    /// What the classifications of the session's recent statements gave their records, kept
    /// while the session sends statements the cache classified alike (a transaction's few).
    shapes: Vec<Shape>,
}

/// Classifications whose part of a record a session keeps.
const SHAPES: usize = 8;

/// A classification's part of a statement's record, as JSON: its fingerprint (masked), kinds
/// and findings.
struct Shape {
    statements: Arc<[Classified]>,
    json: String,
}

impl Shape {
    fn of(guard: &Guard, statements: &Arc<[Classified]>) -> Shape {
        let fingerprints: Vec<&str> = statements.iter().map(|s| s.fingerprint.as_str()).collect();
        let mut kinds: Vec<&str> = statements.iter().map(|s| s.kind.as_str()).collect();
        kinds.dedup();
        let findings: Vec<String> = statements
            .iter()
            .flat_map(|s| s.findings.iter().map(|f| f.code.to_owned()))
            .collect();
        Shape {
            statements: statements.clone(),
            // A fingerprint has its literals replaced, but not every dialect's quoted
            // strings are literals to the lexer (MySQL's "..."): masked too.
            json: statement_json::classification(
                &guard.redact(&fingerprints.join(";\n")),
                &kinds.join(","),
                &findings,
            ),
        }
    }
}

/// How the answer to a recorded statement ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ends {
    /// With its own completion (a PostgreSQL Execute, a MySQL command).
    Completion,
    /// With ReadyForQuery (a PostgreSQL Query or FunctionCall: several completions, and it
    /// is a sync point).
    Ready,
}

#[derive(Debug)]
enum Awaiting {
    Statement {
        /// Its record, begun.
        intent: Intent,
        received: Instant,
        ends: Ends,
        rows: Option<u64>,
        error: Option<String>,
        /// The first rows of its result, masked.
        sample: Vec<Vec<Option<String>>>,
        /// Airlock refused it (PostgreSQL: the error that ends it is Airlock's).
        refused: bool,
    },
    /// A PostgreSQL Sync: where skipping after an error stops.
    Sync,
}

impl SessionAudit {
    /// Records the session's start, if `guard` keeps an audit trail.
    pub fn start(
        guard: &Arc<Guard>,
        who: &Who,
        info: &SessionInfo,
        masked: bool,
    ) -> Option<SessionAudit> {
        let log = guard.audit.clone()?;
        log.record(&Event::Connect {
            listener: guard.listener.clone(),
            session: who.session,
            user: who.user.clone(),
            groups: who.groups.to_vec(),
            client_addr: who.client_addr_text(),
            tls: info.tls,
            database: who.database.clone(),
            application: info.application_name.clone(),
            masking_exempt: !masked && guard.masking_exempts(who),
        });
        Some(SessionAudit {
            log,
            guard: guard.clone(),
            session: who.session,
            json: SessionJson::new(&guard.listener, who.session, &who.user),
            statements: 0,
            started: Instant::now(),
            pending: Ok(()),
            awaiting: VecDeque::new(),
            skips_to_sync: guard.dialect == crate::sql::Dialect::Postgres,
            sample_rows: guard.policy.audit.sample_rows,
            shapes: Vec::new(),
        })
    }

    /// Records a statement and the decision: `sent` is its text exactly as the client sent
    /// it (a classification from the cache may hold another statement of the same shape).
    pub fn statement(
        &mut self,
        judged: &Judged,
        sent: &[u8],
        params: Vec<Option<String>>,
        ends: Ends,
    ) {
        self.statements += 1;
        let received = Instant::now();
        let known = self
            .shapes
            .iter()
            .position(|s| Arc::ptr_eq(&s.statements, &judged.statements));
        let i = known.unwrap_or_else(|| {
            let shape = Shape::of(&self.guard, &judged.statements);
            if self.shapes.len() < SHAPES {
                self.shapes.push(shape);
                self.shapes.len() - 1
            } else {
                // Otherwise each slot in turn.
                let i = self.statements as usize % SHAPES;
                self.shapes[i] = shape;
                i
            }
        });
        let sent_text = crate::utf8::lossy(sent);
        let text = self.guard.redact_cow(sent_text.trim());
        let at = now_micros();
        let event = self.json.statement(
            &statement_json::Statement {
                seq: self.statements,
                text: &text,
                params: &params,
                rule: judged.rule.map(|r| self.guard.rule_name(r)),
                decision: judged.decision(),
                sha256: ring::digest::digest(&ring::digest::SHA256, sent).as_ref(),
                received: at,
            },
            &self.shapes[i].json,
        );
        let (intent, durable) = self.log.begin(event, at);
        if let Some(Err(e)) = durable
            && self.pending.is_ok()
        {
            self.pending = Err(e);
        }
        self.awaiting.push_back(Awaiting::Statement {
            intent,
            received,
            ends,
            rows: None,
            error: None,
            sample: Vec::new(),
            refused: false,
        });
    }

    /// Whether result rows are sampled.
    pub fn wants_rows(&self) -> bool {
        self.sample_rows > 0
    }

    /// A result row of the statement now answered (each value's bytes, `None` for NULL):
    /// kept, masked, while its sample is short of `sample_rows`.
    pub fn row(&mut self, values: &[Option<&[u8]>]) {
        let n = self.sample_rows;
        let Some(Awaiting::Statement { sample, .. }) = self.awaiting.front_mut() else {
            return;
        };
        if sample.len() >= n {
            return;
        }
        let shown = values
            .iter()
            .map(|v| {
                v.map(|v| match std::str::from_utf8(v) {
                    // Text; a binary-format number or date shows as hex.
                    Ok(text) if !text.chars().any(|c| c.is_control() && !c.is_whitespace()) => {
                        self.guard.redact(text)
                    }
                    _ => {
                        let masked = self.guard.mask(v);
                        let v = masked.as_deref().unwrap_or(v);
                        format!("\\x{}", crate::audit::record::hex(v))
                    }
                })
            })
            .collect();
        sample.push(shown);
    }

    /// A PostgreSQL Sync went to the database.
    pub fn sync(&mut self) {
        self.awaiting.push_back(Awaiting::Sync);
    }

    /// A statement completed with `rows` rows (PostgreSQL CommandComplete, EmptyQuery,
    /// PortalSuspended; a MySQL answer).
    pub fn completed(&mut self, rows: Option<u64>) {
        match self.awaiting.front_mut() {
            Some(Awaiting::Statement {
                ends: Ends::Ready,
                rows: total,
                ..
            }) => {
                *total = Some(total.unwrap_or(0) + rows.unwrap_or(0));
            }
            Some(Awaiting::Statement { .. }) => {
                if let Some(Awaiting::Statement { rows: r, .. }) = self.awaiting.front_mut() {
                    *r = rows;
                }
                self.finish_front(true);
            }
            _ => {}
        }
    }

    /// The database answered with an error. PostgreSQL skips the rest of an
    /// extended-protocol pipeline up to its Sync; MySQL goes on with the next command.
    pub fn failed(&mut self, code: &str) {
        self.ended_in_error(code, false);
    }

    /// PostgreSQL: Airlock refused the statement now answered (the database answered the
    /// substitute Airlock sent in its place, and the client got Airlock's error).
    pub fn refused(&mut self) {
        self.ended_in_error(REFUSED, true);
    }

    fn ended_in_error(&mut self, code: &str, by_airlock: bool) {
        match self.awaiting.front_mut() {
            Some(Awaiting::Statement {
                ends: Ends::Ready,
                error,
                refused,
                ..
            }) => {
                error.get_or_insert_with(|| code.to_owned());
                *refused |= by_airlock;
            }
            Some(Awaiting::Statement { error, .. }) => {
                *error = Some(code.to_owned());
                self.finish_front(!by_airlock);
                while self.skips_to_sync
                    && matches!(
                        self.awaiting.front(),
                        Some(Awaiting::Statement {
                            ends: Ends::Completion,
                            ..
                        })
                    )
                {
                    self.finish_front(false);
                }
            }
            _ => {}
        }
    }

    /// PostgreSQL's ReadyForQuery: what is owed up to the sync point is settled.
    pub fn ready(&mut self) {
        while let Some(front) = self.awaiting.front() {
            match front {
                Awaiting::Sync => {
                    self.awaiting.pop_front();
                    return;
                }
                Awaiting::Statement {
                    ends: Ends::Ready,
                    refused,
                    ..
                } => {
                    let ran = !refused;
                    self.finish_front(ran);
                    return;
                }
                Awaiting::Statement { .. } => self.finish_front(false),
            }
        }
    }

    /// The statement recorded last did not go to the database (a MySQL command Airlock
    /// refused, with `errno`), or went and owes no answer (`errno` None).
    pub fn settle_last(&mut self, errno: Option<u16>) {
        if !matches!(self.awaiting.back(), Some(Awaiting::Statement { .. })) {
            return;
        }
        if let Some(mut last) = self.awaiting.pop_back() {
            if let (Awaiting::Statement { error, .. }, Some(_)) = (&mut last, errno) {
                *error = Some(REFUSED.to_owned());
            }
            self.record_outcome(last, errno.is_none());
        }
    }

    /// Records how the oldest awaited statement ended.
    fn finish_front(&mut self, ran: bool) {
        if let Some(front) = self.awaiting.pop_front() {
            self.record_outcome(front, ran);
        }
    }

    fn record_outcome(&self, awaited: Awaiting, ran: bool) {
        if let Awaiting::Statement {
            intent,
            received,
            rows,
            error,
            sample,
            ..
        } = awaited
        {
            let outcome = Outcome {
                duration_us: received.elapsed().as_micros() as u64,
                ran,
                rows,
                error: error.map(|e| self.guard.redact(&e)),
                sample,
            };
            self.log.settle(intent, &outcome);
        }
    }

    /// Whether the intents of the statements begun since the last call are durable: the
    /// relay forwards what it was shown only if they are.
    pub fn take_pending(&mut self) -> Ack {
        std::mem::replace(&mut self.pending, Ok(()))
    }
}

/// What the trail says of a statement Airlock refused.
const REFUSED: &str = "refused by Airlock";

impl Drop for SessionAudit {
    fn drop(&mut self) {
        // Statements still owed an answer: the session ended first.
        while !self.awaiting.is_empty() {
            if matches!(self.awaiting.front(), Some(Awaiting::Sync)) {
                self.awaiting.pop_front();
            } else {
                self.finish_front(false);
            }
        }
        self.log.record(&Event::Disconnect {
            listener: self.guard.listener.clone(),
            session: self.session,
            duration_ms: self.started.elapsed().as_millis() as u64,
            statements: self.statements,
        });
    }
}
