//! A session's audit records, as its guard sees it: the connect, each statement with what
//! the policy decided (text and parameters masked), and the disconnect when the guard is
//! dropped. With `required` audit the records of statements wait in `pending` until the relay
//! has seen them durable.

use std::sync::Arc;
use std::time::Instant;

use super::{Guard, Judged, Who};
use crate::audit::record::sha256_hex;
use crate::audit::{Ack, AuditLog, Event, Mode};
use crate::inspect::SessionInfo;

pub struct SessionAudit {
    log: Arc<AuditLog>,
    guard: Arc<Guard>,
    session: i64,
    user: String,
    statements: u64,
    started: Instant,
    pending: Vec<Ack>,
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
            groups: who.groups.clone(),
            client_addr: who.client_addr.clone(),
            tls: info.tls,
            database: who.database.clone(),
            application: info.application_name.clone(),
            masking_exempt: !masked && guard.masking_exempts(who),
        });
        Some(SessionAudit {
            log,
            guard: guard.clone(),
            session: who.session,
            user: who.user.clone(),
            statements: 0,
            started: Instant::now(),
            pending: Vec::new(),
        })
    }

    /// Records a statement and the decision: `sent` is its text exactly as the client sent
    /// it (a classification from the cache may hold another statement of the same shape).
    pub fn statement(&mut self, judged: &Judged, sent: &[u8], params: Vec<Option<String>>) {
        self.statements += 1;
        let fingerprints: Vec<&str> = judged
            .statements
            .iter()
            .map(|s| s.fingerprint.as_str())
            .collect();
        let mut kinds: Vec<&str> = judged.statements.iter().map(|s| s.kind.as_str()).collect();
        kinds.dedup();
        let event = Event::Statement {
            listener: self.guard.listener.clone(),
            session: self.session,
            seq: self.statements,
            user: self.user.clone(),
            text: self.guard.redact(String::from_utf8_lossy(sent).trim()),
            params,
            fingerprint: self.guard.redact(&fingerprints.join(";\n")),
            kind: kinds.join(","),
            findings: judged
                .statements
                .iter()
                .flat_map(|s| s.findings.iter().map(|f| f.code.to_owned()))
                .collect(),
            rule: judged.rule.map(|r| self.guard.rule_name(r).to_owned()),
            decision: judged.decision().to_owned(),
            sha256: sha256_hex(sent),
        };
        match self.log.mode {
            Mode::Required => self.pending.push(self.log.append(&event)),
            Mode::BestEffort => self.log.record(&event),
        }
    }

    /// The records the relay must see durable before it forwards what it was shown.
    pub fn take_pending(&mut self) -> Vec<Ack> {
        std::mem::take(&mut self.pending)
    }
}

impl Drop for SessionAudit {
    fn drop(&mut self) {
        self.log.record(&Event::Disconnect {
            listener: self.guard.listener.clone(),
            session: self.session,
            duration_ms: self.started.elapsed().as_millis() as u64,
            statements: self.statements,
        });
    }
}
