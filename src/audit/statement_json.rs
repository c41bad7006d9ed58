//! A statement's event as JSON, written by hand. Every statement a session sends costs it
//! one of these and its outcome, so what does not change between statements is rendered
//! once: a session's part (listener, session, user) when it starts, a classification's
//! (fingerprint, kind, findings) when the session first meets it. Each statement then adds
//! its own fields to them, escaping only what needs it. The text is exactly what serde_json
//! writes for [`super::Event::Statement`] with no outcome, and for its [`Outcome`] (tested
//! below): that text is what is stored and hashed. Pure.

use super::record::Outcome;

/// A session's part of its statements' events.
#[derive(Debug, Clone)]
pub struct SessionJson {
    /// `{"type":"statement","listener":…,"session":…,"seq":`
    head: String,
    /// `,"user":…,"text":`
    user: String,
}

/// What a statement adds to its session's and its classification's parts.
#[derive(Debug, Clone, Copy)]
pub struct Statement<'a> {
    pub seq: u64,
    /// Masked.
    pub text: &'a str,
    /// Masked.
    pub params: &'a [Option<String>],
    pub rule: Option<&'a str>,
    pub decision: &'a str,
    /// SHA-256 of the exact bytes the client sent.
    pub sha256: &'a [u8],
    pub received: i64,
}

impl SessionJson {
    pub fn new(listener: &str, session: i64, user: &str) -> SessionJson {
        let mut head = String::from("{\"type\":\"statement\",\"listener\":");
        string(&mut head, listener);
        head.push_str(",\"session\":");
        head.push_str(itoa::Buffer::new().format(session));
        head.push_str(",\"seq\":");
        let mut user_part = String::from(",\"user\":");
        string(&mut user_part, user);
        user_part.push_str(",\"text\":");
        SessionJson {
            head,
            user: user_part,
        }
    }

    /// The statement's event, with `classification` from [`classification`] and no outcome.
    pub fn statement(&self, s: &Statement, classification: &str) -> String {
        // Room for the outcome that `with_outcome` puts in place of `null`.
        let mut out = String::with_capacity(
            self.head.len() + self.user.len() + classification.len() + s.text.len() + 320,
        );
        out.push_str(&self.head);
        out.push_str(itoa::Buffer::new().format(s.seq));
        out.push_str(&self.user);
        string(&mut out, s.text);
        out.push_str(",\"params\":");
        array(&mut out, s.params.iter().map(Option::as_deref));
        out.push_str(classification);
        out.push_str(",\"rule\":");
        optional(&mut out, s.rule);
        out.push_str(",\"decision\":");
        string(&mut out, s.decision);
        out.push_str(",\"sha256\":\"");
        crate::hex::encode_into(s.sha256, &mut out);
        out.push_str("\",\"received\":");
        out.push_str(itoa::Buffer::new().format(s.received));
        out.push_str(",\"outcome\":null}");
        out
    }
}

/// A classification's part of its statements' events (fingerprint masked).
pub fn classification(fingerprint: &str, kind: &str, findings: &[String]) -> String {
    let mut out = String::from(",\"fingerprint\":");
    string(&mut out, fingerprint);
    out.push_str(",\"kind\":");
    string(&mut out, kind);
    out.push_str(",\"findings\":");
    array(&mut out, findings.iter().map(|f| Some(f.as_str())));
    out
}

/// `outcome` as JSON, appended to `out`.
pub fn outcome(outcome: &Outcome, out: &mut String) {
    out.push_str("{\"duration_us\":");
    out.push_str(itoa::Buffer::new().format(outcome.duration_us));
    out.push_str(match outcome.ran {
        true => ",\"ran\":true,\"rows\":",
        false => ",\"ran\":false,\"rows\":",
    });
    match outcome.rows {
        Some(rows) => out.push_str(itoa::Buffer::new().format(rows)),
        None => out.push_str("null"),
    }
    out.push_str(",\"error\":");
    optional(out, outcome.error.as_deref());
    if !outcome.sample.is_empty() {
        out.push_str(",\"sample\":");
        out.push_str(&serde_json::to_string(&outcome.sample).expect("samples serialize"));
    }
    out.push('}');
}

/// `items` as a JSON array of strings and nulls.
fn array<'a>(out: &mut String, items: impl Iterator<Item = Option<&'a str>>) {
    out.push('[');
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push(',');
        }
        optional(out, item);
    }
    out.push(']');
}

/// `s` as a JSON string, or null.
fn optional(out: &mut String, s: Option<&str>) {
    match s {
        Some(s) => string(out, s),
        None => out.push_str("null"),
    }
}

/// `s` as a JSON string. Copied as it is when nothing in it needs escaping (the usual
/// statement: no quote, backslash or control character), else escaped as serde_json does.
fn string(out: &mut String, s: &str) {
    // Not short-circuiting, so that the check runs over whole vectors of bytes.
    let plain = s.bytes().fold(true, |plain, b| {
        plain & (b >= 0x20) & (b != b'"') & (b != b'\\')
    });
    if plain {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        out.push_str(&serde_json::to_string(s).expect("strings serialize"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Event;

    /// Texts that are plain, that need each kind of escape, and that are not ASCII.
    const TEXTS: &[&str] = &[
        "",
        "select 1",
        "select \"quoted\" from t where a = 'it''s'",
        "select 1 -- back\\slash",
        "select\n\t1\r",
        "select '\u{0}\u{1}\u{1f}\u{7f}'",
        "select 'ünïcødé ✓ 🦀'",
        "\\",
        "\"",
        "\u{2028}\u{2029}</script>",
    ];

    fn serde(
        listener: &str,
        user: &str,
        s: &Statement,
        fingerprint: &str,
        kind: &str,
        findings: &[String],
    ) -> String {
        serde_json::to_string(&Event::Statement {
            listener: listener.into(),
            session: -3,
            seq: s.seq,
            user: user.into(),
            text: s.text.into(),
            params: s.params.to_vec(),
            fingerprint: fingerprint.into(),
            kind: kind.into(),
            findings: findings.to_vec(),
            rule: s.rule.map(Into::into),
            decision: s.decision.into(),
            sha256: crate::hex::encode(s.sha256),
            received: s.received,
            outcome: None,
        })
        .unwrap()
    }

    /// Every field, with every kind of text in turn, is written exactly as serde_json
    /// writes the owned event.
    #[test]
    fn a_statement_is_written_as_serde_json_writes_its_event() {
        let digest = [0xab_u8; 32];
        let mut checked = 0;
        for (i, &text) in TEXTS.iter().enumerate() {
            let other = TEXTS[(i + 1) % TEXTS.len()];
            let params = [Some(text.to_owned()), None, Some(other.to_owned())];
            let findings = [text.to_owned(), "no_where".to_owned()];
            for (params, findings, rule) in [
                (&params[..], &findings[..], Some(other)),
                (&[][..], &[][..], None),
            ] {
                let s = Statement {
                    seq: u64::MAX - i as u64,
                    text,
                    params,
                    rule,
                    decision: "review",
                    sha256: &digest,
                    received: i64::MIN + i as i64,
                };
                let session = SessionJson::new(other, -3, text);
                let written = session.statement(&s, &classification(other, text, findings));
                assert_eq!(written, serde(other, text, &s, other, text, findings));
                checked += 1;
            }
        }
        assert_eq!(checked, 2 * TEXTS.len());
    }

    /// Outcomes of each shape are written exactly as serde_json writes them.
    #[test]
    fn an_outcome_is_written_as_serde_json_writes_it() {
        for (i, &text) in TEXTS.iter().enumerate() {
            let outcomes = [
                Outcome {
                    duration_us: u64::MAX - i as u64,
                    ran: true,
                    rows: Some(i as u64),
                    error: None,
                    sample: Vec::new(),
                },
                Outcome {
                    duration_us: 0,
                    ran: false,
                    rows: None,
                    error: Some(text.to_owned()),
                    sample: vec![vec![Some(text.to_owned()), None], vec![]],
                },
            ];
            for o in &outcomes {
                let mut written = String::new();
                outcome(o, &mut written);
                assert_eq!(written, serde_json::to_string(o).unwrap());
            }
        }
    }

    /// The event has room for its outcome, which is filled in without moving it.
    #[test]
    fn the_outcome_fits_in_place() {
        let session = SessionJson::new("postgres", 1, "app");
        let s = Statement {
            seq: 1,
            text: "select abalance from pgbench_accounts where aid = 1",
            params: &[],
            rule: Some("default"),
            decision: "allow",
            sha256: &[0; 32],
            received: 1_700_000_000_000_000,
        };
        let begun = session.statement(&s, &classification("select", "read", &[]));
        let at = begun.as_ptr();
        let outcome = Outcome {
            duration_us: 123_456,
            ran: true,
            rows: Some(1),
            error: None,
            sample: Vec::new(),
        };
        let done = crate::audit::record::with_outcome(begun, &outcome);
        assert!(
            done.ends_with(r#""outcome":{"duration_us":123456,"ran":true,"rows":1,"error":null}}"#)
        );
        assert_eq!(done.as_ptr(), at);
    }
}
