//! Sessions from the audit trail: the list, and one session as a transcript of its
//! statements, each with its decision, the approvals it waited for and how it ended. Pure:
//! records in, text out.

use std::collections::BTreeMap;

use super::export::time;
use super::record::{Event, Outcome, Record};

/// A session's key: listener and Airlock's session id, written `listener:id`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionKey {
    pub listener: String,
    pub session: i64,
}

impl SessionKey {
    pub fn parse(text: &str) -> Option<SessionKey> {
        let (listener, id) = text.split_once(':')?;
        Some(SessionKey {
            listener: listener.to_owned(),
            session: id.parse().ok()?,
        })
    }
}

impl std::fmt::Display for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.listener, self.session)
    }
}

/// One statement of a transcript.
#[derive(Debug, Clone)]
pub struct Step {
    /// When it was received, in microseconds since the Unix epoch.
    pub at: i64,
    /// The statement and how it ended.
    pub statement: Event,
    /// Ticket events for this statement, with their times.
    pub tickets: Vec<(i64, Event)>,
}

/// A session as the trail has it.
#[derive(Debug, Clone, Default)]
pub struct Session {
    pub connect: Option<(i64, Event)>,
    pub disconnect: Option<(i64, Event)>,
    pub steps: Vec<Step>,
}

/// Groups `records` into sessions.
pub fn sessions(records: impl IntoIterator<Item = Record>) -> BTreeMap<SessionKey, Session> {
    let mut out: BTreeMap<SessionKey, Session> = BTreeMap::new();
    let mut tickets: BTreeMap<SessionKey, Vec<(i64, Event)>> = BTreeMap::new();
    for r in records {
        let Ok(event) = serde_json::from_str::<Event>(&r.event) else {
            continue;
        };
        let key = match &event {
            Event::Connect {
                listener, session, ..
            }
            | Event::Disconnect {
                listener, session, ..
            }
            | Event::Statement {
                listener, session, ..
            }
            | Event::Ticket {
                listener, session, ..
            } => SessionKey {
                listener: listener.clone(),
                session: *session,
            },
            Event::Policy { .. } | Event::AuthFailed { .. } => continue,
        };
        if let Event::Ticket { .. } = event {
            tickets.entry(key).or_default().push((r.at, event));
            continue;
        }
        let s = out.entry(key).or_default();
        match event {
            Event::Connect { .. } => s.connect = Some((r.at, event)),
            Event::Disconnect { .. } => s.disconnect = Some((r.at, event)),
            Event::Statement { received, .. } => s.steps.push(Step {
                at: if received > 0 { received } else { r.at },
                statement: event,
                tickets: Vec::new(),
            }),
            _ => {}
        }
    }
    // A statement is recorded when it ends (after its ticket's events): in the order they
    // were received, then with their tickets.
    for s in out.values_mut() {
        s.steps.sort_by_key(step_seq);
    }
    for (key, events) in tickets {
        attach_tickets(&mut out.entry(key).or_default().steps, events);
    }
    out
}

/// Gives each ticket event to the statement it held: the session's latest statement held
/// for review with the same text, received before the ticket was opened.
fn attach_tickets(steps: &mut [Step], events: Vec<(i64, Event)>) {
    let mut held: std::collections::HashMap<i64, usize> = std::collections::HashMap::new();
    for (at, event) in events {
        let Event::Ticket {
            ticket,
            sha256: ref hash,
            ..
        } = event
        else {
            continue;
        };
        let step = match held.get(&ticket) {
            Some(&i) => Some(i),
            None => steps.iter().rposition(|st| {
                st.at <= at
                    && matches!(&st.statement, Event::Statement { sha256, decision, .. }
                        if sha256 == hash && decision == "review")
            }),
        };
        if let Some(i) = step {
            held.insert(ticket, i);
            steps[i].tickets.push((at, event));
        }
    }
}

fn step_seq(step: &Step) -> u64 {
    match step.statement {
        Event::Statement { seq, .. } => seq,
        _ => 0,
    }
}

/// One line per session: key, user, client, start, duration, statements, refusals.
pub fn list(sessions: &BTreeMap<SessionKey, Session>) -> String {
    let mut out = format!(
        "{:<22} {:<12} {:<22} {:<28} {:>9} {:>10} {:>8}\n",
        "SESSION", "USER", "CLIENT", "STARTED", "SECONDS", "STATEMENTS", "REFUSED"
    );
    let mut rows: Vec<(&SessionKey, &Session)> = sessions.iter().collect();
    rows.sort_by_key(|(_, s)| s.connect.as_ref().map_or(i64::MAX, |c| c.0));
    for (key, s) in rows {
        let (user, client, started) = match &s.connect {
            Some((
                at,
                Event::Connect {
                    user, client_addr, ..
                },
            )) => (user.as_str(), client_addr.as_str(), time(*at)),
            _ => ("?", "?", "?".to_owned()),
        };
        let seconds = match &s.disconnect {
            Some((_, Event::Disconnect { duration_ms, .. })) => {
                format!("{:.1}", *duration_ms as f64 / 1000.0)
            }
            _ => "open".to_owned(),
        };
        let refused = s
            .steps
            .iter()
            .filter(|st| matches!(&st.statement, Event::Statement { decision, .. } if decision != "allow"))
            .count();
        out.push_str(&format!(
            "{:<22} {:<12} {:<22} {:<28} {:>9} {:>10} {:>8}\n",
            key.to_string(),
            user,
            client,
            started,
            seconds,
            s.steps.len(),
            refused
        ));
    }
    out
}

/// A session as a transcript: who, from where, then each statement with its time into the
/// session, decision and rule, findings, text, parameters, approvals (and whether the
/// approved statement is the one that ran) and outcome.
pub fn transcript(key: &SessionKey, s: &Session) -> String {
    let (header, steps, footer) = transcript_parts(key, s);
    let mut out = header;
    for (_, text) in steps {
        out.push_str(&text);
    }
    out.push_str(&footer);
    out
}

/// The transcript in pieces, for replay: the header, each statement with its time into
/// the session (microseconds), and the footer.
pub fn transcript_parts(key: &SessionKey, s: &Session) -> (String, Vec<(i64, String)>, String) {
    let start = s
        .connect
        .as_ref()
        .map(|c| c.0)
        .or(s.steps.first().map(|st| st.at))
        .unwrap_or(0);
    let mut header = format!("session {key}\n");
    if let Some((
        at,
        Event::Connect {
            user,
            groups,
            client_addr,
            tls,
            database,
            application,
            masking_exempt,
            ..
        },
    )) = &s.connect
    {
        header.push_str(&format!(
            "  user {user} (groups: {}) from {client_addr}, TLS {}, database {database}, application {}\n  connected {}{}\n",
            if groups.is_empty() { "none".to_owned() } else { groups.join(", ") },
            if *tls { "yes" } else { "no" },
            application.as_deref().unwrap_or("-"),
            time(*at),
            if *masking_exempt { "; exempt from masking (sees values unmasked)" } else { "" },
        ));
    }
    let mut steps = Vec::new();
    for step in &s.steps {
        let mut out = String::new();
        let Event::Statement {
            seq,
            text,
            params,
            kind,
            findings,
            rule,
            decision,
            sha256,
            outcome,
            ..
        } = &step.statement
        else {
            continue;
        };
        out.push_str(&format!(
            "\n+{:>9.3}s  #{seq}  {decision} by rule {}  [{kind}{}]\n",
            (step.at - start) as f64 / 1e6,
            rule.as_deref().unwrap_or("-"),
            if findings.is_empty() {
                String::new()
            } else {
                format!(": {}", findings.join(", "))
            },
        ));
        for line in text.lines() {
            out.push_str(&format!("    {line}\n"));
        }
        if !params.is_empty() {
            let shown: Vec<String> = params
                .iter()
                .map(|p| p.as_deref().map_or("NULL".to_owned(), |v| format!("'{v}'")))
                .collect();
            out.push_str(&format!("    parameters: {}\n", shown.join(", ")));
        }
        for (at, t) in &step.tickets {
            if let Event::Ticket {
                ticket,
                event,
                actor,
                detail,
                sha256: held,
                ..
            } = t
            {
                out.push_str(&format!(
                    "    ticket {ticket} {event}{}{} (+{:.3}s)\n",
                    actor
                        .as_deref()
                        .map_or(String::new(), |a| format!(" by {a}")),
                    detail
                        .as_deref()
                        .map_or(String::new(), |d| format!(": {d}")),
                    (at - start) as f64 / 1e6
                ));
                if event == "approved" {
                    let same = held == sha256;
                    out.push_str(&format!(
                        "    approved sha256 {} {} sent sha256 {}\n",
                        short(held),
                        if same { "==" } else { "!=" },
                        short(sha256)
                    ));
                }
            }
        }
        match outcome {
            Some(Outcome {
                duration_us,
                ran,
                rows,
                error,
                sample,
            }) => {
                let what = match (ran, rows, error) {
                    (false, _, Some(e)) => format!("not run: {e}"),
                    (false, _, None) => "not run".to_owned(),
                    (true, _, Some(e)) => format!("failed: {e}"),
                    (true, Some(n), None) => format!("ran: {n} rows"),
                    (true, None, None) => "ran".to_owned(),
                };
                out.push_str(&format!(
                    "    -> {what} ({:.1} ms)\n",
                    *duration_us as f64 / 1000.0
                ));
                for row in sample {
                    let cells: Vec<&str> =
                        row.iter().map(|v| v.as_deref().unwrap_or("NULL")).collect();
                    out.push_str(&format!("       | {} |\n", cells.join(" | ")));
                }
            }
            None => out.push_str("    -> no answer recorded: Airlock stopped first\n"),
        }
        steps.push((step.at - start, out));
    }
    let mut footer = String::new();
    if let Some((at, Event::Disconnect { duration_ms, .. })) = &s.disconnect {
        footer.push_str(&format!(
            "\ndisconnected {} after {:.1} s\n",
            time(*at),
            *duration_ms as f64 / 1000.0
        ));
    }
    (header, steps, footer)
}

fn short(hash: &str) -> &str {
    hash.get(..16).unwrap_or(hash)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::Head;

    fn statement(seq: u64, received: i64, ran: bool) -> Event {
        Event::Statement {
            listener: "postgres".into(),
            session: 1,
            seq,
            user: "app".into(),
            text: "drop table t".into(),
            params: vec![],
            fingerprint: "drop table t".into(),
            kind: "ddl".into(),
            findings: vec!["drop".into()],
            rule: Some("hold-drops".into()),
            decision: "review".into(),
            sha256: "aa".repeat(32),
            received,
            outcome: Some(Outcome {
                duration_us: 5,
                ran,
                rows: None,
                error: (!ran).then(|| "refused by Airlock".into()),
                sample: vec![],
            }),
        }
    }

    fn ticket(ticket: i64, event: &str) -> Event {
        Event::Ticket {
            listener: "postgres".into(),
            session: 1,
            ticket,
            event: event.into(),
            actor: Some("dba".into()),
            detail: None,
            rule: "hold-drops".into(),
            sha256: "aa".repeat(32),
        }
    }

    /// A held statement is recorded after its ticket's events; the same text held twice in a
    /// session gets each ticket with its own statement.
    #[test]
    fn tickets_go_with_the_statement_they_held() {
        let events = [
            (20, ticket(1, "created")),
            (30, ticket(1, "approved")),
            (40, statement(1, 10, true)),
            (60, ticket(2, "created")),
            (70, ticket(2, "denied")),
            (80, statement(2, 50, false)),
        ];
        let mut head = Head::EMPTY;
        let records = events.into_iter().map(|(at, e)| {
            let r = head.next(at, serde_json::to_string(&e).unwrap());
            head = r.head();
            r
        });
        let all = sessions(records.collect::<Vec<_>>());
        let key = SessionKey::parse("postgres:1").unwrap();
        let s = &all[&key];
        let of = |i: usize| -> Vec<(i64, String)> {
            s.steps[i]
                .tickets
                .iter()
                .map(|(_, t)| match t {
                    Event::Ticket { ticket, event, .. } => (*ticket, event.clone()),
                    _ => unreachable!(),
                })
                .collect()
        };
        assert_eq!(of(0), [(1, "created".into()), (1, "approved".into())]);
        assert_eq!(of(1), [(2, "created".into()), (2, "denied".into())]);
        let text = transcript(&key, s);
        assert!(
            text.contains("approved sha256 aaaaaaaaaaaaaaaa == sent"),
            "{text}"
        );
        assert!(text.contains("-> not run: refused by Airlock"), "{text}");
    }
}
