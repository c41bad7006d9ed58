//! Tickets and the rules of deciding them. Pure: no clock (times are passed in), no I/O.

use serde::{Deserialize, Serialize};

/// Where a ticket is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Waiting for the first stage's approvers.
    Pending,
    /// The first stage timed out; waiting for the escalation's approvers.
    Escalated,
    Approved,
    Denied,
    /// Timed out with no escalation left.
    Expired,
    /// The client left, or Airlock stopped, while it waited.
    Abandoned,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Escalated => "escalated",
            State::Approved => "approved",
            State::Denied => "denied",
            State::Expired => "expired",
            State::Abandoned => "abandoned",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        Some(match s {
            "pending" => State::Pending,
            "escalated" => State::Escalated,
            "approved" => State::Approved,
            "denied" => State::Denied,
            "expired" => State::Expired,
            "abandoned" => State::Abandoned,
            _ => return None,
        })
    }

    /// Still waiting for a decision.
    pub fn is_open(self) -> bool {
        matches!(self, State::Pending | State::Escalated)
    }
}

/// What a session asks to be held: everything an approver needs to decide, and the rule's
/// terms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Airlock's user name of the session.
    pub requester: String,
    /// The session's id on its listener (what an approval's scope is bound to).
    #[serde(default)]
    pub session: i64,
    pub groups: Vec<String>,
    pub client_addr: String,
    /// `postgres` or `mysql`.
    pub listener: String,
    pub database: String,
    /// The statement text exactly as held.
    pub statement: String,
    /// Its parameters (extended protocol), as the client bound them; NULL as `None`.
    #[serde(default)]
    pub params: Vec<Option<String>>,
    pub kind: String,
    pub findings: Vec<String>,
    /// The rule that holds it, and the message it gives approvers.
    pub rule: String,
    pub message: Option<String>,
    /// Who may approve at the first stage, and how many distinct approvals it takes.
    pub approvers: Vec<String>,
    pub required: u32,
    pub timeout_secs: u64,
    /// The second stage, if the first times out.
    pub escalation: Option<Escalation>,
    /// SHA-256 (hex) of the statement exactly as the client sent it: what an approval
    /// lets run, and what the audit trail records as forwarded.
    #[serde(default)]
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Escalation {
    pub approvers: Vec<String>,
    pub timeout_secs: u64,
}

/// One approval given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    pub approver: String,
    /// Unix seconds.
    pub at: i64,
    /// What else the approval lets through.
    #[serde(default)]
    pub scope: Scope,
}

/// How far an approval reaches. Beyond the held statement itself, a scope only ever covers
/// statements of the same session that the same rule holds: a migration run is approved once
/// rather than statement by statement.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Exactly the held statement.
    #[default]
    Once,
    /// And the rest of the session.
    Session,
    /// And the session's next N minutes.
    Minutes(u32),
}

impl Scope {
    /// `once`, `session`, or minutes as `30m`.
    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "once" => Some(Scope::Once),
            "session" => Some(Scope::Session),
            m => {
                let n: u32 = m.strip_suffix('m')?.parse().ok()?;
                (n > 0).then_some(Scope::Minutes(n))
            }
        }
    }
}

/// A held statement and what has happened to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    pub id: i64,
    #[serde(flatten)]
    pub request: Request,
    pub state: State,
    /// Unix seconds.
    pub created_at: i64,
    /// When the current stage times out (unix seconds).
    pub deadline: i64,
    pub approvals: Vec<Approval>,
    /// Who decided (the last approver, or the one who denied), why, and when.
    pub decided_by: Option<String>,
    pub reason: Option<String>,
    pub decided_at: Option<i64>,
}

/// Why an approver's decision was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("ticket {0} does not exist")]
    NoSuchTicket(i64),
    #[error("ticket {id} is {state} and can no longer be decided", state = .state.as_str())]
    Closed { id: i64, state: State },
    #[error("{0} asked for this statement and cannot decide on it")]
    OwnStatement(String),
    #[error("{approver} is not in the approver groups of this stage ({groups})")]
    NotAnApprover { approver: String, groups: String },
    #[error("{0} has already approved this ticket")]
    AlreadyApproved(String),
}

impl Ticket {
    /// The approver groups of the current stage.
    pub fn stage_approvers(&self) -> &[String] {
        match (&self.state, &self.request.escalation) {
            (State::Escalated, Some(e)) => &e.approvers,
            _ => &self.request.approvers,
        }
    }

    /// Checks that `approver`, in `groups`, may decide on this ticket now.
    pub fn may_decide(&self, approver: &str, groups: &[String]) -> Result<(), Refused> {
        if !self.state.is_open() {
            return Err(Refused::Closed {
                id: self.id,
                state: self.state,
            });
        }
        if approver == self.request.requester {
            return Err(Refused::OwnStatement(approver.to_owned()));
        }
        let stage = self.stage_approvers();
        if !groups.iter().any(|g| stage.contains(g)) {
            return Err(Refused::NotAnApprover {
                approver: approver.to_owned(),
                groups: stage.join(", "),
            });
        }
        Ok(())
    }

    /// Adds `approver`'s approval; the ticket is approved once the rule's number of distinct
    /// approvers is reached. Returns whether it now is.
    pub fn approve(
        &mut self,
        approver: &str,
        groups: &[String],
        scope: Scope,
        now: i64,
    ) -> Result<bool, Refused> {
        self.may_decide(approver, groups)?;
        if self.approvals.iter().any(|a| a.approver == approver) {
            return Err(Refused::AlreadyApproved(approver.to_owned()));
        }
        self.approvals.push(Approval {
            approver: approver.to_owned(),
            at: now,
            scope,
        });
        if self.approvals.len() as u32 >= self.request.required.max(1) {
            self.close(State::Approved, Some(approver), None, now);
            return Ok(true);
        }
        Ok(false)
    }

    pub fn deny(
        &mut self,
        approver: &str,
        groups: &[String],
        reason: &str,
        now: i64,
    ) -> Result<(), Refused> {
        self.may_decide(approver, groups)?;
        self.close(State::Denied, Some(approver), Some(reason), now);
        Ok(())
    }

    /// The current stage's deadline passed: escalate (once, if the rule says so) or expire.
    /// Returns the new state; an already closed ticket is left as it is.
    pub fn time_out(&mut self, now: i64) -> State {
        match (self.state, &self.request.escalation) {
            (State::Pending, Some(e)) => {
                self.state = State::Escalated;
                self.deadline = now + e.timeout_secs as i64;
            }
            (State::Pending | State::Escalated, _) => {
                self.close(State::Expired, None, Some("no decision in time"), now);
            }
            _ => {}
        }
        self.state
    }

    /// The scope the approval that decided it gave (`Once` unless approved).
    pub fn scope(&self) -> Scope {
        match self.state {
            State::Approved => self.approvals.last().map_or(Scope::Once, |a| a.scope),
            _ => Scope::Once,
        }
    }

    /// Approved at creation, within the scope `by` gave on ticket `grant`.
    pub fn approve_by_grant(&mut self, grant: i64, by: &str, now: i64) {
        self.close(
            State::Approved,
            Some(by),
            Some(&format!("within the scope of ticket {grant}")),
            now,
        );
    }

    /// The client left while it waited. Returns false if it was already closed.
    pub fn abandon(&mut self, now: i64) -> bool {
        if !self.state.is_open() {
            return false;
        }
        self.close(State::Abandoned, None, None, now);
        true
    }

    fn close(&mut self, state: State, by: Option<&str>, reason: Option<&str>, now: i64) {
        self.state = state;
        self.decided_by = by.map(str::to_owned);
        self.reason = reason.map(str::to_owned);
        self.decided_at = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket(required: u32, escalation: Option<Escalation>) -> Ticket {
        Ticket {
            id: 7,
            request: Request {
                sha256: String::new(),
                requester: "app".into(),
                session: 1,
                groups: vec!["dba".into()],
                client_addr: "127.0.0.1:5000".into(),
                listener: "postgres".into(),
                database: "test".into(),
                statement: "drop table t".into(),
                params: vec![],
                kind: "ddl".into(),
                findings: vec!["drop".into()],
                rule: "ddl-needs-a-dba".into(),
                message: None,
                approvers: vec!["dba".into()],
                required,
                timeout_secs: 60,
                escalation,
            },
            state: State::Pending,
            created_at: 100,
            deadline: 160,
            approvals: Vec::new(),
            decided_by: None,
            reason: None,
            decided_at: None,
        }
    }

    fn dba() -> Vec<String> {
        vec!["dba".to_owned()]
    }

    #[test]
    fn the_requester_cannot_decide_even_in_the_group() {
        let mut t = ticket(1, None);
        assert_eq!(
            t.approve("app", &dba(), Scope::Once, 110),
            Err(Refused::OwnStatement("app".into()))
        );
        assert_eq!(
            t.deny("app", &dba(), "no", 110),
            Err(Refused::OwnStatement("app".into()))
        );
        assert_eq!(t.state, State::Pending);
    }

    #[test]
    fn only_the_current_stages_groups_decide() {
        let escalation = Escalation {
            approvers: vec!["oncall".into()],
            timeout_secs: 30,
        };
        let mut t = ticket(1, Some(escalation));
        let oncall = vec!["oncall".to_owned()];
        assert!(matches!(
            t.approve("bob", &oncall, Scope::Once, 110),
            Err(Refused::NotAnApprover { .. })
        ));
        assert_eq!(t.time_out(160), State::Escalated);
        assert_eq!(t.deadline, 190);
        assert!(matches!(
            t.approve("alice", &dba(), Scope::Once, 170),
            Err(Refused::NotAnApprover { .. })
        ));
        assert_eq!(t.approve("bob", &oncall, Scope::Once, 170), Ok(true));
        assert_eq!(t.state, State::Approved);
        assert_eq!(t.decided_by.as_deref(), Some("bob"));
    }

    #[test]
    fn n_distinct_approvals() {
        let mut t = ticket(2, None);
        assert_eq!(t.approve("alice", &dba(), Scope::Once, 110), Ok(false));
        assert_eq!(
            t.approve("alice", &dba(), Scope::Once, 111),
            Err(Refused::AlreadyApproved("alice".into()))
        );
        assert_eq!(t.state, State::Pending);
        assert_eq!(t.approve("carol", &dba(), Scope::Once, 112), Ok(true));
        assert_eq!(t.state, State::Approved);
        assert_eq!(t.approvals.len(), 2);
    }

    #[test]
    fn timeouts_expire_after_the_last_stage_and_closed_tickets_stay_closed() {
        let mut t = ticket(1, None);
        assert_eq!(t.time_out(160), State::Expired);
        assert!(!t.abandon(161));
        assert!(matches!(
            t.approve("alice", &dba(), Scope::Once, 162),
            Err(Refused::Closed { .. })
        ));
        let mut t = ticket(1, None);
        t.deny("alice", &dba(), "not during business hours", 120)
            .unwrap();
        assert_eq!(t.time_out(160), State::Denied);
        assert_eq!(t.reason.as_deref(), Some("not during business hours"));
    }
}
