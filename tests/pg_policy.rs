//! Policy enforcement through the PostgreSQL listener, with the shipped default policy and
//! real clients: a denied or held statement never reaches the database, the client gets 42501
//! naming the rule, the connection stays usable, and inside a transaction the client sees
//! what PostgreSQL shows after a failed statement (the transaction status is the database's).

mod common;

use std::path::PathBuf;

use common::raw::{Raw, field, msg, tags};
use common::{Proxy, Setup, direct, one_i32, sqlstate, text, unique};

fn shipped_policies() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policies")
}

async fn guarded() -> Proxy {
    Setup {
        policy_dir: Some(shipped_policies()),
        ..Setup::default()
    }
    .start()
    .await
}

/// A setup guarded by a policy of one file with `text`; keep the directory while it runs.
fn with_policy(text: &str) -> (tempfile::TempDir, Setup) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.toml"), text).unwrap();
    let setup = Setup {
        policy_dir: Some(dir.path().to_owned()),
        ..Setup::default()
    };
    (dir, setup)
}

/// A table with three rows, made directly in the database (DDL through Airlock is held).
async fn table() -> String {
    let name = unique("guarded");
    direct()
        .await
        .batch_execute(&format!(
            "create table {name} (id int primary key, v text); \
             insert into {name} values (1, 'a'), (2, 'b'), (3, 'c')"
        ))
        .await
        .unwrap();
    name
}

async fn rows_in(table: &str) -> i64 {
    direct()
        .await
        .query_one(&format!("select count(*) from {table}"), &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn a_held_statement_is_refused_with_42501_and_the_session_carries_on() {
    let proxy = guarded().await;
    let t = table().await;
    let client = proxy.connect().await;

    let e = client
        .simple_query(&format!("delete from {t}"))
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    let db = e.as_db_error().unwrap();
    assert!(
        db.message().contains("everything-else-needs-a-dba") && db.message().contains("approval"),
        "names the rule and says approval is needed: {}",
        text(&e)
    );
    assert!(
        db.detail().unwrap_or("").contains("delete_without_where"),
        "the detail names the finding: {:?}",
        db.detail()
    );
    assert!(db.hint().unwrap_or("").contains("dba"), "{}", text(&e));
    assert_eq!(rows_in(&t).await, 3, "nothing reached the database");

    // Reads and ordinary writes pass, on the same connection.
    assert_eq!(one_i32(&client, "select 41 + 1").await, 42);
    client
        .execute(&format!("delete from {t} where id = $1"), &[&1i32])
        .await
        .unwrap();
    assert_eq!(rows_in(&t).await, 2);

    // DDL and privilege statements are held too.
    for sql in [
        format!("drop table {t}"),
        format!("grant select on {t} to public"),
        format!("truncate {t}"),
        "select pg_terminate_backend(1)".to_owned(),
    ] {
        let e = client.simple_query(&sql).await.unwrap_err();
        assert_eq!(sqlstate(&e), "42501", "{sql}");
    }
    assert_eq!(rows_in(&t).await, 2);
}

#[tokio::test]
async fn one_denied_statement_refuses_the_whole_string() {
    let proxy = guarded().await;
    let t = table().await;
    let client = proxy.connect().await;
    let e = client
        .simple_query(&format!(
            "insert into {t} values (10, 'x'); delete from {t}; select 1"
        ))
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    assert_eq!(rows_in(&t).await, 3, "not even the INSERT ran");
}

#[tokio::test]
async fn a_prepared_delete_is_judged_at_every_execute() {
    let proxy = guarded().await;
    let t = table().await;
    let client = proxy.connect().await;
    let wipe = client
        .prepare(&format!("delete from {t}"))
        .await
        .expect("preparing runs nothing, so it is not refused");
    for _ in 0..3 {
        let e = client.execute(&wipe, &[]).await.unwrap_err();
        assert_eq!(sqlstate(&e), "42501");
    }
    assert_eq!(rows_in(&t).await, 3);
    // The prepared statement of an allowed write still runs, on the same connection.
    let one = client
        .prepare(&format!("delete from {t} where id = $1"))
        .await
        .unwrap();
    assert_eq!(client.execute(&one, &[&3i32]).await.unwrap(), 1);
}

#[tokio::test]
async fn a_denial_inside_a_transaction_fails_it_as_postgres_would() {
    let proxy = guarded().await;
    let t = table().await;
    let mut client = proxy.connect().await;
    let tx = client.transaction().await.unwrap();
    tx.execute(&format!("insert into {t} values (4, 'd')"), &[])
        .await
        .unwrap();
    let e = tx
        .batch_execute(&format!("delete from {t}"))
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    let after = tx.batch_execute("select 1").await.unwrap_err();
    assert_eq!(
        sqlstate(&after),
        "25P02",
        "the transaction is aborted, as after any failed statement"
    );
    // COMMIT of a failed transaction rolls back, so the INSERT is gone.
    let _ = tx.commit().await;
    assert_eq!(rows_in(&t).await, 3);
    assert_eq!(
        one_i32(&client, "select 7").await,
        7,
        "the session carries on"
    );
}

#[tokio::test]
async fn the_transaction_status_the_client_sees_is_the_databases() {
    let proxy = guarded().await;
    let t = table().await;
    let mut raw = Raw::session(proxy.port).await;
    let status = |m: &[(u8, Vec<u8>)]| m.last().map(|(_, b)| b[0] as char);

    // Outside a transaction: the error, then ReadyForQuery 'I'.
    raw.send(&msg(b'Q', format!("delete from {t}\0").as_bytes()))
        .await;
    let m = raw.until_ready().await;
    assert_eq!(tags(&m), "EZ");
    assert_eq!(field(&m[0].1, b'C').as_deref(), Some("42501"));
    assert_eq!(status(&m), Some('I'));

    // Inside one: 'E', then ROLLBACK brings it back to 'I'.
    raw.send(&msg(b'Q', b"begin\0")).await;
    assert_eq!(status(&raw.until_ready().await), Some('T'));
    raw.send(&msg(b'Q', format!("delete from {t}\0").as_bytes()))
        .await;
    let m = raw.until_ready().await;
    assert_eq!(tags(&m), "EZ");
    assert_eq!(status(&m), Some('E'));
    raw.send(&msg(b'Q', b"rollback\0")).await;
    assert_eq!(status(&raw.until_ready().await), Some('I'));
}

/// Parse/Bind/Execute/Sync messages for `sql` on the unnamed statement and portal.
fn extended(statement: &str, sql: &str) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend(msg(b'P', format!("{statement}\0{sql}\0\0\0").as_bytes()));
    out.extend(msg(b'B', format!("\0{statement}\0\0\0\0\0\0\0").as_bytes()));
    out.extend(msg(b'E', b"\0\0\0\0\0"));
    out.extend(msg(b'S', b""));
    out
}

#[tokio::test]
async fn pipelined_statements_get_their_answers_in_order() {
    let proxy = guarded().await;
    let t = table().await;
    let mut raw = Raw::session(proxy.port).await;
    // Allowed, denied and allowed again, all sent before reading anything.
    let mut batch = extended("", "select 1");
    batch.extend(extended("", &format!("delete from {t}")));
    batch.extend(extended("", "select 2"));
    raw.send(&batch).await;
    let first = raw.until_ready().await;
    let second = raw.until_ready().await;
    let third = raw.until_ready().await;
    assert_eq!(tags(&first), "12DCZ");
    assert_eq!(
        tags(&second),
        "12EZ",
        "ParseComplete, BindComplete, the refusal"
    );
    assert_eq!(field(&second[2].1, b'C').as_deref(), Some("42501"));
    assert_eq!(tags(&third), "12DCZ");
    assert!(raw.quiet(200).await, "nothing more");
    assert_eq!(rows_in(&t).await, 3);

    // A refusal mid-segment makes the database skip the rest up to Sync, as any error does.
    let mut segment = Vec::new();
    segment.extend(msg(b'P', format!("\0delete from {t}\0\0\0").as_bytes()));
    segment.extend(msg(b'B', b"\0\0\0\0\0\0\0\0"));
    segment.extend(msg(b'E', b"\0\0\0\0\0"));
    segment.extend(msg(b'P', b"\0select 3\0\0\0"));
    segment.extend(msg(b'B', b"\0\0\0\0\0\0\0\0"));
    segment.extend(msg(b'E', b"\0\0\0\0\0"));
    segment.extend(msg(b'S', b""));
    raw.send(&segment).await;
    assert_eq!(tags(&raw.until_ready().await), "12EZ");
}

#[tokio::test]
async fn reusing_a_statement_name_cannot_launder_a_delete() {
    let proxy = guarded().await;
    let t = table().await;
    let mut raw = Raw::session(proxy.port).await;
    let parse = |sql: &str| msg(b'P', format!("s\0{sql}\0\0\0").as_bytes());
    raw.send(&parse(&format!("delete from {t}"))).await;
    raw.send(&msg(b'S', b"")).await;
    assert_eq!(tags(&raw.until_ready().await), "1Z");
    // The database refuses the second Parse (the name exists) and keeps the DELETE.
    raw.send(&parse("select 1")).await;
    raw.send(&msg(b'S', b"")).await;
    let m = raw.until_ready().await;
    assert_eq!(tags(&m), "EZ");
    assert_eq!(field(&m[0].1, b'C').as_deref(), Some("42P05"));
    // Running "s" is judged as what the database really holds.
    raw.send(&msg(b'B', b"\0s\0\0\0\0\0\0\0")).await;
    raw.send(&msg(b'E', b"\0\0\0\0\0")).await;
    raw.send(&msg(b'S', b"")).await;
    let m = raw.until_ready().await;
    assert_eq!(tags(&m), "2EZ");
    assert_eq!(field(&m[1].1, b'C').as_deref(), Some("42501"));
    assert_eq!(rows_in(&t).await, 3);
}

#[tokio::test]
async fn sql_level_prepare_and_execute_are_judged_as_what_runs() {
    let proxy = guarded().await;
    let t = table().await;
    let client = proxy.connect().await;
    client
        .batch_execute(&format!("prepare wipe as delete from {t}"))
        .await
        .expect("preparing is allowed");
    let e = client.batch_execute("execute wipe").await.unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    assert_eq!(rows_in(&t).await, 3);
    client
        .batch_execute(&format!(
            "prepare one(int) as delete from {t} where id = $1; execute one(2)"
        ))
        .await
        .unwrap();
    assert_eq!(rows_in(&t).await, 2);
}

/// `EXPLAIN (ANALYZE 0)` only plans; `EXPLAIN (ANALYZE 1)` runs the statement. The two
/// share a shape (numbers left out), and the classification cache answered for the second
/// with the first's: the DELETE ran. A value that decides what a statement does now keeps it
/// out of the cache; so does a condition that differs only in values (`id + 1 = id + 1`).
#[tokio::test]
async fn a_shape_cannot_stand_in_for_a_value_that_runs_a_statement() {
    let proxy = guarded().await;
    let t = table().await;
    let client = proxy.connect().await;
    for _ in 0..2 {
        client
            .batch_execute(&format!("explain (analyze 0) delete from {t}"))
            .await
            .expect("a plan only");
    }
    let e = client
        .batch_execute(&format!("explain (analyze 1) delete from {t}"))
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    assert_eq!(rows_in(&t).await, 3);
    let e = client
        .batch_execute(&format!("delete from {t} where id + 1 = id + 1"))
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    assert_eq!(rows_in(&t).await, 3);
}

#[tokio::test]
async fn a_function_call_message_is_held() {
    let proxy = guarded().await;
    let mut raw = Raw::session(proxy.port).await;
    // FunctionCall for OID 1299 (now()), no arguments, text result.
    let mut body = 1299i32.to_be_bytes().to_vec();
    body.extend([0, 0, 0, 0, 0, 0]);
    raw.send(&msg(b'F', &body)).await;
    let m = raw.until_ready().await;
    assert_eq!(tags(&m), "EZ");
    assert_eq!(field(&m[0].1, b'C').as_deref(), Some("42501"));
    assert!(
        field(&m[0].1, b'D')
            .unwrap_or_default()
            .contains("function_call_message")
    );
}

#[tokio::test]
async fn a_deny_rule_gives_its_own_message() {
    let (_dir, setup) = with_policy(
        "[defaults]\naction = \"allow\"\n\n\
         [[rule]]\nname = \"no-secrets\"\naction = \"deny\"\ntables = [\"guarded_*\"]\n\
         message = \"the guarded tables are off limits\"\n",
    );
    let proxy = setup.start().await;
    let t = table().await;
    let client = proxy.connect().await;
    let e = client
        .query(&format!("select * from {t}"), &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    let message = e.as_db_error().unwrap().message();
    assert!(
        message.contains("no-secrets") && message.contains("off limits"),
        "{message}"
    );
    assert_eq!(one_i32(&client, "select 5").await, 5);
}

#[tokio::test]
async fn groups_from_the_config_reach_the_policy() {
    let (_dir, setup) = with_policy(
        "[defaults]\naction = \"deny\"\n\n\
         [[rule]]\nname = \"dbas-may\"\naction = \"allow\"\ngroups = [\"dba\"]\n",
    );
    let t = table().await;
    for (groups, allowed) in [(vec![], false), (vec!["dba".to_owned()], true)] {
        let proxy = Setup {
            groups: groups.clone(),
            policy_dir: setup.policy_dir.clone(),
            ..Setup::default()
        }
        .start()
        .await;
        let client = proxy.connect().await;
        let r = client
            .simple_query(&format!("drop table if exists {t}_none"))
            .await;
        assert_eq!(r.is_ok(), allowed, "groups {groups:?}");
    }
}

#[tokio::test]
async fn a_session_that_touches_a_migration_table_is_a_migration_run() {
    let (_dir, setup) = with_policy(
        "[defaults]\naction = \"deny\"\n\n\
         [[rule]]\nname = \"reads\"\naction = \"allow\"\nkinds = [\"read\", \"transaction\"]\n\n\
         [[rule]]\nname = \"migrations\"\naction = \"allow\"\nmigration = [\"rails/golang-migrate\"]\n",
    );
    let proxy = setup.start().await;
    direct()
        .await
        .batch_execute("create table if not exists schema_migrations (version text primary key)")
        .await
        .unwrap();
    let t = unique("migrated");

    // Not a migration run: DDL is refused.
    let app = proxy.connect().await;
    let e = app
        .batch_execute(&format!("create table {t} (id int)"))
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501");

    // The migration tool reads its bookkeeping table first; from then on the session is its run.
    // The same DDL sent before that is refused, and the refusal the session remembers for the
    // statement's shape does not outlive the start of the run.
    let tool = proxy.connect().await;
    let e = tool
        .batch_execute(&format!("create table {t} (id int)"))
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    tool.query("select version from schema_migrations", &[])
        .await
        .unwrap();
    tool.batch_execute(&format!("create table {t} (id int)"))
        .await
        .expect("part of the migration run");
    tool.batch_execute(&format!("drop table {t}"))
        .await
        .unwrap();
    assert!(
        app.batch_execute(&format!("create table {t} (id int)"))
            .await
            .is_err(),
        "the other session is still not a migration run"
    );
}

#[tokio::test]
async fn backslash_tricks_fail_closed_once_standard_strings_are_off() {
    let (_dir, setup) = with_policy(
        "[defaults]\naction = \"allow\"\n\n\
         [[rule]]\nname = \"no-unknowns\"\naction = \"deny\"\nkinds = [\"unknown\"]\n",
    );
    let proxy = setup.start().await;
    let t = table().await;
    let client = proxy.connect().await;
    // Read with standard_conforming_strings on (as Airlock reads it), this is one SELECT of a
    // string; with it off, the string ends early and a DROP follows.
    let trick = format!("SELECT 'x\\''; DROP TABLE {t}; --'");
    let rows = client.simple_query(&trick).await.unwrap();
    assert!(
        !rows.is_empty(),
        "harmless while the server reads it as Airlock does"
    );
    client
        .batch_execute("set standard_conforming_strings = off")
        .await
        .unwrap();
    let e = client.simple_query(&trick).await.unwrap_err();
    assert_eq!(sqlstate(&e), "42501", "{}", text(&e));
    assert!(
        e.as_db_error()
            .unwrap()
            .detail()
            .unwrap_or("")
            .contains("nonstandard_strings"),
        "{}",
        text(&e)
    );
    assert_eq!(rows_in(&t).await, 3, "the table is still there");
    client
        .batch_execute("set standard_conforming_strings = on")
        .await
        .unwrap();
    client.simple_query(&trick).await.expect("back to normal");
}
