//! The guard: the inspector that classifies every statement and judges it by the policy.
//! Pure: it sees messages through the inspection seam and answers with verdicts; the relay
//! does the I/O.
//!
//! One [`Guard`] serves a listener (its policy, users' groups and classification cache); each
//! session gets its own inspector ([`pg::PgGuard`]) that remembers what the session prepared.

pub mod audit;
mod decided;
pub mod mysql;
pub mod names;
pub mod pg;
pub mod prepared_sql;
pub mod startup;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::approval::ticket::{Escalation, Request};
use crate::audit::AuditLog;
use crate::inspect::{Denial, Hold, Verdict};
use crate::mask::Masking;
use crate::policy::mask::Applies;
use crate::policy::rules::OnTimeout;
use crate::policy::{Decision, Policy, check};
use crate::sql::Dialect;
use crate::sql::cache::{Cache, cache_key};
use crate::sql::classify::{Classified, PreparedStatements, classify_in_session};
use crate::sql::shape::shape_into;

/// Entries and bytes the classification cache of one listener may hold.
const CACHE_ENTRIES: usize = 10_000;
const CACHE_BYTES: usize = 16 << 20;

/// Keyed by names from the config or of authenticated sessions: seeded, and fast on short
/// keys (looked up for every new session).
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// What a listener's sessions share.
pub struct Guard {
    policy: Arc<Policy>,
    listener: String,
    groups: FastMap<String, Arc<[String]>>,
    /// The groups of a user the config gives none.
    no_groups: Arc<[String]>,
    dialect: Dialect,
    cache: Mutex<Cache>,
    /// The scope of each identity (user and database) seen, for [`Guard::scope_of`].
    scopes: Mutex<FastMap<String, FastMap<String, u64>>>,
    /// The policy's masking, compiled: of result values for the sessions it covers, and of
    /// statement text and parameters in tickets for every session.
    masking: Arc<Masking>,
    /// Where sessions and statements are recorded, if anywhere.
    audit: Option<Arc<AuditLog>>,
}

impl Guard {
    /// A guard for `listener`, speaking `dialect`, with each user's groups and the policy's
    /// masking compiled.
    pub fn new(
        policy: Arc<Policy>,
        listener: &str,
        dialect: Dialect,
        groups: HashMap<String, Vec<String>>,
        masking: Arc<Masking>,
    ) -> Guard {
        Guard {
            policy,
            listener: listener.to_owned(),
            groups: groups.into_iter().map(|(u, g)| (u, g.into())).collect(),
            no_groups: Arc::new([]),
            dialect,
            cache: Mutex::new(Cache::new(dialect, CACHE_ENTRIES, CACHE_BYTES)),
            scopes: Mutex::default(),
            masking,
            audit: None,
        }
    }

    /// The guard, recording its sessions and statements in `log`.
    pub fn audited(mut self, log: Option<Arc<AuditLog>>) -> Guard {
        self.audit = log;
        self
    }

    /// Whether `who` belongs to a group the masking exempts.
    pub fn masking_exempts(&self, who: &Who) -> bool {
        self.masking
            .policy
            .applies(&who.user, &who.groups, &self.listener)
            == Applies::Exempt
    }

    /// The name of a rule a [`Judged`] names.
    pub fn rule_name(&self, rule: RuleRef) -> &str {
        match rule {
            RuleRef::Index(i) => self.policy.rules.get(i).map_or("?", |r| r.name.as_str()),
            RuleRef::Default => &self.policy.default.name,
        }
    }

    /// The masking of result values for `who`'s session, if it applies. An exempt session
    /// is logged as such.
    pub fn masking_for(&self, who: &Who) -> Option<Arc<Masking>> {
        match self
            .masking
            .policy
            .applies(&who.user, &who.groups, &self.listener)
        {
            Applies::Masked => Some(self.masking.clone()),
            Applies::Exempt => {
                tracing::info!(
                    session = who.session, user = %who.user, listener = %self.listener,
                    "session exempt from masking: it sees result values unmasked"
                );
                None
            }
            Applies::NotCovered => None,
        }
    }

    /// The policy's masking, compiled.
    pub fn masking(&self) -> Arc<Masking> {
        self.masking.clone()
    }

    /// `value` with secrets masked (bytea in hex included), if it holds any.
    pub fn mask(&self, value: &[u8]) -> Option<Vec<u8>> {
        crate::mask::value::mask_text(&self.masking.masker, value)
    }

    /// `text` with secrets masked, for tickets, notifications and records.
    pub fn redact(&self, text: &str) -> String {
        self.redact_cow(text).into_owned()
    }

    /// As [`Guard::redact`], borrowing `text` when it holds nothing to mask.
    pub fn redact_cow<'a>(&self, text: &'a str) -> std::borrow::Cow<'a, str> {
        self.masking.masker.text(text)
    }

    /// Who a session is, with the user's groups from the config.
    pub fn who(&self, session: &crate::inspect::SessionInfo) -> Who {
        Who {
            client_addr: Some(session.client_addr),
            session: i64::from(session.id),
            ..self.who_of(&session.user, &session.database)
        }
    }

    /// Who `user` in `database` is, before the session has an id.
    pub fn who_of(&self, user: &str, database: &str) -> Who {
        Who {
            user: user.to_owned(),
            groups: self.groups.get(user).unwrap_or(&self.no_groups).clone(),
            database: database.to_owned(),
            client_addr: None,
            session: 0,
        }
    }

    /// The scope under which threads remember decisions for `who`: one number for each
    /// identity (user and database; a user's groups are the guard's to say) on this guard,
    /// never the same for two identities or two guards.
    pub fn scope_of(&self, who: &Who) -> u64 {
        /// Scopes given by every guard of the process, so that none is given twice.
        static NEXT: AtomicU64 = AtomicU64::new(1);
        /// Identities a guard keeps a scope for; past it they are forgotten (and get new
        /// scopes when they come back).
        const MAX_SCOPES: usize = 10_000;
        let mut scopes = self.scopes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(&scope) = scopes.get(&who.user).and_then(|d| d.get(&who.database)) {
            return scope;
        }
        if scopes.values().map(FastMap::len).sum::<usize>() >= MAX_SCOPES {
            scopes.clear();
        }
        let scope = NEXT.fetch_add(1, Ordering::Relaxed);
        scopes
            .entry(who.user.clone())
            .or_default()
            .insert(who.database.clone(), scope);
        scope
    }

    /// The text judging state of a new session of `who`.
    pub fn text_state(&self, who: &Who) -> TextState {
        TextState::new(self.scope_of(who))
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Who a session is, as the policy sees it.
#[derive(Debug, Clone)]
pub struct Who {
    pub user: String,
    /// The guard's groups for `user` ([`Guard::who`] builds every session's `Who`): threads
    /// remember decisions per user and database ([`Guard::scope_of`]) on that ground.
    pub groups: Arc<[String]>,
    pub database: String,
    /// Where the session connects from (none before it has one): formatted only when a
    /// ticket or a record names it.
    pub client_addr: Option<SocketAddr>,
    /// The session's id on its listener.
    pub session: i64,
}

impl Who {
    /// Where the session connects from, as tickets and records show it (empty if unknown).
    pub fn client_addr_text(&self) -> String {
        self.client_addr.map(|a| a.to_string()).unwrap_or_default()
    }
}

/// Statements and what the policy decided for them.
#[derive(Debug, Clone)]
pub struct Judged {
    pub statements: Arc<[Classified]>,
    pub verdict: Verdict,
    /// 0 allow, 1 review, 2 deny: the most restrictive of several candidates wins.
    severity: u8,
    /// The rule that decided (for the most restrictive statement), if any statement.
    pub rule: Option<RuleRef>,
    /// The text, when its meaning depends on what the session prepared: judged afresh each
    /// time it runs.
    pub dynamic: Option<Box<str>>,
}

/// A policy rule, by its place in the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleRef {
    Index(usize),
    Default,
}

impl Judged {
    /// `allow`, `review` or `deny`.
    pub fn decision(&self) -> &'static str {
        match self.severity {
            0 => "allow",
            1 => "review",
            _ => "deny",
        }
    }

    /// The verdict, cloned out of line unless it lets the statement through.
    #[inline]
    pub fn verdict_owned(&self) -> Verdict {
        match &self.verdict {
            Verdict::Forward => Verdict::Forward,
            other => clone_verdict(other),
        }
    }

    /// The most restrictive of `candidates`, or `None` if there are none.
    pub fn strictest<'a>(candidates: impl IntoIterator<Item = &'a Judged>) -> Option<&'a Judged> {
        candidates.into_iter().max_by_key(|j| j.severity)
    }
}

#[cold]
#[inline(never)]
fn clone_verdict(verdict: &Verdict) -> Verdict {
    verdict.clone()
}

/// Judges `statements` for `who` on `guard`'s listener: the most restrictive decision of any
/// statement in them decides.
pub fn judge(
    guard: &Guard,
    who: &Who,
    statements: Arc<[Classified]>,
    dynamic: Option<Box<str>>,
) -> Judged {
    let mut worst: Option<(Decision<'_>, &Classified)> = None;
    for statement in statements.iter() {
        let request = crate::policy::Request {
            user: &who.user,
            groups: &who.groups,
            listener: &guard.listener,
            database: &who.database,
            statement,
        };
        let decision = check(&guard.policy, &request);
        if worst
            .as_ref()
            .is_none_or(|(w, _)| severity(&decision) > severity(w))
        {
            worst = Some((decision, statement));
        }
    }
    let (severity, verdict) = match &worst {
        None | Some((Decision::Allow { .. }, _)) => (0, Verdict::Forward),
        Some((decision, statement)) => {
            let verdict = denial(decision, statement);
            let verdict = match (decision, verdict) {
                (Decision::Review { rule }, Verdict::Deny(refusal)) => {
                    let text = statement_text(&statements);
                    Verdict::Hold(Box::new(Hold {
                        request: ticket_request(guard, who, rule, statement, text),
                        refusal,
                    }))
                }
                (_, verdict) => verdict,
            };
            (severity(decision), verdict)
        }
    };
    let rule = worst.as_ref().map(|(decision, _)| {
        let rule = match decision {
            Decision::Allow { rule } | Decision::Review { rule } | Decision::Deny { rule, .. } => {
                *rule
            }
        };
        guard
            .policy
            .rules
            .iter()
            .position(|r| std::ptr::eq(r, rule))
            .map_or(RuleRef::Default, RuleRef::Index)
    });
    Judged {
        statements,
        verdict,
        severity,
        rule,
        dynamic,
    }
}

/// The statements' text as one string, as held for approval.
fn statement_text(statements: &[Classified]) -> String {
    let texts: Vec<&str> = statements.iter().map(|s| s.text.as_str()).collect();
    texts.join(";\n")
}

/// The ticket to open for `statement`, which `rule` holds for review.
fn ticket_request(
    guard: &Guard,
    who: &Who,
    rule: &crate::policy::Rule,
    statement: &Classified,
    text: String,
) -> Request {
    let escalation = match &rule.on_timeout {
        Some(OnTimeout::Escalate {
            approvers,
            timeout_secs,
        }) => Some(Escalation {
            approvers: approvers.clone(),
            timeout_secs: *timeout_secs,
        }),
        _ => None,
    };
    Request {
        requester: who.user.clone(),
        session: who.session,
        groups: who.groups.to_vec(),
        client_addr: who.client_addr_text(),
        listener: guard.listener.clone(),
        database: who.database.clone(),
        statement: guard.redact(&text),
        params: Vec::new(),
        kind: statement.kind.as_str().to_owned(),
        findings: statement
            .findings
            .iter()
            .map(|f| f.code.to_owned())
            .collect(),
        rule: rule.name.clone(),
        message: rule.message.clone(),
        approvers: rule.approvers.clone(),
        required: rule.approvals.unwrap_or(1),
        timeout_secs: rule.review_timeout_secs(),
        escalation,
        sha256: String::new(),
    }
}

/// Notes a session's migration run starting (`run`), and tags every statement of one.
pub fn tag_migration(
    run: &mut Option<&'static str>,
    statements: Arc<[Classified]>,
) -> Arc<[Classified]> {
    if run.is_none() {
        *run = statements.iter().find_map(|s| s.migration);
    }
    match *run {
        Some(tool) if statements.iter().any(|s| s.migration.is_none()) => statements
            .iter()
            .map(|s| Classified {
                migration: Some(tool),
                ..s.clone()
            })
            .collect(),
        _ => statements,
    }
}

/// Judges one statement made up by a guard (a FunctionCall, a command with no text, text it
/// cannot read).
pub fn judge_one(guard: &Guard, who: &Who, statement: Classified) -> Judged {
    judge(guard, who, Arc::new([statement]), None)
}

/// What a session's text judging remembers from one statement to the next.
pub struct TextState {
    /// The session's migration run, if it is one (see [`tag_migration`]): once a statement
    /// touches a migration tool's bookkeeping table, every later statement is tagged with it.
    migration: Option<&'static str>,
    /// The session's listener and identity (see [`Guard::scope_of`]), under which its
    /// thread remembers decisions made for cached classifications.
    scope: u64,
}

thread_local! {
    /// Decisions made for cached classifications, by scope and the cache's key (the
    /// statement's shape, or its text when it has none), for the sessions the thread serves:
    /// a statement of a shape that a session of the same identity sent before (pgbench's, an
    /// application's, with fresh literal values) costs its shape and one lookup, since the
    /// policy, the identity and the classification of a key are all the same as last time.
    static DECIDED: std::cell::RefCell<decided::Decided> =
        std::cell::RefCell::new(decided::Decided::default());
}

impl TextState {
    /// The state of a session of `scope` that has sent nothing yet.
    pub fn new(scope: u64) -> TextState {
        TextState {
            migration: None,
            scope,
        }
    }

    /// Decisions the thread remembers for the session's scope.
    #[cfg(test)]
    fn remembered(&self) -> usize {
        DECIDED.with_borrow(|d| d.count(self.scope))
    }

    /// What `found` makes of the decision the thread remembers for cache key `key` in the
    /// session's scope, if the session is no migration run (whose statements are tagged).
    #[inline]
    fn recall<R>(&self, key: &[u8], found: impl FnOnce(decided::Remembered<'_>) -> R) -> Option<R> {
        if self.migration.is_some() {
            return None;
        }
        DECIDED.with_borrow(|d| d.get(self.scope, key).map(found))
    }

    /// Decisions are remembered under `scope` from now on (the session's identity changed).
    fn rescope(&mut self, scope: u64) {
        self.scope = scope;
    }

    /// Remembers `judged` for cache key `key`, if it was made outside a migration run for a
    /// cached classification that names no migration tool (so tagging left it as it was).
    /// A hold is not remembered: its ticket names the session that asked.
    fn remember(&self, key: &[u8], judged: &Arc<Judged>) {
        let untagged = judged.statements.iter().all(|s| s.migration.is_none());
        let held = matches!(judged.verdict, Verdict::Hold(_));
        if self.migration.is_some() || !untagged || judged.dynamic.is_some() || held {
            return;
        }
        DECIDED.with_borrow_mut(|d| d.insert(self.scope, key, judged.clone()));
    }
}

/// What a session's guard brings to judging statement text.
pub struct TextSession<'a> {
    pub who: &'a Who,
    /// The session's migration run and remembered decisions.
    pub state: &'a mut TextState,
    /// Whether the server reads string literals as the classifier does.
    pub strings_as_classified: bool,
    /// The client's character set may end a multibyte character in an ASCII byte.
    pub ascii_only: bool,
    /// The session's prepared statements, for PREPARE and EXECUTE in the text.
    pub prepared: &'a mut dyn PreparedStatements,
}

/// Classifies and judges statement text, from the cache when its meaning cannot depend on
/// the session. Text that is not UTF-8, or that holds a backslash while the server reads
/// string literals otherwise than the classifier does, is judged unknown.
pub fn judge_text(guard: &Guard, session: TextSession<'_>, sql: &[u8]) -> Arc<Judged> {
    judge_text_into(
        guard,
        session,
        sql,
        |remembered| Arc::clone(remembered.judged),
        |judged| judged,
    )
}

/// The verdict [`judge_text`] gives, for a caller that needs nothing else of the decision:
/// a statement whose remembered decision lets it through costs its shape and one lookup,
/// without reading the decision itself.
pub fn text_verdict(guard: &Guard, session: TextSession<'_>, sql: &[u8]) -> Verdict {
    judge_text_into(
        guard,
        session,
        sql,
        |remembered| match remembered.forwards {
            true => Verdict::Forward,
            false => remembered.judged.verdict_owned(),
        },
        |judged| judged.verdict_owned(),
    )
}

thread_local! {
    /// The last statement's shape, kept for its capacity: one buffer for the thread's
    /// sessions stays in the cache where one for each session would not.
    static SHAPE: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// [`judge_text`], answering with `remembered` what the thread remembers a decision for (never
/// a hold, whose ticket would name another session and statement: see
/// [`TextState::remember`]), and with `judged` the rest.
#[inline]
fn judge_text_into<R>(
    guard: &Guard,
    mut session: TextSession<'_>,
    sql: &[u8],
    remembered: impl FnOnce(decided::Remembered<'_>) -> R,
    judged: impl FnOnce(Arc<Judged>) -> R,
) -> R {
    let text = match readable(&session, sql) {
        Ok(text) => text,
        Err(why) => return judged(unreadable(guard, session.who, sql, why)),
    };
    // The cache's key, once: for the session's memory and, outside its lock, the cache's.
    let mut shape = SHAPE.take();
    let key = cache_key(text, &mut shape);
    let answer = match session.state.recall(key, remembered) {
        Some(answer) => answer,
        None => judged(judge_unremembered(guard, &mut session, text, key)),
    };
    keep_shape(shape);
    answer
}

/// Whether the thread remembers that a statement like `sql`, sent by a session in `state`,
/// goes through: the path of a statement an application sends again and again (pgbench's,
/// an ORM's, with fresh literal values), which costs its shape and one lookup. Only ASCII
/// text with a shape takes it: such text is UTF-8, holds no backslash (a shape has none) and
/// no byte a client character set could make part of a multibyte character, so under any
/// session settings [`judge_text`] would read it as it is and find the same decision.
#[inline]
pub fn forwards_remembered(state: &TextState, sql: &[u8]) -> bool {
    if !crate::utf8::is_ascii(sql) {
        return false;
    }
    let mut shape = SHAPE.take();
    let forwards =
        shape_into(sql, &mut shape).is_some() && state.recall(&shape, |r| r.forwards) == Some(true);
    keep_shape(shape);
    forwards
}

/// Keeps the thread's shape buffer for its capacity, unless a huge statement grew it.
#[inline]
fn keep_shape(shape: Vec<u8>) {
    if shape.capacity() <= 1 << 16 {
        SHAPE.set(shape);
    }
}

/// `sql` as text the classifier reads as the server does, or why it is not.
#[inline]
fn readable<'a>(session: &TextSession<'_>, sql: &'a [u8]) -> Result<&'a str, Unreadable> {
    let Ok(text) = std::str::from_utf8(sql) else {
        return Err(Unreadable::NotUtf8);
    };
    if session.ascii_only && !text.is_ascii() {
        return Err(Unreadable::ClientEncoding);
    }
    if !session.strings_as_classified && text.contains('\\') {
        return Err(Unreadable::Backslash);
    }
    Ok(text)
}

/// Why text cannot be classified.
enum Unreadable {
    NotUtf8,
    /// The client's character set may end a multibyte character in an ASCII byte.
    ClientEncoding,
    /// A backslash where the server reads string literals otherwise than the classifier.
    Backslash,
}

/// Text judged as unknown, for the reason `why`. Out of line (as are the other paths that
/// are not a remembered decision), so that judging the statements a session sends again and
/// again touches as little memory as it can.
#[cold]
#[inline(never)]
fn unreadable(guard: &Guard, who: &Who, sql: &[u8], why: Unreadable) -> Arc<Judged> {
    // Only text the classifier could read is shown; the rest is not even valid UTF-8.
    let text = match why {
        Unreadable::Backslash => std::str::from_utf8(sql).unwrap_or(""),
        Unreadable::NotUtf8 | Unreadable::ClientEncoding => "",
    };
    let dialect = guard.dialect;
    let (code, reason) = match why {
        Unreadable::NotUtf8 => {
            let fix = match dialect {
                Dialect::Postgres => "connect with client_encoding UTF8",
                Dialect::MySql => "connect with a utf8mb4 character set",
            };
            (
                "not_utf8",
                format!("the statement is not valid UTF-8; {fix}"),
            )
        }
        Unreadable::ClientEncoding => (
            "client_encoding",
            "the session's client character set (SJIS, BIG5, GBK, GB18030, UHC, JOHAB ...) \
             may end a multibyte character in a quote or backslash byte, so the server may \
             split this text where Airlock does not; use UTF8"
                .to_owned(),
        ),
        Unreadable::Backslash => match dialect {
            Dialect::Postgres => (
                "nonstandard_strings",
                "standard_conforming_strings is off, so a backslash may end or continue a \
                 string literal where Airlock would not; turn it on for this session"
                    .to_owned(),
            ),
            Dialect::MySql => (
                "no_backslash_escapes",
                "the server reads backslashes in strings as ordinary characters \
                 (NO_BACKSLASH_ESCAPES), so a string may end where Airlock would not; remove \
                 that sql_mode for this session"
                    .to_owned(),
            ),
        },
    };
    let statement = Classified::unknown(text, code, reason);
    Arc::new(judge_one(guard, who, statement))
}

/// [`judge_text`] for UTF-8 `text` with cache key `key` that the session has no decision
/// for: from the listener's cache, or classified now.
#[inline(never)]
fn judge_unremembered(
    guard: &Guard,
    session: &mut TextSession<'_>,
    text: &str,
    key: &[u8],
) -> Arc<Judged> {
    let cached = guard.cache().get_keyed(key);
    let was_cached = cached.is_some();
    let (statements, dynamic) = match cached {
        Some(hit) => (hit, None),
        None => {
            let fresh: Arc<[Classified]> =
                classify_in_session(text, guard.dialect, session.prepared).into();
            // The cache itself refuses text whose meaning depends on the session.
            guard.cache().put(text, &fresh);
            let dynamic = fresh
                .iter()
                .any(|s| s.session_names)
                .then(|| Box::from(text));
            (fresh, dynamic)
        }
    };
    let statements = tag_migration(&mut session.state.migration, statements);
    let mut judged = Arc::new(judge(guard, session.who, statements, dynamic));
    if was_cached {
        session.state.remember(key, &judged);
    }
    held_as_sent(guard, &mut judged, text);
    judged
}

/// A held statement is held as the client sent it: a cached classification (or a remembered
/// decision) may carry the text of another statement of the same shape.
#[inline]
fn held_as_sent(guard: &Guard, judged: &mut Arc<Judged>, text: &str) {
    if matches!(judged.verdict, Verdict::Hold(_)) {
        hold_as_sent(guard, judged, text);
    }
}

#[cold]
#[inline(never)]
fn hold_as_sent(guard: &Guard, judged: &mut Arc<Judged>, text: &str) {
    if let Verdict::Hold(hold) = &mut Arc::make_mut(judged).verdict {
        hold.request.statement = guard.redact(text.trim());
        hold.request.sha256 = crate::audit::record::sha256_hex(text.as_bytes());
    }
}

fn severity(d: &Decision<'_>) -> u8 {
    match d {
        Decision::Allow { .. } => 0,
        Decision::Review { .. } => 1,
        Decision::Deny { .. } => 2,
    }
}

/// The client's error for a statement the policy refused or holds. Names the rule, the kind
/// and the findings; never echoes the statement itself.
fn denial(decision: &Decision<'_>, statement: &Classified) -> Verdict {
    let mut detail = format!("kind: {}", statement.kind.as_str());
    if !statement.findings.is_empty() {
        detail.push_str("; findings: ");
        let findings: Vec<String> = statement
            .findings
            .iter()
            .map(|f| format!("{} ({})", f.code, f.reason))
            .collect();
        detail.push_str(&findings.join(", "));
    }
    let (message, hint) = match decision {
        Decision::Deny { rule, message } => (
            format!(
                "Airlock policy rule \"{}\" denies this statement: {message}",
                rule.name
            ),
            "ask an Airlock administrator if this statement should be allowed".to_owned(),
        ),
        Decision::Review { rule } => {
            let why = rule
                .message
                .as_deref()
                .unwrap_or("the policy holds it for review");
            let approvers = if rule.approvers.is_empty() {
                "an approver".to_owned()
            } else {
                format!("a member of {}", rule.approvers.join(" or "))
            };
            (
                format!(
                    "Airlock policy rule \"{}\" requires approval for this statement: {why}",
                    rule.name
                ),
                format!(
                    "this Airlock keeps no approval tickets (its config has no [state]), so it \
                     refused the statement; ask {approvers} to run it, or to change the policy"
                ),
            )
        }
        Decision::Allow { .. } => return Verdict::Forward,
    };
    Verdict::Deny(Denial {
        message,
        detail: Some(detail),
        hint: Some(hint),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::sql::classify::Prepared;

    /// A guard for `listener` under the policy file `text`.
    pub(crate) fn guard_with(text: &str, listener: &str, dialect: Dialect) -> Guard {
        let policy = Policy::parse(&[("policy.toml".into(), text.into())]).unwrap();
        let masking = Arc::new(Masking::new(&policy.mask, None).unwrap());
        Guard::new(Arc::new(policy), listener, dialect, HashMap::new(), masking)
    }

    /// A guard for the postgres listener under the shipped default policy.
    pub(crate) fn guard() -> Guard {
        let text = crate::policy::SHIPPED_DEFAULT;
        guard_with(text, "postgres", Dialect::Postgres)
    }

    pub(crate) fn who() -> Who {
        Who {
            user: "app".into(),
            groups: Arc::new([]),
            database: "test".into(),
            client_addr: Some(SocketAddr::from(([127, 0, 0, 1], 1))),
            session: 1,
        }
    }

    fn judged(guard: &Guard, state: &mut TextState, sql: &str) -> Arc<Judged> {
        let who = who();
        let mut prepared = Prepared::default();
        let session = TextSession {
            who: &who,
            state,
            strings_as_classified: true,
            ascii_only: false,
            prepared: &mut prepared,
        };
        judge_text(guard, session, sql.as_bytes())
    }

    /// Under a client character set that may end a multibyte character in an ASCII byte,
    /// text past ASCII is unknown, even a shape remembered as allowed; ASCII text is as ever.
    #[test]
    fn text_past_ascii_is_unknown_under_a_character_set_that_splits_ascii() {
        let guard = guard();
        let who = who();
        let mut state = guard.text_state(&who);
        let mut prepared = Prepared::default();
        let mut judge = |sql: &str, ascii_only: bool| {
            let session = TextSession {
                who: &who,
                state: &mut state,
                strings_as_classified: true,
                ascii_only,
                prepared: &mut prepared,
            };
            judge_text(&guard, session, sql.as_bytes())
        };
        let smuggled = "SELECT E'\u{3041}\\'; DROP TABLE t; --'";
        assert_eq!(judge(smuggled, false).verdict, Verdict::Forward);
        let held = judge(smuggled, true);
        assert!(held.statements[0].has("client_encoding"), "{held:?}");
        assert!(!matches!(held.verdict, Verdict::Forward));
        assert_eq!(judge("SELECT 'plain'", true).verdict, Verdict::Forward);
    }

    #[test]
    fn a_shape_a_session_sent_before_is_judged_from_its_threads_memory() {
        let guard = guard();
        let mut state = guard.text_state(&who());
        let first = judged(&guard, &mut state, "SELECT abalance FROM a WHERE aid = 1;");
        // Classified now, cached by the listener; remembered from the next one on.
        assert_eq!(state.remembered(), 0);
        let second = judged(&guard, &mut state, "SELECT abalance FROM a WHERE aid = 2;");
        assert_eq!(state.remembered(), 1);
        let mut shape = Vec::new();
        let key = cache_key("select_ignored", &mut shape);
        assert!(state.recall(key, |_| ()).is_none());
        let key = cache_key(" SELECT abalance FROM a WHERE aid = 3 ", &mut shape);
        assert!(state.recall(key, |_| ()).is_some());
        // Another session of the same identity on the thread finds it too.
        let mut other = guard.text_state(&who());
        assert!(other.recall(key, |_| ()).is_some());
        let third = judged(&guard, &mut other, "SELECT abalance FROM a WHERE aid = 3;");
        assert_eq!(state.remembered(), 1);
        for j in [&first, &second, &third] {
            assert_eq!(j.verdict, Verdict::Forward);
        }
        // Another shape is judged on its own; a hold is never remembered (its ticket names
        // the session that asked).
        let drop = judged(&guard, &mut state, "DROP TABLE a;");
        let again = judged(&guard, &mut state, "DROP TABLE a;");
        assert_eq!(drop.decision(), "review");
        assert_eq!(again.decision(), "review");
        assert_eq!(state.remembered(), 1);
    }

    /// The verdict alone is the verdict of the whole judgement, the first time and when the
    /// decision is remembered: a remembered hold or denial is never taken for a pass.
    #[test]
    fn a_verdict_alone_is_the_verdict_of_the_judgement() {
        fn session<'a>(
            who: &'a Who,
            state: &'a mut TextState,
            prepared: &'a mut Prepared,
        ) -> TextSession<'a> {
            TextSession {
                who,
                state,
                strings_as_classified: true,
                ascii_only: false,
                prepared,
            }
        }
        let guard = guard();
        let who = who();
        let mut state = guard.text_state(&who);
        let mut prepared = Prepared::default();
        let texts = [
            "SELECT abalance FROM a WHERE aid = 1",
            "DELETE FROM a",
            "DROP TABLE a",
            "UPDATE a SET abalance = 2 WHERE aid = 3",
            "SELECT pg_terminate_backend(42)",
        ];
        let mut decisions = Vec::new();
        for round in 0..3 {
            for sql in texts {
                let whole = judge_text(
                    &guard,
                    session(&who, &mut state, &mut prepared),
                    sql.as_bytes(),
                );
                let alone = text_verdict(
                    &guard,
                    session(&who, &mut state, &mut prepared),
                    sql.as_bytes(),
                );
                assert_eq!(alone, whole.verdict, "{sql} (round {round})");
                // The fast path lets through what the judgement does (remembered by now, the
                // second time it was judged) and nothing else.
                let fast = forwards_remembered(&state, sql.as_bytes());
                let forwarded = whole.verdict == Verdict::Forward;
                assert_eq!(fast, forwarded, "{sql} (round {round})");
                decisions.push(whole.decision());
            }
        }
        // Each text let through was remembered (a hold never is), and the decisions are
        // those of the shipped policy.
        assert_eq!(state.remembered(), 2);
        assert_eq!(
            &decisions[10..],
            ["allow", "review", "review", "allow", "review"]
        );
    }

    /// The fast path takes only text that any session reads as the one whose decision was
    /// remembered: not text past ASCII (unknown under a character set that splits ASCII), not
    /// text without a shape (a backslash is unknown while standard_conforming_strings is
    /// off), and nothing during a migration run (whose statements are tagged).
    #[test]
    fn the_fast_path_takes_only_text_any_session_reads_alike() {
        let guard = guard();
        let who = who();
        let mut state = guard.text_state(&who);
        let mut prepared = Prepared::default();
        let mut judge = |state: &mut TextState, sql: &str, settled: bool| {
            let session = TextSession {
                who: &who,
                state,
                strings_as_classified: settled,
                ascii_only: !settled,
                prepared: &mut prepared,
            };
            judge_text(&guard, session, sql.as_bytes()).verdict.clone()
        };
        let ordinary = "SELECT abalance FROM a WHERE aid = 1";
        for sql in [ordinary, "SELECT 'é' FROM a", "SELECT 'a\\b' FROM a"] {
            for _ in 0..2 {
                assert_eq!(judge(&mut state, sql, true), Verdict::Forward, "{sql}");
            }
            let fast = forwards_remembered(&state, sql.as_bytes());
            assert_eq!(fast, sql == ordinary, "{sql}");
            if !fast {
                // Another session of the identity, with other settings, may not pass it.
                let mut other = guard.text_state(&who);
                assert_ne!(judge(&mut other, sql, false), Verdict::Forward, "{sql}");
            }
        }
        assert!(state.remembered() >= 3);
        judge(&mut state, "SELECT version FROM schema_migrations", true);
        assert!(!forwards_remembered(&state, ordinary.as_bytes()));
    }

    /// A new session's first statement of a shape the listener has judged for the same
    /// identity takes that decision; another identity is judged by its own rules, and a hold
    /// is never shared, because its ticket names the session that asked.
    #[test]
    fn sessions_share_decisions_only_with_their_own_identity() {
        let policy = r#"
            [defaults]
            action = "allow"

            [[rule]]
            name = "admins-delete"
            action = "allow"
            users = ["admin"]
            kinds = ["write"]

            [[rule]]
            name = "no-deletes"
            action = "deny"
            message = "no"
            findings = ["delete_without_where"]

            [[rule]]
            name = "drops-wait"
            action = "review"
            approvers = ["dba"]
            findings = ["drop"]
        "#;
        let guard = guard_with(policy, "postgres", Dialect::Postgres);
        let judge_as = |who: &Who, sql: &str| {
            // Each call a new session.
            let mut state = guard.text_state(who);
            let mut prepared = Prepared::default();
            let session = TextSession {
                who,
                state: &mut state,
                strings_as_classified: true,
                ascii_only: false,
                prepared: &mut prepared,
            };
            judge_text(&guard, session, sql.as_bytes())
        };
        let app = who();
        let admin = Who {
            user: "admin".into(),
            ..who()
        };
        // Classified and cached by the first, judged from the cache and then remembered by
        // the thread from then on: each identity keeps its own decision.
        for _ in 0..3 {
            assert_eq!(judge_as(&app, "DELETE FROM a").decision(), "deny");
            assert_eq!(judge_as(&admin, "DELETE FROM a").decision(), "allow");
            assert_eq!(judge_as(&app, "DELETE FROM a").decision(), "deny");
        }
        let remembered = |who: &Who| guard.text_state(who).remembered();
        assert_eq!((remembered(&app), remembered(&admin)), (1, 1));
        let session = |id: i64| Who {
            session: id,
            client_addr: Some(SocketAddr::from(([127, 0, 0, 1], id as u16))),
            ..who()
        };
        for id in 1..4 {
            let judged = judge_as(&session(id), "DROP TABLE a");
            let Verdict::Hold(hold) = &judged.verdict else {
                panic!("not held: {judged:?}");
            };
            assert_eq!(hold.request.session, id);
            assert_eq!(hold.request.client_addr, format!("127.0.0.1:{id}"));
        }
        // A hold is not remembered: its ticket names the session that asked.
        assert_eq!((remembered(&app), remembered(&admin)), (1, 1));
    }

    #[test]
    fn the_memory_stays_within_its_bounds() {
        let guard = guard();
        let mut state = guard.text_state(&who());
        // Long statements: each is judged twice, so that the second is remembered.
        let long = |i: usize| format!("SELECT {} FROM t{i} WHERE a = 1", "x, ".repeat(600) + "y");
        for i in 0..1500 {
            judged(&guard, &mut state, &long(i));
            judged(&guard, &mut state, &long(i));
            DECIDED.with_borrow(|d| {
                assert!(d.bytes() <= decided::MAX_BYTES as usize);
                assert!(d.len() <= decided::MAX_ENTRIES);
            });
        }
        assert!(state.remembered() > 0);
    }

    /// An EXECUTE is judged by what its name holds now, however the text around it reads:
    /// a classification cached while the name held something else never stands in.
    #[test]
    fn an_execute_is_judged_by_what_the_name_holds_now() {
        let cases = [
            (
                Dialect::MySql,
                "mysql",
                [
                    "PREPARE s FROM 'SELECT 1'",
                    "/*! EXECUTE s */",
                    "DEALLOCATE PREPARE s",
                    "PREPARE s FROM 'DROP TABLE t'",
                    "/*! EXECUTE s */",
                ],
            ),
            (
                Dialect::MySql,
                "mysql",
                [
                    "PREPARE s FROM 'SELECT 1'",
                    "EXECUTE s",
                    "DROP PREPARE s",
                    "PREPARE s FROM 'DROP TABLE t'",
                    "EXECUTE s",
                ],
            ),
            (
                Dialect::Postgres,
                "postgres",
                [
                    "PREPARE s AS SELECT 1",
                    "/* x */ EXECUTE s",
                    "DEALLOCATE s",
                    "PREPARE s AS DELETE FROM t",
                    "/* x */ EXECUTE s",
                ],
            ),
        ];
        for (dialect, listener, steps) in cases {
            let text = crate::policy::SHIPPED_DEFAULT;
            let guard = guard_with(text, listener, dialect);
            let who = who();
            let mut state = guard.text_state(&who);
            let mut prepared = Prepared::default();
            let mut decisions = Vec::new();
            // Twice: the second time round, every text has been classified and cached.
            for _ in 0..2 {
                for sql in steps {
                    let session = TextSession {
                        who: &who,
                        state: &mut state,
                        strings_as_classified: true,
                        ascii_only: false,
                        prepared: &mut prepared,
                    };
                    decisions.push((sql, judge_text(&guard, session, sql.as_bytes()).decision()));
                }
            }
            let once = steps
                .into_iter()
                .zip(["allow", "allow", "allow", "allow", "review"]);
            let expected: Vec<_> = once.clone().chain(once).collect();
            assert_eq!(decisions, expected, "{dialect:?}");
        }
    }
}
