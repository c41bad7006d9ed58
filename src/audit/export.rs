//! Audit records in the formats compliance tools read: JSON Lines (the record and its event
//! as stored), CSV with pgaudit-style columns, and OCSF Datastore Activity (class 6005) for
//! SIEMs. Pure: records in, lines out.

use serde_json::{Value, json};

use super::record::{Event, Record, hex};
use crate::admin::client::utc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Jsonl,
    Csv,
    Ocsf,
}

/// The CSV header line.
pub const CSV_HEADER: &str = "seq,time,type,listener,session,statement_seq,user,database,client_addr,kind,decision,rule,findings,statement,params,sha256,ran,rows,error,duration_us,hash\n";

/// `r` as one line (with its newline) in `format`.
pub fn line(format: Format, r: &Record) -> String {
    let event: Value = serde_json::from_str(&r.event).unwrap_or(Value::Null);
    match format {
        Format::Jsonl => {
            let v = json!({
                "seq": r.seq,
                "time": time(r.at),
                "at_us": r.at,
                "event": event,
                "prev": hex(&r.prev),
                "hash": hex(&r.hash),
            });
            format!("{v}\n")
        }
        Format::Csv => csv(r, &event),
        Format::Ocsf => format!("{}\n", ocsf(r)),
    }
}

/// RFC 3339 time, to the microsecond.
pub fn time(at_us: i64) -> String {
    let secs = at_us.div_euclid(1_000_000);
    let micros = at_us.rem_euclid(1_000_000);
    let day_time = utc(secs);
    // utc() gives "YYYY-MM-DD HH:MM:SSZ".
    format!("{}T{}.{micros:06}Z", &day_time[..10], &day_time[11..19])
}

fn csv(r: &Record, e: &Value) -> String {
    let cell = |v: &Value| match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let s = |k: &str| cell(&e[k]);
    let outcome = |k: &str| cell(&e["outcome"][k]);
    let list = |k: &str| match &e[k] {
        // A NULL parameter shows as null, apart from an empty string.
        Value::Array(items) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(";"),
        _ => String::new(),
    };
    let statement_seq = if e["type"] == "statement" {
        s("seq")
    } else {
        String::new()
    };
    let fields = [
        r.seq.to_string(),
        time(r.at),
        s("type"),
        s("listener"),
        s("session"),
        statement_seq,
        s("user"),
        s("database"),
        s("client_addr"),
        s("kind"),
        s("decision"),
        s("rule"),
        list("findings"),
        s("text"),
        list("params"),
        s("sha256"),
        outcome("ran"),
        outcome("rows"),
        outcome("error"),
        outcome("duration_us"),
        hex(&r.hash),
    ];
    let quoted: Vec<String> = fields.iter().map(|f| quote(f)).collect();
    format!("{}\n", quoted.join(","))
}

fn quote(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_owned()
    }
}

/// OCSF 1.1 Datastore Activity (class_uid 6005).
fn ocsf(r: &Record) -> Value {
    const CLASS: u32 = 6005;
    let event: Option<Event> = serde_json::from_str(&r.event).ok();
    let (activity_id, activity, status_id, extra) = match &event {
        Some(Event::Connect {
            user,
            client_addr,
            database,
            tls,
            ..
        }) => (
            3,
            "Connect",
            1,
            json!({
                "actor": {"user": {"name": user}},
                "src_endpoint": endpoint(client_addr),
                "database": {"name": database},
                "tls": tls,
            }),
        ),
        Some(Event::Disconnect { .. }) => (99, "Disconnect", 1, json!({})),
        Some(Event::AuthFailed {
            user,
            client_addr,
            reason,
            ..
        }) => (
            3,
            "Connect",
            2,
            json!({
                "actor": {"user": {"name": user}},
                "src_endpoint": endpoint(client_addr),
                "status_detail": reason,
            }),
        ),
        Some(Event::Policy { source, rules, .. }) => (
            99,
            "Policy loaded",
            1,
            json!({"status_detail": format!("{rules} rules from {source}")}),
        ),
        Some(Event::Ticket {
            ticket,
            event,
            actor,
            ..
        }) => (
            99,
            "Approval",
            1,
            json!({
                "status_detail": format!("ticket {ticket} {event}"),
                "actor": {"user": {"name": actor}},
            }),
        ),
        Some(Event::Statement {
            user,
            text,
            kind,
            decision,
            rule,
            findings,
            outcome,
            ..
        }) => {
            let activity_id = match kind.as_str() {
                "read" => 1,
                "write" => 5,
                "ddl" => 6,
                _ => 4,
            };
            // Failure: refused, or the database's error.
            let failed = decision == "deny" || outcome.as_ref().is_some_and(|o| o.error.is_some());
            let ended = match outcome {
                Some(o) => o.error.clone().unwrap_or_else(|| "completed".into()),
                None => "no answer recorded".into(),
            };
            (
                activity_id,
                "Query",
                if failed { 2 } else { 1 },
                json!({
                    "actor": {"user": {"name": user}},
                    "query_info": {"query_string": text},
                    "status_detail": format!("{decision} by rule {}: {ended}", rule.as_deref().unwrap_or("default")),
                    "unmapped": {
                        "kind": kind, "findings": findings, "decision": decision,
                        "ran": outcome.as_ref().map(|o| o.ran),
                        "rows": outcome.as_ref().and_then(|o| o.rows),
                    },
                }),
            )
        }
        None => (0, "Unknown", 0, json!({})),
    };
    let mut v = json!({
        "class_uid": CLASS,
        "class_name": "Datastore Activity",
        "category_uid": 6,
        "category_name": "Application Activity",
        "activity_id": activity_id,
        "activity_name": activity,
        "type_uid": CLASS * 100 + activity_id,
        "time": r.at.div_euclid(1000),
        "severity_id": 1,
        "status_id": status_id,
        "metadata": {
            "version": "1.1.0",
            "uid": r.seq.to_string(),
            "product": {"name": "Airlock", "vendor_name": "Airlock"},
        },
        "raw_data": r.event,
    });
    if let (Value::Object(base), Value::Object(more)) = (&mut v, extra) {
        base.extend(more);
    }
    v
}

fn endpoint(addr: &str) -> Value {
    match addr.parse::<std::net::SocketAddr>() {
        Ok(a) => json!({"ip": a.ip().to_string(), "port": a.port()}),
        Err(_) => json!({"ip": addr}),
    }
}

/// A time given on the command line: Unix seconds, `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM:SSZ`;
/// microseconds since the epoch.
pub fn parse_time(text: &str) -> Option<i64> {
    if let Ok(secs) = text.parse::<i64>() {
        return Some(secs * 1_000_000);
    }
    let (date, clock) = match text.split_once(['T', ' ']) {
        Some((d, c)) => (d, c.trim_end_matches('Z')),
        None => (text, "00:00:00"),
    };
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut c = clock.split(':').map(|p| p.parse::<i64>().ok());
    let (h, min, s) = (
        c.next()??,
        c.next().unwrap_or(Some(0))?,
        c.next().unwrap_or(Some(0))?,
    );
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || h > 23 || min > 59 || s > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + h * 3600 + min * 60 + s) * 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::Head;

    #[test]
    fn times_round_trip() {
        let at = parse_time("2026-11-25T10:20:30Z").unwrap();
        assert_eq!(time(at + 7), "2026-11-25T10:20:30.000007Z");
        assert_eq!(parse_time("2026-11-25"), parse_time("2026-11-25T00:00:00Z"));
        assert_eq!(parse_time("0"), Some(0));
        assert_eq!(parse_time("yesterday"), None);
    }

    #[test]
    fn each_format_carries_the_statement() {
        let event = Event::Statement {
            listener: "postgres".into(),
            session: 7,
            seq: 1,
            user: "app".into(),
            text: "select 1, 'a,\"b'".into(),
            params: vec![Some("x".into()), None],
            fingerprint: "select ?, ?".into(),
            kind: "read".into(),
            findings: vec![],
            rule: Some("reads".into()),
            decision: "allow".into(),
            sha256: "00".into(),
            received: 999_000,
            outcome: Some(crate::audit::record::Outcome {
                duration_us: 1000,
                ran: true,
                rows: Some(1),
                error: None,
                sample: vec![],
            }),
        };
        let r = Head::EMPTY.next(1_000_000, serde_json::to_string(&event).unwrap());
        let j: Value = serde_json::from_str(&line(Format::Jsonl, &r)).unwrap();
        assert_eq!(j["event"]["text"], "select 1, 'a,\"b'");
        let c = line(Format::Csv, &r);
        assert!(c.contains("\"select 1, 'a,\"\"b'\""), "{c}");
        assert!(
            c.trim_end()
                .ends_with(&format!(",true,1,,1000,{}", hex(&r.hash))),
            "{c}"
        );
        assert_eq!(CSV_HEADER.matches(',').count(), 20);
        let o: Value = serde_json::from_str(&line(Format::Ocsf, &r)).unwrap();
        assert_eq!(o["class_uid"], 6005);
        assert_eq!(o["type_uid"], 600501);
        assert_eq!(o["query_info"]["query_string"], "select 1, 'a,\"b'");
        assert_eq!(o["status_id"], 1);
        assert_eq!(o["unmapped"]["rows"], 1);
    }
}
