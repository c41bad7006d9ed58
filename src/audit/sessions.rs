//! Sessions from the audit trail: the list, and one session as a transcript of its
//! statements, each with its decision, the approvals it waited for and how it ended. Pure:
//! records in, text out.

use std::collections::BTreeMap;

use super::export::time;
use super::record::{Event, Record};

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
    /// Microseconds since the Unix epoch.
    pub at: i64,
    pub statement: Event,
    pub outcome: Option<Event>,
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
            | Event::Outcome {
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
        let s = out.entry(key).or_default();
        match event {
            Event::Connect { .. } => s.connect = Some((r.at, event)),
            Event::Disconnect { .. } => s.disconnect = Some((r.at, event)),
            Event::Statement { .. } => s.steps.push(Step {
                at: r.at,
                statement: event,
                outcome: None,
                tickets: Vec::new(),
            }),
            Event::Outcome { seq, .. } => {
                if let Some(step) = s.steps.iter_mut().rev().find(|st| step_seq(st) == seq) {
                    step.outcome = Some(event);
                }
            }
            Event::Ticket { ref sha256, .. } => {
                // The latest statement of the session with the held text.
                let hash = sha256.clone();
                if let Some(step) = s.steps.iter_mut().rev().find(|st| {
                    matches!(&st.statement, Event::Statement { sha256, decision, .. }
                        if *sha256 == hash && decision == "review")
                }) {
                    step.tickets.push((r.at, event));
                }
            }
            Event::Policy { .. } | Event::AuthFailed { .. } => {}
        }
    }
    out
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
        match &step.outcome {
            Some(Event::Outcome {
                duration_us,
                ran,
                rows,
                error,
                sample,
                ..
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
            _ => out.push_str("    -> no outcome recorded\n"),
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
