//! The guard for a PostgreSQL session: a Query is judged as it arrives; a Parse is classified
//! once and judged at every Execute of a portal bound to it; a FunctionCall (no SQL text at
//! all) is judged as an unknown statement with a finding. What the session prepared and bound
//! is tracked by name, with the database's answers, in [`Names`].

use std::collections::HashMap;
use std::sync::Arc;

use super::audit::{Ends, SessionAudit};
use super::names::{Names, Space};
use super::{
    Guard, Judged, TextSession, TextState, Who, forwards_remembered, judge_one, judge_text,
    text_verdict,
};
use crate::audit::Ack;
use crate::inspect::{Inspector, InspectorFactory, Interest, Rewrite, SessionInfo, Verdict};
use crate::mask::pg::PgResults;
use crate::protocol::pg::backend::{self, tag as be};
use crate::protocol::pg::frontend::{FrontendMessage, FunctionCall, Params};
use crate::sql::classify::{Classified, PreparedStatements};

/// Makes a [`PgGuard`] for each session of a listener, all sharing one [`Guard`].
#[derive(Clone)]
pub struct PgGuards(pub Arc<Guard>);

impl InspectorFactory for PgGuards {
    fn admit(
        &self,
        user: &str,
        database: &str,
        settings: &[(String, String)],
    ) -> Result<(), crate::inspect::Denial> {
        super::startup::admit(&self.0, user, database, settings)
    }

    fn for_session(&self, session: &SessionInfo) -> Box<dyn Inspector> {
        let who = self.0.who(session);
        let text = self.0.text_state(&who);
        let results = self.0.masking_for(&who).map(PgResults::new);
        Box::new(PgGuard {
            wants_tables: results.as_ref().is_some_and(PgResults::wants_tables),
            audit: SessionAudit::start(&self.0, &who, session, results.is_some()).map(Box::new),
            sent: HashMap::default(),
            guard: self.0.clone(),
            results,
            who,
            names: Names::default(),
            text,
            bound: HashMap::default(),
            strings_as_classified: session.strings_as_classified,
            ascii_only: session.ascii_only,
            substituted: false,
            any_bound: false,
        })
    }
}

/// One session's guard.
///
/// Between two statements of a session the kernel's networking for the other sessions, the
/// database and the client run, so each line of the session's memory a statement touches
/// comes back from far away. `repr(C)`, aligned to a cache line: the fields every statement
/// reads or writes (the hot ends of `results`, `text` and `names`, and the flags between
/// them) sit together in a few lines, and the rest after them.
#[repr(C, align(64))]
pub struct PgGuard {
    /// Result masking, when it applies to the session.
    results: Option<PgResults>,
    /// The session's migration run and the decisions it has made (see [`TextState`]).
    text: TextState,
    /// The session's audit records, when the listener keeps a trail.
    audit: Option<Box<SessionAudit>>,
    /// What the database last said of standard_conforming_strings. Off, a backslash in a
    /// string literal may escape a quote, which the classifier does not model: text holding a
    /// backslash is then judged as unknown.
    strings_as_classified: bool,
    /// The client encoding may end a multibyte character in an ASCII byte (once seen, for
    /// the rest of the session).
    ascii_only: bool,
    /// Whether result masking needs the tables each statement reads (its column rules name
    /// tables), known once per session.
    wants_tables: bool,
    /// The next ErrorResponse answers Airlock's substitute for a refused statement.
    substituted: bool,
    /// `bound` may hold parameters.
    any_bound: bool,
    /// Counters and flags first, then what only PREPARE and the extended protocol use.
    names: Names<Judged>,
    // What not every statement touches.
    guard: Arc<Guard>,
    /// The parameters last bound to each portal, for the ticket of a held Execute.
    bound: HashMap<Vec<u8>, Params, foldhash::fast::RandomState>,
    /// With a trail: the text each prepared statement and portal runs, as the client sent it.
    sent: HashMap<(Space, Vec<u8>), Arc<str>, foldhash::fast::RandomState>,
    who: Who,
}

/// How a PREPARE or DEALLOCATE inside classified text changes the session's names: `Exact`
/// when the text runs now (a Query), `Maybe` when it may run later or not at all (a Parse).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Effect {
    Exact,
    Maybe,
}

impl Inspector for PgGuard {
    fn interest(&self) -> Interest {
        Interest {
            statements: true,
            rows: self.results.is_some() || self.audit.as_ref().is_some_and(|a| a.wants_rows()),
            replies: true,
            outcomes: self.audit.is_some(),
            records: self.audit.is_some(),
        }
    }

    fn frontend(&mut self, message: &FrontendMessage<'_>) -> Verdict {
        match message {
            FrontendMessage::Query { sql } if !self.wants_tables && self.audit.is_none() => {
                self.query(sql)
            }
            message => self.noted_message(message),
        }
    }

    fn backend(&mut self, tag: u8, body: &[u8]) -> Rewrite {
        // The answers every statement brings, in a session that keeps no trail: only
        // masking sees them. (Airlock's substitute for a refused statement is answered with
        // an ErrorResponse, which is not among them.)
        let common = matches!(
            tag,
            be::COMMAND_COMPLETE | be::READY_FOR_QUERY | be::ROW_DESCRIPTION | be::DATA_ROW
        );
        if common && self.audit.is_none() {
            return match &mut self.results {
                Some(results) => masked(results.backend(tag, body)),
                None => Rewrite::Keep,
            };
        }
        self.noted_backend(tag, body)
    }

    fn substituted(&mut self) {
        self.substituted = true;
    }

    fn pending_records(&mut self) -> Ack {
        self.audit.as_mut().map_or(Ok(()), |a| a.take_pending())
    }

    fn reply(&mut self, tag: u8, status: Option<u8>) {
        match tag {
            be::ERROR_RESPONSE => self.names.error(),
            be::READY_FOR_QUERY => {
                self.names.ready();
                if let Some(audit) = &mut self.audit {
                    audit.ready();
                }
                // Outside a transaction block every portal is gone: forget their names.
                if status == Some(b'I') {
                    self.names.portals_gone();
                    // Only a session with a trail keeps what was sent.
                    if self.audit.is_some() && !self.sent.is_empty() {
                        self.sent.retain(|(space, _), _| *space == Space::Statement);
                    }
                    if std::mem::take(&mut self.any_bound) {
                        self.bound.clear();
                    }
                }
            }
            _ => {}
        }
    }
}

/// What masking made of a message, as the relay takes it.
fn masked(result: Result<Option<Vec<u8>>, crate::mask::pg::Unmaskable>) -> Rewrite {
    match result {
        Ok(body) => Rewrite::from_body(body),
        Err(e) => Rewrite::Refuse(e.reason),
    }
}

impl PgGuard {
    /// Any message from the database, with what the session's trail and its settings need
    /// of it: out of line, so that the common answers' path stays small.
    #[inline(never)]
    fn noted_backend(&mut self, tag: u8, body: &[u8]) -> Rewrite {
        if tag == be::PARAMETER_STATUS {
            match backend::parameter(body) {
                Some((b"standard_conforming_strings", value)) => {
                    self.strings_as_classified = value == b"on";
                }
                Some((b"client_encoding", value)) => {
                    let value = String::from_utf8_lossy(value);
                    self.ascii_only |= crate::sql::encoding::splits_ascii(&value);
                }
                _ => {}
            }
        }
        let substituted = std::mem::take(&mut self.substituted);
        if let Some(audit) = &mut self.audit {
            match tag {
                be::COMMAND_COMPLETE => audit.completed(backend::command_rows(body)),
                be::EMPTY_QUERY_RESPONSE | be::PORTAL_SUSPENDED => audit.completed(None),
                be::ERROR_RESPONSE if substituted => audit.refused(),
                be::ERROR_RESPONSE => {
                    let code = backend::sqlstate(body).unwrap_or(b"?????");
                    audit.failed(&String::from_utf8_lossy(code));
                }
                _ => {}
            }
        }
        let rewrite = match &mut self.results {
            Some(results) => masked(results.backend(tag, body)),
            None => Rewrite::Keep,
        };
        if tag == be::DATA_ROW
            && let Some(audit) = self.audit.as_mut().filter(|a| a.wants_rows())
        {
            // What the client sees, masked again for the record (an exempt session's rows
            // reach the trail masked too).
            let sent = match &rewrite {
                Rewrite::Replace(masked) => masked.as_slice(),
                _ => body,
            };
            if let Some(values) = crate::mask::pg::data_row(sent) {
                audit.row(&values);
            }
        }
        rewrite
    }

    /// A simple Query, in a session that keeps no trail and whose masking needs no tables:
    /// the path every statement of a simple-protocol client takes, kept to as little code as
    /// it can be. Between two statements of a session the kernel's networking for the other
    /// sessions, the database and the client run, so each line of code and memory the path
    /// touches comes back from far away every time.
    fn query(&mut self, sql: &[u8]) -> Verdict {
        let verdict = match forwards_remembered(&self.text, sql) {
            true => Verdict::Forward,
            false => self.query_verdict(sql),
        };
        self.names.sync_point();
        if let Some(results) = &mut self.results {
            results.query(Vec::new());
        }
        verdict
    }

    /// The verdict on a simple Query's text that [`PgGuard::query`] did not find remembered
    /// as going through: out of line.
    #[inline(never)]
    fn query_verdict(&mut self, sql: &[u8]) -> Verdict {
        self.with_text(Effect::Exact, |guard, session| {
            text_verdict(guard, session, sql)
        })
    }

    /// Any message, with the tables the statement of a Query or Execute reads when result
    /// masking asks for them, and with the session's trail: out of line, so that
    /// [`PgGuard::query`] stays small.
    #[inline(never)]
    fn noted_message(&mut self, message: &FrontendMessage<'_>) -> Verdict {
        let (verdict, tables) = self.judge_message(message);
        if let Some(results) = &mut self.results {
            results.frontend(message, tables);
        }
        verdict
    }

    /// A simple Query: the statements of its text are judged, and run now.
    fn judge_query(&mut self, sql: &[u8]) -> (Verdict, Vec<String>) {
        let judged = self.judge_text(sql, Effect::Exact);
        self.names.sync_point();
        let tables = match self.wants_tables {
            true => tables_of([&*judged]),
            false => Vec::new(),
        };
        if let Some(audit) = &mut self.audit {
            audit.statement(&judged, sql, Vec::new(), Ends::Ready);
        }
        (judged.verdict_owned(), tables)
    }

    /// The verdict on `message`, and (when result masking asks) the tables that the
    /// statement of a Query or Execute reads.
    fn judge_message(&mut self, message: &FrontendMessage<'_>) -> (Verdict, Vec<String>) {
        let wants_tables = self.wants_tables;
        let mut tables = Vec::new();
        let verdict = match message {
            // Not sent here by judge, but judged the same way if it were.
            FrontendMessage::Query { sql } => return self.judge_query(sql),
            FrontendMessage::Parse(p) => {
                let judged = self.judge_text(p.sql, Effect::Maybe);
                self.names.set(Space::Statement, p.statement, vec![judged]);
                if self.audit.is_some() {
                    let text = Arc::from(String::from_utf8_lossy(p.sql));
                    self.sent
                        .insert((Space::Statement, p.statement.to_vec()), text);
                }
                Verdict::Forward
            }
            FrontendMessage::Bind(b) => {
                let candidates = self.names.lookup(Space::Statement, b.statement);
                // Only a statement that may be held needs its parameters kept for the ticket.
                let holdable = candidates
                    .iter()
                    .any(|c| matches!(c.verdict, Verdict::Hold(_)));
                self.names.set(Space::Portal, b.portal, candidates);
                if holdable || self.audit.is_some() {
                    self.any_bound = true;
                    self.bound
                        .entry(b.portal.to_vec())
                        .or_default()
                        .copy_from(b);
                }
                if self.audit.is_some() {
                    let key = (Space::Statement, b.statement.to_vec());
                    if let Some(text) = self.sent.get(&key).cloned() {
                        self.sent.insert((Space::Portal, b.portal.to_vec()), text);
                    }
                }
                Verdict::Forward
            }
            FrontendMessage::Execute { portal, .. } => {
                if wants_tables {
                    let candidates = self.names.lookup(Space::Portal, portal);
                    tables = tables_of(candidates.iter().map(|c| &**c));
                }
                self.judge_execute(portal)
            }
            FrontendMessage::FunctionCall(f) => self.judge_function_call(f),
            FrontendMessage::Close { target, name } => {
                let space = if *target == b'S' {
                    Space::Statement
                } else {
                    Space::Portal
                };
                self.names.remove(space, name);
                if !self.sent.is_empty() {
                    self.sent.remove(&(space, name.to_vec()));
                }
                Verdict::Forward
            }
            FrontendMessage::Sync => {
                self.names.sync_point();
                if let Some(audit) = &mut self.audit {
                    audit.sync();
                }
                Verdict::Forward
            }
            FrontendMessage::Describe { .. } | FrontendMessage::Other { .. } => Verdict::Forward,
        };
        (verdict, tables)
    }

    /// A FunctionCall runs a function by OID with no SQL text: judged as unknown.
    #[cold]
    #[inline(never)]
    fn judge_function_call(&mut self, f: &FunctionCall<'_>) -> Verdict {
        let statement = Classified::unknown(
            "",
            "function_call_message",
            format!(
                "a FunctionCall message runs function OID {} with no SQL text to check",
                f.function_oid
            ),
        );
        self.names.sync_point();
        let judged = judge_one(&self.guard, &self.who, statement);
        if let Some(audit) = &mut self.audit {
            let params = f
                .args()
                .map(|a| a.map(|a| self.guard.redact(&String::from_utf8_lossy(a))))
                .collect();
            let sent = format!("FunctionCall {}", f.function_oid);
            audit.statement(&judged, sent.as_bytes(), params, Ends::Ready);
        }
        judged.verdict
    }

    /// Classifies and judges statement text; `effect` says whether a PREPARE or DEALLOCATE
    /// in it surely runs.
    fn judge_text(&mut self, sql: &[u8], effect: Effect) -> Arc<Judged> {
        self.with_text(effect, |guard, session| judge_text(guard, session, sql))
    }

    /// Runs `judging` with what the session brings to judging text.
    #[inline]
    fn with_text<R>(
        &mut self,
        effect: Effect,
        judging: impl FnOnce(&Guard, TextSession<'_>) -> R,
    ) -> R {
        let mut view = SessionView {
            guard: &self.guard,
            who: &self.who,
            names: &mut self.names,
            effect,
        };
        let session = TextSession {
            who: &self.who,
            state: &mut self.text,
            strings_as_classified: self.strings_as_classified,
            ascii_only: self.ascii_only,
            prepared: &mut view,
        };
        judging(&self.guard, session)
    }

    /// An Execute is judged as the strictest of what its portal may hold; a statement whose
    /// meaning depends on the session is classified afresh.
    fn judge_execute(&mut self, portal: &[u8]) -> Verdict {
        let candidates = self.names.lookup(Space::Portal, portal);
        let mut fresh = Vec::new();
        for c in &candidates {
            if let Some(text) = &c.dynamic {
                fresh.push(self.judge_text(text.as_bytes(), Effect::Maybe));
            }
        }
        let all = candidates.iter().chain(fresh.iter()).map(|c| &**c);
        let unknown;
        let judged = match Judged::strictest(all) {
            Some(j) => j,
            None => {
                let statement = Classified::unknown(
                    "",
                    "unknown_portal",
                    format!(
                        "Execute of portal \"{}\", which this session did not bind through Airlock",
                        String::from_utf8_lossy(portal)
                    ),
                );
                unknown = judge_one(&self.guard, &self.who, statement);
                &unknown
            }
        };
        let params = || {
            self.bound
                .get(portal)
                .map(|p| p.display(|v| self.guard.mask(v)))
                .unwrap_or_default()
        };
        if let Some(audit) = &mut self.audit {
            let sent = self.sent.get(&(Space::Portal, portal.to_vec()));
            let text = sent.map_or("", |t| &**t);
            audit.statement(judged, text.as_bytes(), params(), Ends::Completion);
        }
        match &judged.verdict {
            Verdict::Hold(hold) => {
                let mut hold = hold.clone();
                hold.request.params = params();
                Verdict::Hold(hold)
            }
            verdict => verdict.clone(),
        }
    }
}

/// The session's names as classification sees them while it reads PREPARE, EXECUTE and
/// DEALLOCATE.
struct SessionView<'a> {
    guard: &'a Guard,
    who: &'a Who,
    names: &'a mut Names<Judged>,
    effect: Effect,
}

impl PreparedStatements for SessionView<'_> {
    fn lookup(&self, name: &str) -> Vec<Classified> {
        self.names
            .lookup(Space::Statement, name.as_bytes())
            .iter()
            .flat_map(|j| j.statements.iter().cloned())
            .collect()
    }

    fn prepare(&mut self, name: String, statement: Classified) {
        let judged = Arc::new(judge_one(self.guard, self.who, statement));
        match self.effect {
            Effect::Exact => self
                .names
                .set(Space::Statement, name.as_bytes(), vec![judged]),
            Effect::Maybe => self.names.add(Space::Statement, name.as_bytes(), judged),
        }
    }

    fn deallocate(&mut self, name: Option<&str>) {
        // Forgetting is only safe when the text surely runs.
        if self.effect == Effect::Exact {
            match name {
                Some(name) => self.names.remove(Space::Statement, name.as_bytes()),
                None => self.names.clear(Space::Statement),
            }
        }
    }
}

/// Every table the statements of `judged` name.
fn tables_of<'a>(judged: impl IntoIterator<Item = &'a Judged>) -> Vec<String> {
    judged
        .into_iter()
        .flat_map(|j| j.statements.iter().flat_map(|s| s.tables.iter().cloned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::mem::offset_of;

    use super::*;

    /// What a simple Query and its answers read and write of the session's guard (see
    /// [`PgGuard`]) sits in its first three cache lines.
    #[test]
    fn what_every_statement_touches_sits_in_three_cache_lines() {
        assert_eq!(std::mem::align_of::<PgGuard>(), 64);
        assert_eq!(offset_of!(PgGuard, results), 0);
        let end = offset_of!(PgGuard, names) + super::super::names::HOT_BYTES;
        assert!(end <= 3 * 64, "the hot fields end at byte {end}");
    }
}
