//! Audit records and their hash chain. Pure: events in, chained records out, and the check
//! that a sequence of stored records is the chain it claims to be.
//!
//! A record's hash is SHA-256 over the previous record's hash, its sequence number, its time
//! and its event exactly as stored (JSON text). Editing an event, removing or reordering a
//! record, or forging one breaks the chain at that record; cutting the tail or rewriting the
//! whole chain is caught by a signed checkpoint of an earlier head (see
//! [`super::checkpoint`]).

use serde::{Deserialize, Serialize};

/// The hash before the first record.
pub const GENESIS: [u8; 32] = [0; 32];

/// What happened. Statement text and parameters are masked before they get here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A client logged in to Airlock.
    Connect {
        listener: String,
        session: i64,
        user: String,
        groups: Vec<String>,
        client_addr: String,
        tls: bool,
        database: String,
        application: Option<String>,
        /// The session sees result values unmasked (a member of an exempt group).
        masking_exempt: bool,
    },
    /// A client's login to Airlock failed.
    AuthFailed {
        listener: String,
        user: Option<String>,
        client_addr: String,
        reason: String,
    },
    /// A session ended.
    Disconnect {
        listener: String,
        session: i64,
        duration_ms: u64,
        statements: u64,
    },
    /// A statement (or a command with no SQL text), what Airlock decided, and how it ended.
    /// Recorded once its answer is known; until then a required trail holds it in the
    /// journal as an intent (see [`super::store`]).
    Statement {
        listener: String,
        session: i64,
        /// The statement's number within its session, from 1.
        seq: u64,
        user: String,
        text: String,
        params: Vec<Option<String>>,
        fingerprint: String,
        kind: String,
        findings: Vec<String>,
        rule: Option<String>,
        /// `allow`, `deny` or `review`.
        decision: String,
        /// SHA-256 (hex) of the exact bytes of the message the client sent.
        sha256: String,
        /// When Airlock received it, in microseconds since the Unix epoch (0 in trails
        /// written before it was recorded).
        #[serde(default)]
        received: i64,
        /// How it ended; `null` when Airlock stopped before its answer (a record recovered
        /// from the journal). Last, so that it can be filled in after the rest is written.
        outcome: Option<Outcome>,
    },
    /// A held statement's ticket changed: created, approval, approved, denied, escalated,
    /// expired, abandoned.
    Ticket {
        listener: String,
        session: i64,
        ticket: i64,
        event: String,
        actor: Option<String>,
        detail: Option<String>,
        rule: String,
        /// SHA-256 (hex) of the statement the ticket holds, as the client sent it.
        sha256: String,
    },
    /// Airlock started with a policy: where from, how many rules, and the SHA-256 of its
    /// files (name and text, in the order they are read).
    Policy {
        source: String,
        rules: usize,
        sha256: String,
    },
}

impl Event {
    /// The event's type, as stored in its own column.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Connect { .. } => "connect",
            Event::AuthFailed { .. } => "auth_failed",
            Event::Disconnect { .. } => "disconnect",
            Event::Statement { .. } => "statement",
            Event::Ticket { .. } => "ticket",
            Event::Policy { .. } => "policy",
        }
    }
}

/// How a recorded statement ended: run (rows returned or affected) or failed (the database's
/// SQLSTATE or errno, or Airlock's own refusal), or never run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// From the statement's arrival to its answer, in microseconds.
    pub duration_us: u64,
    /// Whether the database ran it.
    pub ran: bool,
    pub rows: Option<u64>,
    pub error: Option<String>,
    /// The first rows of its result, masked (`[audit] sample_rows` in the policy).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sample: Vec<Vec<Option<String>>>,
}

/// A record as stored: its place in the chain and its event as JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    /// Microseconds since the Unix epoch.
    pub at: i64,
    pub event: String,
    pub prev: [u8; 32],
    pub hash: [u8; 32],
}

impl Record {
    /// The head of a chain that ends with this record.
    pub fn head(&self) -> Head {
        Head {
            seq: self.seq,
            hash: self.hash,
        }
    }
}

/// The hash of a record with these fields.
pub fn hash(prev: &[u8; 32], seq: u64, at: i64, event: &str) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(prev);
    ctx.update(&seq.to_be_bytes());
    ctx.update(&at.to_be_bytes());
    ctx.update(event.as_bytes());
    ctx.finish()
        .as_ref()
        .try_into()
        .expect("SHA-256 is 32 bytes")
}

/// The head of a chain: the last record's number and hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub seq: u64,
    pub hash: [u8; 32],
}

impl Head {
    pub const EMPTY: Head = Head {
        seq: 0,
        hash: GENESIS,
    };

    /// The record that follows this head.
    pub fn next(&self, at: i64, event: String) -> Record {
        let seq = self.seq + 1;
        Record {
            seq,
            at,
            hash: hash(&self.hash, seq, at, &event),
            prev: self.hash,
            event,
        }
    }
}

/// Where and how a chain stops being what it claims.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Broken {
    #[error("record {seq}: its content does not match its hash (edited or forged)")]
    Edited { seq: u64 },
    #[error(
        "record {seq}: it does not follow record {expected_after} (a record before it was removed, or records were reordered)"
    )]
    Gap { seq: u64, expected_after: u64 },
    #[error(
        "record {seq}: its link to the previous record is wrong (records removed, reordered or forged)"
    )]
    Link { seq: u64 },
}

/// Walks records in order, from the chain's start or from a known head.
#[derive(Debug, Clone, Copy)]
pub struct Verifier {
    pub head: Head,
}

impl Verifier {
    pub fn new() -> Verifier {
        Verifier { head: Head::EMPTY }
    }

    /// Checks the next record.
    pub fn check(&mut self, r: &Record) -> Result<(), Broken> {
        if r.seq != self.head.seq + 1 {
            return Err(Broken::Gap {
                seq: r.seq,
                expected_after: self.head.seq,
            });
        }
        if r.prev != self.head.hash {
            return Err(Broken::Link { seq: r.seq });
        }
        if hash(&r.prev, r.seq, r.at, &r.event) != r.hash {
            return Err(Broken::Edited { seq: r.seq });
        }
        self.head = r.head();
        Ok(())
    }
}

impl Default for Verifier {
    fn default() -> Self {
        Verifier::new()
    }
}

pub use crate::hex::encode as hex;

/// Where the outcome goes in a statement event's JSON text written with no outcome (where
/// [`with_outcome`] puts it); `None` for any other text.
pub fn outcome_from(statement: &str) -> Option<usize> {
    statement.strip_suffix("null}").map(str::len)
}

/// A statement event's JSON text, written with no outcome, with `outcome` filled in: the
/// text as if written whole, in place (no copy of the rest, and no allocation when its
/// capacity holds the outcome).
pub fn with_outcome(statement: String, outcome: &Outcome) -> String {
    let from = outcome_from(&statement);
    let mut out = statement;
    if let Some(from) = from {
        out.truncate(from);
        super::statement_json::outcome(outcome, &mut out);
        out.push('}');
    } else {
        // Not the JSON of a statement event with no outcome (never so): keep it all.
        let mut whole: serde_json::Value =
            serde_json::from_str(&out).unwrap_or(serde_json::Value::Null);
        if let serde_json::Value::Object(fields) = &mut whole {
            fields.insert("outcome".into(), serde_json::json!(outcome));
        }
        out = serde_json::to_string(&whole).expect("values serialize");
    }
    out
}

/// As [`with_outcome`], with the outcome already JSON (as the journal holds it): `None` if
/// `statement` is not a statement event's text written with no outcome.
pub fn splice_outcome(statement: &str, outcome: &str) -> Option<String> {
    let rest = &statement[..outcome_from(statement)?];
    let mut out = String::with_capacity(rest.len() + outcome.len() + 1);
    out.push_str(rest);
    out.push_str(outcome);
    out.push('}');
    Some(out)
}

/// SHA-256 of `bytes`, in hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: u64) -> Vec<Record> {
        let mut head = Head::EMPTY;
        (0..n)
            .map(|i| {
                let r = head.next(1_000 + i as i64, format!("{{\"n\":{i}}}"));
                head = r.head();
                r
            })
            .collect()
    }

    fn verify(records: &[Record]) -> Result<Head, Broken> {
        let mut v = Verifier::new();
        for r in records {
            v.check(r)?;
        }
        Ok(v.head)
    }

    #[test]
    fn an_outcome_fills_in_a_statement_written_without_one() {
        let mut statement = Event::Statement {
            listener: "postgres".into(),
            session: 1,
            seq: 2,
            user: "app".into(),
            text: "select 'null}'".into(),
            params: vec![None],
            fingerprint: "select ?".into(),
            kind: "read".into(),
            findings: vec![],
            rule: None,
            decision: "allow".into(),
            sha256: "00".into(),
            received: 5,
            outcome: None,
        };
        let outcome = Outcome {
            duration_us: 7,
            ran: true,
            rows: Some(1),
            error: None,
            sample: vec![vec![Some("x".into()), None]],
        };
        let begun = serde_json::to_string(&statement).unwrap();
        if let Event::Statement { outcome: o, .. } = &mut statement {
            *o = Some(outcome.clone());
        }
        assert_eq!(
            with_outcome(begun.clone(), &outcome),
            serde_json::to_string(&statement).unwrap()
        );
        assert_eq!(
            serde_json::from_str::<Event>(&with_outcome(begun, &outcome)).unwrap(),
            statement
        );
    }

    #[test]
    fn a_chain_verifies_and_each_kind_of_tampering_is_named() {
        let good = chain(5);
        assert_eq!(verify(&good).unwrap().seq, 5);

        let mut edited = good.clone();
        edited[2].event = "{\"n\":99}".into();
        assert_eq!(verify(&edited), Err(Broken::Edited { seq: 3 }));

        let mut removed = good.clone();
        removed.remove(1);
        assert_eq!(
            verify(&removed),
            Err(Broken::Gap {
                seq: 3,
                expected_after: 1
            })
        );

        let mut swapped = good.clone();
        swapped.swap(1, 2);
        assert!(matches!(verify(&swapped), Err(Broken::Gap { seq: 3, .. })));

        // A forged record renumbered to fit still does not link.
        let mut forged = good.clone();
        forged[3] = Head::EMPTY.next(5, "{}".into());
        forged[3].seq = 4;
        assert_eq!(verify(&forged), Err(Broken::Link { seq: 4 }));
    }
}
