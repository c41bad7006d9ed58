//! The audit trail end to end: sessions and statements through both listeners are recorded
//! (masked, with the decision and the rule), the chain verifies with `airlock audit verify`,
//! tampering with the store is caught at the right record, and the exports parse with
//! Python's standard json and csv modules and carry the same records.

mod common;

use std::path::Path;
use std::process::Command;

use common::mysql_raw::{MyRaw, Reply};
use common::{Setup, unique};
use mysql_async::prelude::*;
use serde_json::Value;

const TOKEN: &str = "ghp_R8x2Lq9ZtV4mK7pW3nY6cH1jB5dF0sG2aE8u";

const POLICY: &str = r#"
[defaults]
action = "allow"

[[rule]]
name = "no-drops"
action = "deny"
findings = ["drop"]
message = "no drops here"

[audit]
sample_rows = 2
"#;

/// Airlock on both listeners with [`POLICY`] and an audit trail (`required`) in its own state
/// dir; `more` is appended to the config.
struct Audited {
    proxy: common::Proxy,
    state: tempfile::TempDir,
    _policy: tempfile::TempDir,
}

async fn audited(setup: Setup, more: &str) -> Audited {
    let policy = tempfile::tempdir().unwrap();
    std::fs::write(policy.path().join("p.toml"), POLICY).unwrap();
    let state = tempfile::tempdir().unwrap();
    let proxy = Setup {
        policy_dir: Some(policy.path().to_path_buf()),
        mysql: true,
        extra: format!(
            "\n[state]\ndir = {:?}\n{more}",
            state.path().display().to_string()
        ),
        ..setup
    }
    .start()
    .await;
    Audited {
        proxy,
        state,
        _policy: policy,
    }
}

fn airlock(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_airlock"))
        .args(args)
        .output()
        .unwrap()
}

fn export(state: &Path, format: &str) -> String {
    let out = airlock(&[
        "audit",
        "--state-dir",
        state.to_str().unwrap(),
        "export",
        "--format",
        format,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn verify(state: &Path) -> (bool, String) {
    let out = airlock(&["audit", "--state-dir", state.to_str().unwrap(), "verify"]);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// The events of the JSON Lines export.
fn events(state: &Path) -> Vec<Value> {
    export(state, "jsonl")
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["event"].clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_through_both_listeners_are_recorded_and_the_chain_verifies() {
    let Audited {
        proxy,
        state,
        _policy,
    } = audited(
        Setup::default(),
        &format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n\
             [[approvers]]\nname = \"dana\"\ngroups = [\"dba\"]\ntoken_sha256 = \"{}\"\n\
             [[auditors]]\nname = \"carol\"\ntoken_sha256 = \"{}\"\n",
            common::token_sha256("approver-token"),
            common::token_sha256("auditor-token"),
        ),
    )
    .await;

    // Failed logins, on both listeners.
    let wrong = format!(
        "host=127.0.0.1 port={} user={} password=wrong dbname=test",
        proxy.port,
        common::USER
    );
    common::refused(&wrong).await;
    let wrong_mysql = common::mysql::opts(proxy.mysql_port.unwrap()).pass(Some("wrong"));
    assert!(mysql_async::Conn::new(wrong_mysql).await.is_err());

    let t = unique("audited");
    let client = proxy.connect().await;
    client
        .batch_execute(&format!("create table {t} (id int, v text)"))
        .await
        .unwrap();
    client
        .execute(
            &format!("insert into {t} values ($1, $2)"),
            &[&1i32, &format!("token {TOKEN}")],
        )
        .await
        .unwrap();
    let e = client
        .batch_execute(&format!("drop table {t}"))
        .await
        .unwrap_err();
    assert_eq!(common::sqlstate(&e), "42501");
    let e = client.batch_execute("select 1/0").await.unwrap_err();
    assert_eq!(common::sqlstate(&e), "22012");
    let rows = client
        .query(&format!("select * from {t}"), &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    // Statements of two shapes in turn, classified from the cache after the first of each:
    // every record carries its own statement's fingerprint and kind.
    for i in 0..3 {
        client
            .batch_execute(&format!("select v from {t} where id = {i}"))
            .await
            .unwrap();
        client
            .batch_execute(&format!("insert into {t} values ({i}, 'x')"))
            .await
            .unwrap();
    }
    drop(client);

    let mut my = common::mysql::connect(proxy.mysql_port.unwrap()).await;
    let n: Option<i64> = my.exec_first("SELECT ? + 1", (41,)).await.unwrap();
    assert_eq!(n, Some(42));
    my.query_drop("SELECT 'plain text protocol'").await.unwrap();
    assert!(my.query_drop("SELECT * FROM surely_missing").await.is_err());
    assert!(my.query_drop(format!("DROP TABLE {t}")).await.is_err());
    my.disconnect().await.unwrap();
    // Disconnect records are written as the sessions end: give the writer a moment.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let (ok, out) = verify(state.path());
    assert!(ok, "{out}");
    let events = events(state.path());
    let of = |listener: &str, kind: &str| -> Vec<&Value> {
        events
            .iter()
            .filter(|e| e["listener"] == listener && e["type"] == kind)
            .collect()
    };
    assert_eq!(of("postgres", "connect").len(), 1, "{events:#?}");
    let failed = of("postgres", "auth_failed");
    assert_eq!(failed.len(), 1, "{events:#?}");
    assert_eq!(failed[0]["user"], common::USER);
    assert!(
        !failed[0].to_string().contains("wrong"),
        "no password in {}",
        failed[0]
    );
    assert_eq!(of("mysql", "auth_failed").len(), 1, "{events:#?}");
    assert_eq!(of("postgres", "connect")[0]["user"], common::USER);
    let pg = of("postgres", "statement");
    let texts: Vec<&str> = pg.iter().map(|e| e["text"].as_str().unwrap()).collect();
    assert!(
        texts.iter().any(|t| t.starts_with("create table")),
        "{texts:?}"
    );
    let insert = pg
        .iter()
        .find(|e| e["text"].as_str().unwrap().starts_with("insert"))
        .expect("the insert is recorded");
    assert_eq!(insert["params"][1], "token [masked:github_token]");
    assert_eq!(insert["decision"], "allow");
    assert_eq!(insert["rule"], "default");
    let drop = pg
        .iter()
        .find(|e| e["text"].as_str().unwrap().starts_with("drop"))
        .expect("the denied drop is recorded");
    assert_eq!(drop["decision"], "deny");
    assert_eq!(drop["rule"], "no-drops");
    assert_eq!(drop["findings"][0], "drop");
    let in_turn: Vec<(&str, &str, &str)> = pg
        .iter()
        .map(|e| {
            let field = |name: &str| e[name].as_str().unwrap();
            (field("text"), field("kind"), field("fingerprint"))
        })
        .filter(|(text, _, _)| text.contains(" where id = ") || text.ends_with(", 'x')"))
        .collect();
    assert_eq!(in_turn.len(), 6, "{in_turn:?}");
    for (text, kind, fingerprint) in in_turn {
        let (want_kind, start) = match text.starts_with("select") {
            true => ("read", "select v from"),
            false => ("write", "insert into"),
        };
        assert_eq!(kind, want_kind, "{text}");
        assert!(fingerprint.starts_with(start), "{text}: {fingerprint}");
        assert!(!fingerprint.contains("'x'"), "{text}: {fingerprint}");
    }
    let seqs: Vec<u64> = pg.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    let disconnect = of("postgres", "disconnect");
    assert_eq!(disconnect.len(), 1);
    assert_eq!(disconnect[0]["statements"], seqs.len() as u64);

    let my_statements = of("mysql", "statement");
    let texts: Vec<&str> = my_statements
        .iter()
        .map(|e| e["text"].as_str().unwrap())
        .collect();
    assert!(texts.contains(&"SELECT ? + 1"), "{texts:?}");
    let executed = my_statements
        .iter()
        .find(|e| e["text"] == "SELECT ? + 1")
        .unwrap();
    assert_eq!(executed["params"][0], "41");
    assert!(texts.contains(&"SELECT 'plain text protocol'"), "{texts:?}");
    assert_eq!(of("mysql", "disconnect").len(), 1);
    // How each statement ended: recorded with it.
    let outcome = |statement: &Value| -> Value {
        let o = statement["outcome"].clone();
        assert!(o.is_object(), "no outcome for {statement}");
        o
    };
    let find = |listener: &str, prefix: &str| -> Value {
        events
            .iter()
            .find(|e| {
                e["type"] == "statement"
                    && e["listener"] == listener
                    && e["text"].as_str().unwrap().starts_with(prefix)
            })
            .cloned()
            .unwrap_or_else(|| panic!("no statement {prefix}"))
    };
    let o = outcome(&find("postgres", "insert"));
    assert_eq!(
        (o["ran"].clone(), o["rows"].clone()),
        (true.into(), 1.into()),
        "{o}"
    );
    let o = outcome(&find("postgres", "drop"));
    assert_eq!(o["ran"], false, "{o}");
    assert_eq!(o["error"], "refused by Airlock", "{o}");
    let o = outcome(&find("postgres", "select 1/0"));
    assert_eq!(
        (o["ran"].clone(), o["error"].clone()),
        (true.into(), "22012".into()),
        "{o}"
    );
    let o = outcome(&find("postgres", "select *"));
    assert_eq!(o["rows"], 1, "{o}");
    // The result, sampled and masked (tokio-postgres asks for binary: the int4 as hex).
    assert_eq!(
        o["sample"],
        serde_json::json!([["\\x00000001", "token [masked:github_token]"]]),
        "{o}"
    );
    let o = outcome(&find("mysql", "SELECT ? + 1"));
    assert_eq!(
        (o["ran"].clone(), o["rows"].clone()),
        (true.into(), 1.into()),
        "{o}"
    );
    assert_eq!(o["sample"], serde_json::json!([["42"]]), "{o}");
    let o = outcome(&find("mysql", "SELECT 'plain"));
    assert_eq!(
        o["sample"],
        serde_json::json!([["plain text protocol"]]),
        "{o}"
    );
    let o = outcome(&find("mysql", "SELECT * FROM surely_missing"));
    assert_eq!(o["error"], "1146", "{o}");
    let o = outcome(&find("mysql", "DROP"));
    assert_eq!(
        (o["ran"].clone(), o["error"].clone()),
        (false.into(), "refused by Airlock".into()),
        "{o}"
    );
    for e in events.iter().filter(|e| e["type"] == "statement") {
        assert!(
            e["outcome"].is_object(),
            "every statement has its outcome: {e}"
        );
    }

    let all = export(state.path(), "jsonl");
    assert!(!all.contains(TOKEN), "the trail holds a secret");

    // The same export over the admin API, for an auditor's token only.
    let url = format!(
        "http://127.0.0.1:{}/api/audit/export?format=jsonl",
        proxy.admin_port.unwrap()
    );
    let get = |token: Option<&'static str>| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            let mut request = ureq::get(&url);
            if let Some(t) = token {
                request = request.header("Authorization", &format!("Bearer {t}"));
            }
            match request.call() {
                Ok(mut r) => (r.status().as_u16(), r.body_mut().read_to_string().unwrap()),
                Err(ureq::Error::StatusCode(code)) => (code, String::new()),
                Err(e) => panic!("{e}"),
            }
        })
    };
    let (status, body) = get(Some("auditor-token")).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(body, export(state.path(), "jsonl"));
    assert_eq!(get(Some("approver-token")).await.unwrap().0, 401);
    assert_eq!(get(None).await.unwrap().0, 401);

    // The same records in CSV and OCSF, read with Python's standard parsers.
    let csv = export(state.path(), "csv");
    let ocsf = export(state.path(), "ocsf");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.csv"), &csv).unwrap();
    std::fs::write(dir.path().join("a.ocsf"), &ocsf).unwrap();
    std::fs::write(dir.path().join("a.jsonl"), &all).unwrap();
    let script = r#"
import csv, json, sys
d = sys.argv[1]
jsonl = [json.loads(l) for l in open(d + "/a.jsonl")]
rows = list(csv.DictReader(open(d + "/a.csv", newline="")))
ocsf = [json.loads(l) for l in open(d + "/a.ocsf")]
assert len(jsonl) == len(rows) == len(ocsf), (len(jsonl), len(rows), len(ocsf))
for j, c, o in zip(jsonl, rows, ocsf):
    assert str(j["seq"]) == c["seq"] == o["metadata"]["uid"]
    assert j["hash"] == c["hash"]
    assert o["class_uid"] == 6005
    if j["event"]["type"] == "statement":
        assert c["statement"] == j["event"]["text"] == o["query_info"]["query_string"]
        assert c["decision"] == j["event"]["decision"]
        outcome = j["event"]["outcome"]
        assert c["ran"] == str(outcome["ran"]).lower() and c["error"] == (outcome["error"] or "")
print(len(jsonl))
"#;
    let out = Command::new("python3")
        .args(["-c", script, dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let n: usize = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert_eq!(n, events.len());
}

/// Edits, removals and reorderings of stored records are each caught at the right record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_is_caught_at_the_record_it_touched() {
    let state = tempfile::tempdir().unwrap();
    {
        let log =
            airlock::audit::AuditLog::open(state.path(), airlock::audit::Mode::Required).unwrap();
        for i in 0..20 {
            let event = airlock::audit::Event::Disconnect {
                listener: "postgres".into(),
                session: i,
                duration_ms: 1,
                statements: 0,
            };
            log.record(&event);
        }
    }
    let (ok, out) = verify(state.path());
    assert!(ok && out.contains("20 records"), "{out}");
    let copy = || {
        let dir = tempfile::tempdir().unwrap();
        for f in ["audit.db", "audit.db-wal", "audit.db-shm"] {
            let from = state.path().join(f);
            if from.exists() {
                std::fs::copy(&from, dir.path().join(f)).unwrap();
            }
        }
        dir
    };
    let broken = |dir: &Path| {
        let (ok, out) = verify(dir);
        assert!(!ok, "{out}");
        out
    };

    let edited = copy();
    rusqlite::Connection::open(edited.path().join("audit.db"))
        .unwrap()
        .execute(
            "UPDATE audit SET event = replace(event, '\"session\":7', '\"session\":70') WHERE seq = 8",
            [],
        )
        .unwrap();
    assert!(broken(edited.path()).contains("record 8: its content"));

    let removed = copy();
    rusqlite::Connection::open(removed.path().join("audit.db"))
        .unwrap()
        .execute("DELETE FROM audit WHERE seq = 5", [])
        .unwrap();
    assert!(broken(removed.path()).contains("record 6: it does not follow record 4"));

    let swapped = copy();
    let c = rusqlite::Connection::open(swapped.path().join("audit.db")).unwrap();
    c.execute_batch(
        "UPDATE audit SET seq = -1 WHERE seq = 11;
         UPDATE audit SET seq = 11 WHERE seq = 12;
         UPDATE audit SET seq = 12 WHERE seq = -1;",
    )
    .unwrap();
    assert!(broken(swapped.path()).contains("record 11"));
}

/// A checkpoint kept elsewhere catches what the chain alone cannot: a cut tail and a chain
/// rewritten from scratch; a forged checkpoint is refused; pruning under a signed
/// checkpoint still verifies, deleting old records without one does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_catch_cut_and_rewritten_trails() {
    let state = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("audit.key");
    let out = airlock(&["audit", "keygen", "--out", key.to_str().unwrap()]);
    assert!(out.status.success());
    let public_key = String::from_utf8_lossy(&out.stdout)
        .trim()
        .strip_prefix("public_key: ")
        .unwrap()
        .to_owned();
    let write = |from: i64, n: i64| write_records(state.path(), from, n);
    write(0, 10).await;
    let dir = state.path().to_str().unwrap();
    let held = keys.path().join("checkpoint.json");
    let out = airlock(&[
        "audit",
        "--state-dir",
        dir,
        "checkpoint",
        "--key",
        key.to_str().unwrap(),
        "--out",
        held.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    write(10, 5).await;
    let verify_with = |checkpoint: &Path| {
        let out = airlock(&[
            "audit",
            "--state-dir",
            dir,
            "verify",
            "--checkpoint",
            checkpoint.to_str().unwrap(),
            "--public-key",
            &public_key,
        ]);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (ok, text) = verify_with(&held);
    assert!(
        ok && text.contains("15 records") && text.contains("2 checkpoints match"),
        "{text}"
    );

    // A forged checkpoint: the signature no longer fits.
    let forged = keys.path().join("forged.json");
    let c: Value = serde_json::from_str(&std::fs::read_to_string(&held).unwrap()).unwrap();
    let mut f = c.clone();
    f["seq"] = Value::from(3);
    std::fs::write(&forged, f.to_string()).unwrap();
    let (ok, text) = verify_with(&forged);
    assert!(!ok && text.contains("forged or altered"), "{text}");

    // The tail cut at record 8 (a consistent chain, shorter than the checkpoint says).
    let db = rusqlite::Connection::open(state.path().join("audit.db")).unwrap();
    db.execute_batch("DELETE FROM audit WHERE seq > 8; DELETE FROM checkpoints;")
        .unwrap();
    let (ok, text) = verify_with(&held);
    assert!(!ok && text.contains("cut from the end"), "{text}");

    // The whole chain rewritten: valid as a chain, but record 10 is not the one signed for.
    db.execute("DELETE FROM audit", []).unwrap();
    drop(db);
    write(100, 15).await;
    let (ok, text) = verify_with(&held);
    assert!(
        !ok && text.contains("record 10 differs") && text.contains("rewritten"),
        "{text}"
    );

    // Pruning under a signed checkpoint still verifies; deleting old records without one
    // does not.
    let pruned = tempfile::tempdir().unwrap();
    write_records(pruned.path(), 0, 6).await;
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let cutoff = (airlock::audit::store::now_micros() / 1_000_000).to_string();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    write_records(pruned.path(), 6, 5).await;
    let pdir = pruned.path().to_str().unwrap();
    let out = airlock(&[
        "audit",
        "--state-dir",
        pdir,
        "prune",
        "--before",
        &cutoff,
        "--key",
        key.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("removed 6 records"));
    let (ok, text) = verify(pruned.path());
    assert!(ok && text.contains("5 records"), "{text}");
    rusqlite::Connection::open(pruned.path().join("audit.db"))
        .unwrap()
        .execute_batch("DELETE FROM checkpoints WHERE body LIKE '%prune%'")
        .unwrap();
    let (ok, text) = verify(pruned.path());
    assert!(!ok && text.contains("records 1 to 6 are missing"), "{text}");
}

async fn write_records(state: &Path, from: i64, n: i64) {
    let log = airlock::audit::AuditLog::open(state, airlock::audit::Mode::Required).unwrap();
    for i in from..from + n {
        let event = airlock::audit::Event::Disconnect {
            listener: "mysql".into(),
            session: i,
            duration_ms: 1,
            statements: 0,
        };
        log.record(&event);
    }
}

/// Statement texts Airlock recorded as allowed on `listener`, sorted.
fn allowed(events: &[Value], listener: &str) -> Vec<String> {
    let mut texts: Vec<String> = events
        .iter()
        .filter(|e| e["type"] == "statement" && e["listener"] == listener)
        .filter(|e| e["decision"] == "allow")
        .map(|e| normal(e["text"].as_str().unwrap()))
        .collect();
    texts.sort();
    texts
}

/// PostgreSQL's own log (log_statement = all, for a role only this test uses) and the
/// MariaDB general log list exactly the statements Airlock recorded as allowed: nothing
/// missing, nothing extra; denied statements are recorded and never reach the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_databases_own_logs_match_the_trail() {
    let role = unique("audit_role");
    let direct = common::direct().await;
    direct
        .batch_execute(&format!(
            "create role {role} login superuser; alter role {role} set log_statement = 'all'"
        ))
        .await
        .unwrap();
    let mut mariadb = common::mysql::direct().await;
    mariadb
        .query_drop("SET GLOBAL log_output = 'TABLE', GLOBAL general_log = 1")
        .await
        .unwrap();

    let Audited {
        proxy,
        state,
        _policy,
    } = audited(
        Setup {
            upstream_user: role.clone(),
            ..Setup::default()
        },
        "",
    )
    .await;

    // PostgreSQL: simple and extended protocol, a denied statement, a failing one.
    let t = unique("logged");
    let client = proxy.connect().await;
    client
        .batch_execute(&format!("create table {t} (id int primary key, v text)"))
        .await
        .unwrap();
    for i in 0..5 {
        client
            .execute(&format!("insert into {t} values ($1, $2)"), &[&i, &"x"])
            .await
            .unwrap();
    }
    client
        .simple_query(&format!("update {t} set v = 'y' where id = 1"))
        .await
        .unwrap();
    let rows = client
        .query(&format!("select id from {t} where id > $1"), &[&2i32])
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert!(
        client
            .batch_execute(&format!("drop table {t}"))
            .await
            .is_err()
    );
    assert!(client.batch_execute("select 1/0").await.is_err());
    drop(client);

    // MariaDB: text and binary protocol, a denied statement.
    let mut my = common::mysql::connect(proxy.mysql_port.unwrap()).await;
    let thread: Option<u64> = my.query_first("SELECT CONNECTION_ID()").await.unwrap();
    let n: Option<i64> = my.exec_first("SELECT ? + 1", (41,)).await.unwrap();
    assert_eq!(n, Some(42));
    my.query_drop("SELECT 'through the text protocol'")
        .await
        .unwrap();
    assert!(my.query_drop(format!("DROP TABLE {t}")).await.is_err());
    my.disconnect().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;

    let events = events(state.path());
    let (ok, out) = verify(state.path());
    assert!(ok, "{out}");

    // What PostgreSQL logged for the role: simple statements and extended executes.
    let mut logged = logged_statements(&role);
    logged.sort();
    let recorded = allowed(&events, "postgres");
    assert_eq!(logged, recorded, "PostgreSQL's log against Airlock's trail");
    assert_eq!(recorded.len(), 9, "{recorded:#?}");
    assert!(
        events
            .iter()
            .any(|e| e["listener"] == "postgres" && e["decision"] == "deny"),
        "the denied DROP is recorded"
    );

    // What MariaDB logged for the session's own connection.
    let rows: Vec<(String, String)> = mariadb
        .exec(
            "SELECT command_type, CONVERT(argument USING utf8mb4) FROM mysql.general_log \
             WHERE thread_id = ? AND command_type IN ('Query', 'Execute') ORDER BY event_time",
            (thread.unwrap(),),
        )
        .await
        .unwrap();
    mariadb
        .query_drop("SET GLOBAL general_log = 0")
        .await
        .unwrap();
    // Airlock's own question after login (README: the session's sql_mode) is its only
    // statement on the client's connection; it is not the client's, so not in the trail.
    let own = "SELECT @@SESSION.sql_mode";
    assert_eq!(rows.first().map(|(_, text)| text.as_str()), Some(own));
    let queries: Vec<&str> = rows
        .iter()
        .skip(1)
        .filter(|(kind, _)| kind == "Query")
        .map(|(_, text)| text.as_str())
        .collect();
    let executes = rows.iter().filter(|(kind, _)| kind == "Execute").count();
    let recorded = allowed(&events, "mysql");
    for q in &queries {
        assert!(
            recorded.iter().any(|r| r == q),
            "{q} ran but was not recorded: {recorded:#?}"
        );
    }
    assert_eq!(
        queries.len() + executes,
        recorded.len(),
        "MariaDB ran {queries:?} and {executes} executes; Airlock recorded {recorded:#?}"
    );
    assert_eq!(executes, 1);
    drop(proxy);
    drop_role(&direct, &role, &format!("drop table if exists {t}")).await;
}

/// Drops `role` (after `first`), once Airlock's sessions as it have closed.
async fn drop_role(direct: &tokio_postgres::Client, role: &str, first: &str) {
    direct.batch_execute(first).await.unwrap();
    for _ in 0..50 {
        if direct
            .batch_execute(&format!("drop role {role}"))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("role {role} still in use after 5 s");
}

/// A statement as both sides write it: without the trailing semicolon.
fn normal(text: &str) -> String {
    text.trim().trim_end_matches(';').trim().to_owned()
}

/// What PostgreSQL logged (log_statement = all) for `role`: simple statements and executes.
fn logged_statements(role: &str) -> Vec<String> {
    let log_file = std::fs::read_dir("/var/log/postgresql")
        .expect("PostgreSQL logs to /var/log/postgresql (Debian's pg_ctlcluster)")
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with("-main.log"))
        .expect("a PostgreSQL cluster log in /var/log/postgresql");
    let log = std::fs::read_to_string(&log_file).unwrap();
    let marker = format!("{role}@");
    log.lines()
        .filter_map(|l| l.split_once(&marker).map(|(_, rest)| rest))
        .filter_map(|rest| rest.split_once(" LOG:  ").map(|(_, m)| m))
        .filter_map(|m| {
            m.strip_prefix("statement: ").or_else(|| {
                m.strip_prefix("execute ")
                    .and_then(|r| r.split_once(": ").map(|(_, text)| text))
            })
        })
        .map(normal)
        .collect()
}

/// kill -9 in the middle of a pgbench run: after a restart the chain verifies, and every
/// statement PostgreSQL ran has its record (required audit: recorded before forwarded).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_pgbench_loses_no_record() {
    let role = unique("audit_kill");
    let db = unique("audit_kill_db");
    let direct = common::direct().await;
    direct
        .batch_execute(&format!(
            "create role {role} login superuser; alter role {role} set log_statement = 'all'"
        ))
        .await
        .unwrap();
    direct
        .batch_execute(&format!("create database {db} owner {role}"))
        .await
        .unwrap();
    let init = Command::new("pgbench")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            "5432",
            "-U",
            "postgres",
            "-i",
            "-s",
            "1",
            "-q",
            &db,
        ])
        .output()
        .expect("pgbench is installed");
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );

    let policy = tempfile::tempdir().unwrap();
    std::fs::write(policy.path().join("p.toml"), POLICY).unwrap();
    let state = tempfile::tempdir().unwrap();
    let setup = Setup {
        policy_dir: Some(policy.path().to_path_buf()),
        upstream_user: role.clone(),
        ..Setup::default()
    };
    let extra = format!(
        "
[state]
dir = {:?}
",
        state.path().display().to_string()
    );
    let mut first = common::Binary::spawn(&setup, &extra, "warn");
    drop(first.connect().await);
    let bench = std::process::Command::new("pgbench")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &first.port.to_string(),
            "-U",
            common::USER,
        ])
        .args(["-n", "-c", "4", "-j", "2", "-T", "5", &db])
        .env("PGPASSWORD", common::PASSWORD)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(2000)).await;
    first.child.kill().unwrap(); // SIGKILL
    first.child.wait().unwrap();
    let bench = tokio::task::spawn_blocking(move || bench.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(!bench.status.success(), "pgbench lost its connections");

    // Restart on the same state: the chain goes on and verifies.
    let second = common::Binary::spawn(&setup, &extra, "warn");
    let client = second.connect().await;
    client
        .simple_query("select 'after the restart'")
        .await
        .unwrap();
    drop(client);
    // Killed too: its last statement waits in the journal as an intent, and the next start
    // records it.
    drop(second);
    let third = common::Binary::spawn(&setup, &extra, "warn");
    drop(third.connect().await);
    drop(third);
    let (ok, out) = verify(state.path());
    assert!(ok, "{out}");

    let mut recorded: std::collections::HashMap<String, usize> = Default::default();
    for e in events(state.path()) {
        if e["type"] == "statement" && e["decision"] == "allow" {
            *recorded
                .entry(normal(e["text"].as_str().unwrap()))
                .or_default() += 1;
        }
    }
    let ran = logged_statements(&role);
    let updates = ran
        .iter()
        .filter(|s| s.starts_with("UPDATE pgbench_accounts"))
        .count();
    assert!(updates > 10, "pgbench ran: {} statements", ran.len());
    for statement in &ran {
        let left = recorded.get_mut(statement);
        assert!(
            left.as_ref().is_some_and(|n| **n > 0),
            "PostgreSQL ran {statement:?}, which has no record"
        );
        *left.unwrap() -= 1;
    }
    drop_role(&direct, &role, &format!("drop database {db} with (force)")).await;
}

/// Makes a file immutable (chattr +i: even root's writes fail) until dropped.
struct Immutable(std::path::PathBuf);

impl Immutable {
    fn set(path: &Path) -> Immutable {
        let out = Command::new("chattr")
            .arg("+i")
            .arg(path)
            .output()
            .expect("chattr (e2fsprogs) is installed");
        assert!(
            out.status.success(),
            "chattr +i {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Immutable(path.to_owned())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).output();
    }
}

/// A switch of database by COM_INIT_DB (the mariadb client's `use`), which carries no SQL, is
/// recorded as the USE it does, with how it ended: a compliance team reading the trail sees
/// which database each later statement ran in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn com_init_db_is_recorded_as_the_use_it_does() {
    let Audited {
        proxy,
        state,
        _policy,
    } = audited(Setup::default(), "").await;
    let mut raw = MyRaw::login(proxy.mysql_port.unwrap()).await;
    assert!(matches!(
        raw.init_db("surely_no_such_database").await,
        Reply::Err { code: 1049, .. }
    ));
    assert!(matches!(raw.init_db("test").await, Reply::Ok { .. }));
    drop(raw);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let (ok, out) = verify(state.path());
    assert!(ok, "{out}");
    let recorded: Vec<(String, String, Value)> = events(state.path())
        .into_iter()
        .filter(|e| e["type"] == "statement")
        .map(|e| {
            let text = e["text"].as_str().unwrap().to_owned();
            let kind = e["kind"].as_str().unwrap().to_owned();
            (text, kind, e["outcome"]["error"].clone())
        })
        .collect();
    assert_eq!(
        recorded,
        [
            (
                "USE `surely_no_such_database`".to_owned(),
                "session".to_owned(),
                Value::from("1049")
            ),
            ("USE `test`".to_owned(), "session".to_owned(), Value::Null),
        ]
    );
}

/// With `audit = "required"`, a statement whose record cannot be written does not run: the
/// client is told why (58030 / 1026), and nothing reaches the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trail_that_cannot_be_written_refuses_statements() {
    let Audited {
        proxy,
        state,
        _policy,
    } = audited(Setup::default(), "").await;
    let t = unique("unaudited");
    let direct = common::direct().await;
    direct
        .batch_execute(&format!("create table {t} (id int)"))
        .await
        .unwrap();
    let client = proxy.connect().await;
    client
        .batch_execute(&format!("insert into {t} values (1)"))
        .await
        .unwrap();
    let mut my = common::mysql::connect(proxy.mysql_port.unwrap()).await;
    my.query_drop("SELECT 1").await.unwrap();

    let _frozen = Immutable::set(&state.path().join("audit.journal"));
    let e = client
        .batch_execute(&format!("insert into {t} values (2)"))
        .await
        .unwrap_err();
    assert_eq!(common::sqlstate(&e), "58030", "{e}");
    assert!(common::text(&e).contains("audit trail"), "{e}");
    let e = my
        .query_drop("INSERT INTO test.nothing VALUES (1)")
        .await
        .unwrap_err();
    assert_eq!(common::mysql::code(&e), 1026, "{e}");
    let n: i64 = direct
        .query_one(&format!("select count(*) from {t}"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1, "the unaudited insert did not run");
    // What was kept before the journal failed (the refused statements' records, chained
    // before their write failed) still reaches audit.db, past the frozen journal.
    let refused = format!("insert into {t} values (2)");
    let mut found = false;
    for _ in 0..50 {
        found = events(state.path())
            .iter()
            .any(|e| e["text"] == refused.as_str());
        if found {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(found, "the refused statement's record is not in audit.db");
    let (ok, out) = verify(state.path());
    assert!(ok, "{out}");
    direct
        .batch_execute(&format!("drop table {t}"))
        .await
        .unwrap();
}
