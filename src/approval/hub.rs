//! The approvals hub: where sessions hold statements and approvers decide on them. Tickets
//! live in the store; a session waiting on one is woken through a watch channel (no
//! polling), and keeps its own deadline, so a thousand held statements cost a thousand idle
//! tasks and nothing else.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use super::notify::{Notifier, What};
use super::store::{Event, StoreError, TicketStore};
use super::ticket::{Refused, Request, Scope, State, Ticket};
use crate::audit::AuditLog;

/// Why an approver's action failed.
#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    #[error(transparent)]
    Refused(#[from] Refused),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How a held statement ended, for the session that holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Approved,
    Denied {
        by: String,
        reason: String,
    },
    Expired,
    /// The store could not be read or written: the statement does not run (fail closed).
    Failed(String),
}

/// Approvals shared by every listener and the admin API.
pub struct Approvals {
    store: Arc<dyn TicketStore>,
    /// Serialises every read-modify-save of a ticket, and holds the waiting sessions.
    waiting: Mutex<HashMap<i64, watch::Sender<State>>>,
    /// Bumped at every change, for callers that wait for changes.
    changes: watch::Sender<u64>,
    notifier: Notifier,
    /// Approvals that reach beyond their statement, by (listener, session).
    grants: Mutex<HashMap<(String, i64), Vec<Grant>>>,
    /// Where ticket changes are recorded, if an audit trail is kept.
    audit: Option<Arc<AuditLog>>,
}

/// A scoped approval: the session's statements that `rule` holds pass until `until` (unix
/// seconds; the session's end if none).
#[derive(Debug, Clone)]
struct Grant {
    rule: String,
    until: Option<i64>,
    ticket: i64,
    approver: String,
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Approvals {
    /// A hub over `store`. Tickets still open from an earlier run are abandoned: no session
    /// waits for them any more.
    pub fn new(
        store: Arc<dyn TicketStore>,
        notifier: Notifier,
    ) -> Result<Arc<Approvals>, StoreError> {
        Approvals::audited(store, notifier, None)
    }

    /// As [`Approvals::new`], recording every ticket change in `audit`.
    pub fn audited(
        store: Arc<dyn TicketStore>,
        notifier: Notifier,
        audit: Option<Arc<AuditLog>>,
    ) -> Result<Arc<Approvals>, StoreError> {
        let abandoned = store.abandon_open(now())?;
        if abandoned > 0 {
            tracing::warn!(
                tickets = abandoned,
                "tickets held when Airlock last stopped are abandoned"
            );
        }
        Ok(Arc::new(Approvals {
            store,
            waiting: Mutex::new(HashMap::new()),
            changes: watch::channel(0).0,
            notifier,
            grants: Mutex::new(HashMap::new()),
            audit,
        }))
    }

    /// Records a ticket's change in the audit trail, if one is kept.
    fn audit(&self, ticket: &Ticket, event: &Event) {
        if let Some(log) = &self.audit {
            log.record(&crate::audit::Event::Ticket {
                listener: ticket.request.listener.clone(),
                session: ticket.request.session,
                ticket: ticket.id,
                event: event.event.clone(),
                actor: event.actor.clone(),
                detail: event.detail.clone(),
                rule: ticket.request.rule.clone(),
                sha256: ticket.request.sha256.clone(),
            });
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, watch::Sender<State>>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` off the event loop (the store blocks).
    async fn blocking<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Approvals) -> T + Send + 'static,
    ) -> T {
        let hub = self.clone();
        match tokio::task::spawn_blocking(move || f(&hub)).await {
            Ok(v) => v,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    /// Holds a statement: stores its ticket and returns what the session waits on. Within
    /// a scoped approval of the same session and rule, the ticket is approved at once (and
    /// recorded as such).
    pub async fn hold(self: &Arc<Self>, request: Request) -> Result<Held, StoreError> {
        let (ticket, rx) = self
            .blocking(move |hub| {
                let at = now();
                let deadline = at + request.timeout_secs as i64;
                let grant = hub.grant_for(&request, at);
                let mut ticket = hub.store.create(&request, at, deadline)?;
                let created = Event {
                    at,
                    actor: Some(request.requester.clone()),
                    event: "created".into(),
                    detail: None,
                };
                hub.audit(&ticket, &created);
                let (tx, rx) = watch::channel(State::Pending);
                if let Some(grant) = grant {
                    ticket.approve_by_grant(grant.ticket, &grant.approver, at);
                    let event = Event {
                        at,
                        actor: Some(grant.approver.clone()),
                        event: "approved".into(),
                        detail: ticket.reason.clone(),
                    };
                    hub.store.save(&ticket, &event)?;
                    hub.audit(&ticket, &event);
                } else {
                    hub.lock().insert(ticket.id, tx);
                    hub.notifier.send(What::Created, &ticket);
                }
                hub.changed();
                Ok::<_, StoreError>((ticket, rx))
            })
            .await?;
        if !ticket.state.is_open() {
            tracing::info!(
                ticket = ticket.id, rule = %ticket.request.rule, reason = ?ticket.reason,
                "statement approved within an earlier approval's scope"
            );
            return Ok(Held {
                hub: self.clone(),
                ticket,
                rx,
                done: true,
            });
        }
        tracing::info!(
            ticket = ticket.id, rule = %ticket.request.rule, user = %ticket.request.requester,
            approvers = %ticket.request.approvers.join(","), "statement held for approval"
        );
        Ok(Held {
            hub: self.clone(),
            ticket,
            rx,
            done: false,
        })
    }

    /// Changes ticket `id` with `f` under the lock, saves it with the event `f` returns, and
    /// wakes its session if it closed.
    fn change(
        &self,
        id: i64,
        f: impl FnOnce(&mut Ticket) -> Result<Option<Event>, Refused>,
    ) -> Result<Ticket, DecideError> {
        let mut waiting = self.lock();
        let mut ticket = self.store.get(id)?.ok_or(Refused::NoSuchTicket(id))?;
        let before = ticket.state;
        if let Some(event) = f(&mut ticket)? {
            self.store.save(&ticket, &event)?;
            self.audit(&ticket, &event);
            let what = match ticket.state {
                _ if ticket.state == before => None,
                State::Escalated => Some(What::Escalated),
                State::Approved => Some(What::Approved),
                State::Denied => Some(What::Denied),
                State::Expired => Some(What::Expired),
                State::Abandoned => Some(What::Abandoned),
                State::Pending => None,
            };
            if let Some(what) = what {
                self.notifier.send(what, &ticket);
            }
            if let Some(tx) = waiting.get(&id) {
                let _ = tx.send(ticket.state);
            }
            if !ticket.state.is_open() {
                waiting.remove(&id);
            }
            drop(waiting);
            self.changed();
        }
        Ok(ticket)
    }

    fn grants(&self) -> std::sync::MutexGuard<'_, HashMap<(String, i64), Vec<Grant>>> {
        self.grants.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A scoped approval covering `request` at `at`, if any.
    fn grant_for(&self, request: &Request, at: i64) -> Option<Grant> {
        let key = (request.listener.clone(), request.session);
        let grants = self.grants();
        grants
            .get(&key)?
            .iter()
            .find(|g| g.rule == request.rule && g.until.is_none_or(|u| at < u))
            .cloned()
    }

    /// Remembers the scope of an approved ticket for its session.
    fn grant(&self, ticket: &Ticket) {
        let until = match ticket.scope() {
            Scope::Once => return,
            Scope::Session => None,
            Scope::Minutes(m) => Some(ticket.decided_at.unwrap_or_else(now) + 60 * i64::from(m)),
        };
        let grant = Grant {
            rule: ticket.request.rule.clone(),
            until,
            ticket: ticket.id,
            approver: ticket.decided_by.clone().unwrap_or_default(),
        };
        let key = (ticket.request.listener.clone(), ticket.request.session);
        self.grants().entry(key).or_default().push(grant);
    }

    /// A session ended: its scoped approvals end with it.
    pub fn session_ended(&self, listener: &str, session: i64) {
        self.grants().remove(&(listener.to_owned(), session));
    }

    fn changed(&self) {
        self.changes.send_modify(|v| *v += 1);
    }

    /// `approver` (in `groups`) approves ticket `id`.
    pub async fn approve(
        self: &Arc<Self>,
        id: i64,
        approver: String,
        groups: Vec<String>,
        scope: Scope,
    ) -> Result<Ticket, DecideError> {
        let ticket = self
            .blocking(move |hub| {
                let ticket = hub.change(id, |t| {
                    let done = t.approve(&approver, &groups, scope, now())?;
                    let event = if done { "approved" } else { "approval" };
                    Ok(Some(Event {
                        at: now(),
                        actor: Some(approver.clone()),
                        event: event.into(),
                        detail: Some(format!(
                            "{} of {} approvals, scope {scope:?}",
                            t.approvals.len(),
                            t.request.required.max(1)
                        )),
                    }))
                })?;
                hub.grant(&ticket);
                Ok::<_, DecideError>(ticket)
            })
            .await?;
        tracing::info!(ticket = id, state = ticket.state.as_str(), by = ?ticket.approvals.last().map(|a| &a.approver), "approval given");
        Ok(ticket)
    }

    /// `approver` (in `groups`) denies ticket `id` for `reason`.
    pub async fn deny(
        self: &Arc<Self>,
        id: i64,
        approver: String,
        groups: Vec<String>,
        reason: String,
    ) -> Result<Ticket, DecideError> {
        let ticket = self
            .blocking(move |hub| {
                hub.change(id, |t| {
                    t.deny(&approver, &groups, &reason, now())?;
                    Ok(Some(Event {
                        at: now(),
                        actor: Some(approver.clone()),
                        event: "denied".into(),
                        detail: Some(reason.clone()),
                    }))
                })
            })
            .await?;
        tracing::info!(ticket = id, by = ?ticket.decided_by, "ticket denied");
        Ok(ticket)
    }

    pub async fn get(self: &Arc<Self>, id: i64) -> Result<Option<Ticket>, StoreError> {
        self.blocking(move |hub| hub.store.get(id)).await
    }

    pub async fn events(self: &Arc<Self>, id: i64) -> Result<Vec<Event>, StoreError> {
        self.blocking(move |hub| hub.store.events(id)).await
    }

    pub async fn list(
        self: &Arc<Self>,
        state: Option<State>,
        limit: usize,
    ) -> Result<Vec<Ticket>, StoreError> {
        self.blocking(move |hub| hub.store.list(state, limit)).await
    }

    /// The change counter, to wait on with [`watch::Receiver::changed`].
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

/// A statement held in a live session. Dropping it before it is decided abandons the ticket.
pub struct Held {
    hub: Arc<Approvals>,
    pub ticket: Ticket,
    rx: watch::Receiver<State>,
    done: bool,
}

impl Held {
    /// Waits for the decision, timing out (and escalating) at each stage's deadline.
    pub async fn decision(&mut self) -> Outcome {
        if !self.ticket.state.is_open() {
            return self.outcome();
        }
        loop {
            let left = (self.ticket.deadline - now()).max(0) as u64;
            tokio::select! {
                changed = self.rx.changed() => {
                    let state = *self.rx.borrow_and_update();
                    if changed.is_err() || !state.is_open() {
                        return self.finish().await;
                    }
                }
                _ = tokio::time::sleep(Duration::from_secs(left)) => {
                    let id = self.ticket.id;
                    let timed_out = self.hub.blocking(move |hub| hub.change(id, |t| {
                        if !t.state.is_open() || t.deadline > now() {
                            return Ok(None);
                        }
                        let state = t.time_out(now());
                        let detail = (state == State::Escalated)
                            .then(|| format!("to {}", t.stage_approvers().join(", ")));
                        Ok(Some(Event { at: now(), actor: None, event: state.as_str().into(), detail }))
                    })).await;
                    match timed_out {
                        Ok(t) if t.state.is_open() => {
                            if t.state == State::Escalated && self.ticket.state != State::Escalated {
                                tracing::info!(ticket = t.id, approvers = %t.stage_approvers().join(","), "ticket escalated");
                            }
                            self.ticket = t;
                        }
                        Ok(t) => {
                            self.ticket = t;
                            return self.outcome();
                        }
                        Err(e) => {
                            self.done = true;
                            return Outcome::Failed(e.to_string());
                        }
                    }
                }
            }
        }
    }

    async fn finish(&mut self) -> Outcome {
        match self.hub.get(self.ticket.id).await {
            Ok(Some(t)) => {
                self.ticket = t;
                self.outcome()
            }
            Ok(None) => {
                self.done = true;
                Outcome::Failed(format!("ticket {} vanished from the store", self.ticket.id))
            }
            Err(e) => {
                self.done = true;
                Outcome::Failed(e.to_string())
            }
        }
    }

    fn outcome(&mut self) -> Outcome {
        self.done = !self.ticket.state.is_open();
        match self.ticket.state {
            State::Approved => Outcome::Approved,
            State::Denied => Outcome::Denied {
                by: self.ticket.decided_by.clone().unwrap_or_default(),
                reason: self.ticket.reason.clone().unwrap_or_default(),
            },
            State::Expired => Outcome::Expired,
            State::Abandoned => Outcome::Failed("the ticket was abandoned".into()),
            State::Pending | State::Escalated => Outcome::Failed("the ticket is still open".into()),
        }
    }

    /// The client left or withdrew it (`why`): the ticket can no longer be approved.
    pub async fn abandon(mut self, why: &'static str) {
        self.done = true;
        let id = self.ticket.id;
        let _ = self.hub.blocking(move |hub| abandon(hub, id, why)).await;
    }
}

fn abandon(hub: &Approvals, id: i64, why: &str) -> Result<Ticket, DecideError> {
    let result = hub.change(id, |t| {
        Ok(t.abandon(now()).then(|| Event {
            at: now(),
            actor: None,
            event: "abandoned".into(),
            detail: Some(why.to_owned()),
        }))
    });
    hub.lock().remove(&id);
    if let Ok(t) = &result {
        tracing::info!(
            ticket = t.id,
            state = t.state.as_str(),
            "held statement's client left"
        );
    }
    result
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // The session ended another way (shutdown, the database went away): abandon it
        // off the event loop.
        let (hub, id) = (self.hub.clone(), self.ticket.id);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime
                .spawn_blocking(move || abandon(&hub, id, "the session ended while it was held"));
        } else {
            let _ = abandon(&hub, id, "the session ended while it was held");
        }
    }
}

#[cfg(test)]
mod tests {
    //! The hub with its real SQLite store: a thousand statements held at once, each woken by
    //! its own decision.

    use super::*;
    use crate::approval::store::SqliteStore;

    fn request(i: usize) -> Request {
        Request {
            sha256: String::new(),
            requester: "app".into(),
            session: i as i64,
            groups: vec![],
            client_addr: "127.0.0.1:1".into(),
            listener: "postgres".into(),
            database: "test".into(),
            statement: format!("drop table t{i}"),
            params: vec![],
            kind: "ddl".into(),
            findings: vec!["drop".into()],
            rule: "ddl".into(),
            message: None,
            approvers: vec!["dba".into()],
            required: 1,
            timeout_secs: 600,
            escalation: None,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_thousand_held_at_once_each_get_their_own_decision() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(dir.path()).unwrap());
        let hub = Approvals::new(store, Notifier::default()).unwrap();
        let mut waiting = Vec::new();
        for i in 0..1000 {
            let mut held = hub.hold(request(i)).await.unwrap();
            let id = held.ticket.id;
            waiting.push((id, tokio::spawn(async move { held.decision().await })));
        }
        let dba = vec!["dba".to_owned()];
        for (k, (id, _)) in waiting.iter().enumerate() {
            if k % 2 == 0 {
                hub.approve(*id, "alice".into(), dba.clone(), Scope::Once)
                    .await
                    .unwrap();
            } else {
                hub.deny(*id, "alice".into(), dba.clone(), format!("no {k}"))
                    .await
                    .unwrap();
            }
        }
        for (k, (_, task)) in waiting.into_iter().enumerate() {
            let outcome = task.await.unwrap();
            if k % 2 == 0 {
                assert_eq!(outcome, Outcome::Approved);
            } else {
                assert_eq!(
                    outcome,
                    Outcome::Denied {
                        by: "alice".into(),
                        reason: format!("no {k}")
                    }
                );
            }
        }
        assert!(hub.lock().is_empty(), "no session is left registered");
    }
}
