//! Masking end to end: tables holding credentials, read through both listeners by real
//! clients in text and binary formats (tokio-postgres, psql, psycopg, mysql_async, PyMySQL),
//! show only placeholders; a member of an exempt group sees the values; errors that echo a
//! value are masked; and Airlock's own log and ticket store never hold the secrets.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{PASSWORD, Setup, USER, unique};
use mysql_async::prelude::*;
use tokio_postgres::types::{FromSql, Type};

/// Valid-format secrets: a GitHub token, an AWS access key id, a password in a URL.
const GITHUB: &str = "ghp_R8x2Lq9ZtV4mK7pW3nY6cH1jB5dF0sG2aE8u";
const AWS: &str = "AKIAQ7RZ2LM4XK9PB3TD";
const URL_PASSWORD: &str = "Sup3rS3cret";

/// The policy: everything allowed except writes to `held_*` tables (held for review, denied
/// after a second); `password` columns masked whole; the `security` group exempt.
const POLICY: &str = r#"
[defaults]
action = "allow"

[[rule]]
name = "held-tables"
action = "review"
kinds = ["write"]
tables = ["held_*"]
approvers = ["dba"]
timeout_secs = 1

[mask]
columns = ["password"]
exempt_groups = ["security"]
"#;

fn policy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.toml"), POLICY).unwrap();
    dir
}

fn setup(policy: &tempfile::TempDir, groups: &[&str]) -> Setup {
    Setup {
        policy_dir: Some(policy.path().to_path_buf()),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        mysql: true,
        ..Setup::default()
    }
}

/// Any value, as the bytes the server sent (jsonb in binary keeps its version byte).
struct Raw(Vec<u8>);

impl<'a> FromSql<'a> for Raw {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(raw.to_vec()))
    }
    fn accepts(_: &Type) -> bool {
        true
    }
}

/// Runs tests/python/masking_read.py with `args`: what it printed, and that read as JSON.
fn masking_read(args: &[&str]) -> (String, serde_json::Value) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/masking_read.py");
    let python = Command::new(common::python())
        .arg(&script)
        .args(args)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&python.stdout).into_owned();
    assert!(
        python.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&python.stderr)
    );
    let read = serde_json::from_str(&out).unwrap();
    (out, read)
}

fn assert_no_secret(what: &str, text: &str) {
    for secret in [GITHUB, AWS, URL_PASSWORD, "hunter2"] {
        assert!(!text.contains(secret), "{what} shows {secret}:\n{text}");
    }
}

/// A table made directly in PostgreSQL, with secrets in row 1.
async fn pg_table() -> String {
    let t = unique("masked");
    let direct = common::direct().await;
    direct
        .batch_execute(&format!(
            "create table {t} (id int primary key, note text, doc jsonb, blob bytea, \
                 password text, label text unique, n int8);
             insert into {t} values
               (1, 'deploy key {GITHUB}', '{{\"aws\": {{\"key\": \"{AWS}\"}}}}',
                convert_to('conn postgres://app:{URL_PASSWORD}@db/x', 'UTF8'), 'hunter2', 'first', 42),
               (2, 'nothing secret', '{{\"n\": 1}}', '\\x00ff', null, 'second', 7);"
        ))
        .await
        .unwrap();
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_rows_show_placeholders_in_text_and_binary() {
    let policy = policy();
    let proxy = setup(&policy, &[]).start().await;
    let t = pg_table().await;
    let client = proxy.connect().await;

    // Extended protocol, binary results (tokio-postgres), through a statement prepared once.
    let select = client
        .prepare(&format!(
            "select id, note, doc, blob, password, n from {t} where id = $1"
        ))
        .await
        .unwrap();
    for _ in 0..2 {
        let row = client.query_one(&select, &[&1i32]).await.unwrap();
        assert_eq!(row.get::<_, i32>(0), 1);
        assert_eq!(row.get::<_, String>(1), "deploy key [masked:github_token]");
        let doc = row.get::<_, Raw>(2).0;
        assert_eq!(doc[0], 1, "jsonb keeps its version byte");
        let doc: serde_json::Value = serde_json::from_slice(&doc[1..]).expect("still JSON");
        assert_eq!(doc["aws"]["key"], "[masked:aws_access_key_id]");
        assert_eq!(
            row.get::<_, Vec<u8>>(3),
            b"conn postgres://app:[masked:url_password]@db/x"
        );
        assert_eq!(row.get::<_, String>(4), "[masked:column]");
        assert_eq!(row.get::<_, i64>(5), 42);
    }
    let row = client.query_one(&select, &[&2i32]).await.unwrap();
    assert_eq!(row.get::<_, Option<String>>(4), None, "NULL stays NULL");
    assert_eq!(row.get::<_, Vec<u8>>(3), vec![0u8, 0xff]);
    assert_eq!(row.get::<_, String>(1), "nothing secret");

    // Simple protocol, text results.
    let messages = client
        .simple_query(&format!(
            "select note, doc, blob, password from {t} order by id"
        ))
        .await
        .unwrap();
    let rows: Vec<_> = messages
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(rows[0].get(0), Some("deploy key [masked:github_token]"));
    let doc: serde_json::Value = serde_json::from_str(rows[0].get(1).unwrap()).unwrap();
    assert_eq!(doc["aws"]["key"], "[masked:aws_access_key_id]");
    assert_eq!(
        bytea_hex(rows[0].get(2).unwrap()),
        b"conn postgres://app:[masked:url_password]@db/x"
    );
    assert_eq!(rows[0].get(3), Some("[masked:column]"));
    assert_eq!(rows[1].get(3), None);
    // bytea alone: its hex digits hold none of the bytes the detectors look for, and no
    // column masked whole sends the row through value by value.
    let messages = client
        .simple_query(&format!("select blob from {t} where id = 1"))
        .await
        .unwrap();
    let blob = messages.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(bytea_hex),
        _ => None,
    });
    assert_eq!(
        blob.as_deref(),
        Some(&b"conn postgres://app:[masked:url_password]@db/x"[..])
    );
    // Inside an array (or a record), quoted: {"\\x..."}.
    let messages = client
        .simple_query(&format!("select array[blob] from {t} where id = 1"))
        .await
        .unwrap();
    let blob = messages.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(|a| {
            let quoted = a.strip_prefix("{\"\\").and_then(|a| a.strip_suffix("\"}"));
            bytea_hex(quoted.expect("one quoted bytea"))
        }),
        _ => None,
    });
    assert_eq!(
        blob.as_deref(),
        Some(&b"conn postgres://app:[masked:url_password]@db/x"[..])
    );

    // An error that echoes the value (a duplicate key) is masked too.
    client
        .execute(
            &format!("insert into {t} (id, label) values (3, $1)"),
            &[&GITHUB],
        )
        .await
        .unwrap();
    let e = client
        .execute(
            &format!("insert into {t} (id, label) values (4, $1)"),
            &[&GITHUB],
        )
        .await
        .unwrap_err();
    let db = e.as_db_error().expect("the database's error");
    assert_eq!(db.code().code(), "23505");
    let detail = db.detail().unwrap_or_default();
    assert!(detail.contains("[masked:github_token]"), "{detail}");
    assert_no_secret("the duplicate-key error", &format!("{db:?}"));
    assert_eq!(
        common::one_i32(&client, "select 1").await,
        1,
        "the session goes on"
    );
}

/// The bytes of a bytea shown in hex (`\x...`).
fn bytea_hex(shown: &str) -> Vec<u8> {
    let digits = shown.strip_prefix("\\x").expect("bytea in hex");
    (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).unwrap())
        .collect()
}

fn psql(conninfo: &str, commands: &[String]) -> (bool, String) {
    let mut psql = Command::new("psql");
    psql.args([conninfo, "-At"]);
    for c in commands {
        psql.args(["-c", c]);
    }
    let out = psql.output().expect("psql is installed");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_and_psycopg_see_placeholders() {
    let policy = policy();
    let proxy = setup(&policy, &[]).start().await;
    let t = pg_table().await;

    let conninfo = proxy.conninfo("sslmode=disable");
    let (ok, out) = psql(
        &conninfo,
        &[format!("select note, doc, password from {t} order by id")],
    );
    assert!(ok, "{out}");
    assert_eq!(out.matches("[masked:github_token]").count(), 1, "{out}");
    assert_eq!(
        out.matches("[masked:aws_access_key_id]").count(),
        1,
        "{out}"
    );
    assert!(out.contains("[masked:column]"), "{out}");
    assert_no_secret("psql", &out);
    // COPY data names no columns, so a policy that masks columns refuses it.
    let (ok, out) = psql(&conninfo, &[format!("copy {t} to stdout")]);
    assert!(
        !ok && out.contains("COPY TO STDOUT cannot be masked"),
        "{out}"
    );
    assert_no_secret("psql COPY", &out);

    let (out, read) = masking_read(&["pg", &conninfo, &t]);
    for format in ["text", "binary"] {
        let row = &read[format][0];
        assert_eq!(
            row[1], "deploy key [masked:github_token]",
            "{format}: {row}"
        );
        assert_eq!(row[4], "[masked:column]", "{format}: {row}");
    }
    assert_no_secret("psycopg", &out);
}

/// A table made directly in MariaDB, with secrets in row 1.
async fn mysql_table() -> String {
    let t = unique("masked");
    let mut direct = common::mysql::direct().await;
    direct
        .query_drop(format!(
            "CREATE TABLE {t} (id INT PRIMARY KEY, note TEXT, doc JSON, password VARCHAR(64), \
                 label VARCHAR(80) UNIQUE, n BIGINT, at DATETIME)"
        ))
        .await
        .unwrap();
    direct
        .query_drop(format!(
            "INSERT INTO {t} VALUES \
             (1, 'deploy key {GITHUB}', '{{\"aws\": {{\"key\": \"{AWS}\"}}}}', 'hunter2', 'first', 42, '2024-01-02 03:04:05'), \
             (2, 'nothing secret', '{{\"n\": 1}}', NULL, 'second', 7, NULL)"
        ))
        .await
        .unwrap();
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_rows_show_placeholders_in_text_and_binary() {
    let policy = policy();
    let proxy = setup(&policy, &[]).start().await;
    let port = proxy.mysql_port.unwrap();
    let t = mysql_table().await;
    let mut conn = common::mysql::connect(port).await;

    // Binary protocol: a prepared statement.
    let select = format!("SELECT id, note, doc, password, n, at FROM {t} WHERE id = ?");
    let row: mysql_async::Row = conn.exec_first(&select, (1,)).await.unwrap().unwrap();
    assert_eq!(row.get::<i32, _>(0), Some(1));
    assert_eq!(
        row.get::<String, _>(1).unwrap(),
        "deploy key [masked:github_token]"
    );
    let doc: serde_json::Value = serde_json::from_str(&row.get::<String, _>(2).unwrap()).unwrap();
    assert_eq!(doc["aws"]["key"], "[masked:aws_access_key_id]");
    assert_eq!(row.get::<String, _>(3).unwrap(), "[masked:column]");
    assert_eq!(row.get::<i64, _>(4), Some(42));
    assert_eq!(
        row.get::<mysql_async::Value, _>(5),
        Some(mysql_async::Value::Date(2024, 1, 2, 3, 4, 5, 0))
    );
    let row: mysql_async::Row = conn.exec_first(&select, (2,)).await.unwrap().unwrap();
    assert_eq!(
        row.get::<Option<String>, _>(3),
        Some(None),
        "NULL stays NULL"
    );

    // Text protocol.
    let rows: Vec<(i32, String, Option<String>)> = conn
        .query(format!("SELECT id, note, password FROM {t} ORDER BY id"))
        .await
        .unwrap();
    assert_eq!(
        rows,
        vec![
            (
                1,
                "deploy key [masked:github_token]".into(),
                Some("[masked:column]".into())
            ),
            (2, "nothing secret".into(), None),
        ]
    );

    // A duplicate-key error echoes the value: masked.
    conn.exec_drop(
        format!("INSERT INTO {t} (id, label) VALUES (3, ?)"),
        (GITHUB,),
    )
    .await
    .unwrap();
    let e = conn
        .exec_drop(
            format!("INSERT INTO {t} (id, label) VALUES (4, ?)"),
            (GITHUB,),
        )
        .await
        .unwrap_err();
    assert_eq!(common::mysql::code(&e), 1062);
    let message = common::mysql::message(&e);
    assert!(message.contains("[masked:github_token]"), "{message}");
    assert_no_secret("the duplicate-entry error", &message);
    let one: Option<i32> = conn.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1), "the session goes on");

    // PyMySQL, text protocol.
    let (out, read) = masking_read(&["mysql", &port.to_string(), USER, PASSWORD, &t]);
    assert_eq!(read["text"][0][1], "deploy key [masked:github_token]");
    assert_eq!(read["text"][0][3], "[masked:column]");
    assert_no_secret("PyMySQL", &out);
}

/// Without column rules, COPY out in text and CSV is masked value by value; in binary, a
/// secret ends the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_out_is_masked() {
    let policy = tempfile::tempdir().unwrap();
    std::fs::write(
        policy.path().join("policy.toml"),
        "[defaults]\naction = \"allow\"\n",
    )
    .unwrap();
    let proxy = setup(&policy, &[]).start().await;
    let t = pg_table().await;
    let conninfo = proxy.conninfo("sslmode=disable");
    let (ok, out) = psql(
        &conninfo,
        &[
            format!("copy {t} to stdout"),
            format!("copy (select note, doc, blob from {t}) to stdout with (format csv)"),
        ],
    );
    assert!(ok, "{out}");
    assert_eq!(out.matches("[masked:github_token]").count(), 2, "{out}");
    assert_eq!(
        out.matches("[masked:aws_access_key_id]").count(),
        2,
        "{out}"
    );
    // bytea is shown in hex, in both formats.
    let hex = |b: &[u8]| b.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let masked = hex(b"conn postgres://app:[masked:url_password]@db/x");
    assert_eq!(out.matches(&format!("\\\\x{masked}\t")).count(), 1, "{out}");
    assert_eq!(out.matches(&format!(",\\x{masked}\n")).count(), 1, "{out}");
    assert!(!out.contains(&hex(URL_PASSWORD.as_bytes())), "{out}");
    assert_no_secret("psql COPY", &out.replace("hunter2", ""));
    let (ok, out) = psql(
        &conninfo,
        &[format!("copy {t} to stdout with (format binary)")],
    );
    assert!(!ok && out.contains("COPY in binary format"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exempt_group_sees_the_values() {
    let policy = policy();
    let proxy = setup(&policy, &["security"]).start().await;
    let t = pg_table().await;
    let client = proxy.connect().await;
    let row = client
        .query_one(&format!("select note, password from {t} where id = 1"), &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), format!("deploy key {GITHUB}"));
    assert_eq!(row.get::<_, String>(1), "hunter2");

    let mt = mysql_table().await;
    let mut conn = common::mysql::connect(proxy.mysql_port.unwrap()).await;
    let note: Option<String> = conn
        .exec_first(format!("SELECT note FROM {mt} WHERE id = ?"), (1,))
        .await
        .unwrap();
    assert_eq!(note, Some(format!("deploy key {GITHUB}")));
}

/// The log (at debug level) and the ticket store of a session that reads secrets and has an
/// INSERT of a secret held for approval hold none of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_and_tickets_never_hold_a_secret() {
    let policy = policy();
    let state = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let log_path = logs.path().join("airlock.log");
    // Only the PostgreSQL listener: the binary runs on one fixed port.
    let setup = Setup {
        mysql: false,
        ..setup(&policy, &[])
    };
    let extra = format!(
        "\n[state]\ndir = {:?}\n",
        state.path().display().to_string()
    );
    let binary = common::Binary::spawn_logging(
        &setup,
        &extra,
        "debug",
        std::fs::File::create(&log_path).unwrap(),
    );
    let t = pg_table().await;
    let held = unique("held");
    common::direct()
        .await
        .batch_execute(&format!("create table {held} (v text)"))
        .await
        .unwrap();
    let client = binary.connect().await;
    let rows = client
        .query(&format!("select * from {t}"), &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    // Held, then denied when its review times out: the ticket holds the statement and its
    // parameters, masked.
    let e = client
        .execute(
            &format!("insert into {held} values ('{GITHUB}'), ($1)"),
            &[&format!("postgres://app:{URL_PASSWORD}@db/x {AWS}")],
        )
        .await
        .unwrap_err();
    assert_eq!(common::sqlstate(&e), "42501", "{e}");
    drop(client);
    drop(binary);

    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("statement held for approval"), "{log}");
    assert_no_secret("the log", &log);
    let mut stored = 0;
    for entry in std::fs::read_dir(state.path()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert_no_secret("the ticket store", &text);
        stored += text.matches("[masked:github_token]").count();
    }
    assert!(stored > 0, "the ticket was stored, with the token masked");
    // Through the store's own reader: the ticket's statement and parameters.
    let db = rusqlite::Connection::open(state.path().join("airlock.db")).unwrap();
    let request: String = db
        .query_row("select request from tickets", [], |r| r.get(0))
        .unwrap();
    assert!(request.contains("[masked:github_token]"), "{request}");
    assert!(request.contains("[masked:url_password]"), "{request}");
    assert!(request.contains("[masked:aws_access_key_id]"), "{request}");
}
