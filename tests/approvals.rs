//! Statements held inside live sessions until an approver decides, through both listeners,
//! with real clients (tokio-postgres, psql, mysql_async), the real databases, the admin API
//! over HTTP and the `airlock approvals` command.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;

use common::mysql::{code as my_code, direct as my_direct, message as my_message, opts};
use common::{Proxy, Setup, USER, sqlstate, text, unique};
use mysql_async::prelude::*;
use serde_json::Value;

const POLICY: &str = r#"
[defaults]
action = "allow"

[[rule]]
name = "ddl-needs-a-dba"
action = "review"
kinds = ["ddl"]
approvers = ["dba"]
message = "schema changes need a DBA"
timeout_secs = 60

[[rule]]
name = "truncate-needs-two"
action = "review"
findings = ["truncate"]
approvers = ["dba"]
approvals = 2

[[rule]]
name = "bulk-delete-escalates"
action = "review"
findings = ["delete_without_where"]
approvers = ["dba"]
timeout_secs = 1
on_timeout = { escalate = { approvers = ["oncall"], timeout_secs = 60 } }

[[rule]]
name = "bulk-update-times-out"
action = "review"
findings = ["update_without_where"]
approvers = ["dba"]
timeout_secs = 1

[[rule]]
name = "probe-reads-need-a-dba"
action = "review"
tables = ["approval_probe*"]
approvers = ["dba"]
"#;

/// Approvers and their tokens. "app" is also the test's database user: it may approve
/// others' statements but never its own.
const APPROVERS: [(&str, &str, &str); 4] = [
    ("alice", "dba", "token-alice-0123456789"),
    ("bob", "dba", "token-bob-0123456789"),
    ("carol", "oncall", "token-carol-0123456789"),
    ("app", "dba", "token-app-0123456789"),
];

fn token(name: &str) -> &'static str {
    APPROVERS.iter().find(|a| a.0 == name).unwrap().2
}

struct Env {
    proxy: Proxy,
    _policy: tempfile::TempDir,
    state: tempfile::TempDir,
    hooks: Hooks,
}

/// A webhook receiver: an HTTP server of the test's own that records what it is sent, by
/// path. `/flaky` fails its first request, so the notice arrives only by a retry.
#[derive(Clone, Default)]
struct Hooks {
    seen: Arc<Mutex<Vec<(String, Value)>>>,
    flaky_failed: Arc<AtomicBool>,
}

impl Hooks {
    async fn start(&self) -> u16 {
        let app = axum::Router::new()
            .route("/{kind}", axum::routing::post(receive))
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        port
    }

    /// Waits (bounded) until `kind` has received something `matches` accepts.
    async fn wait_for(&self, kind: &str, matches: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..200 {
            let found = self
                .seen
                .lock()
                .unwrap()
                .iter()
                .find(|(k, v)| k == kind && matches(v))
                .map(|(_, v)| v.clone());
            if let Some(v) = found {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let seen = self.seen.lock().unwrap().clone();
        panic!("webhook {kind} received nothing matching; got {seen:?}");
    }
}

async fn receive(
    State(hooks): State<Hooks>,
    Path(kind): Path<String>,
    axum::Json(body): axum::Json<Value>,
) -> StatusCode {
    if kind == "flaky" && !hooks.flaky_failed.swap(true, Ordering::SeqCst) {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    hooks.seen.lock().unwrap().push((kind, body));
    StatusCode::OK
}

impl Env {
    async fn start() -> Env {
        Self::start_in(tempfile::tempdir().unwrap()).await
    }

    async fn start_in(state: tempfile::TempDir) -> Env {
        let policy = tempfile::tempdir().unwrap();
        std::fs::write(policy.path().join("policy.toml"), POLICY).unwrap();
        let hooks = Hooks::default();
        let hook_port = hooks.start().await;
        let mut extra = format!(
            "[state]\ndir = {:?}\n[admin]\nlisten = \"127.0.0.1:0\"\n",
            state.path().display().to_string()
        );
        // A receiver for each format, one that fails once, and one that is never there: a
        // failing hook must not hold anything up.
        for (path, format) in [("json", "json"), ("slack", "slack"), ("flaky", "json")] {
            extra.push_str(&format!(
                "[[webhooks]]\nurl = \"http://127.0.0.1:{hook_port}/{path}\"\nformat = \"{format}\"\n"
            ));
        }
        extra.push_str("[[webhooks]]\nurl = \"http://127.0.0.1:1/nobody\"\n");
        for (name, group, token) in APPROVERS {
            let hash = common::token_sha256(token);
            extra.push_str(&format!(
                "[[approvers]]\nname = \"{name}\"\ngroups = [\"{group}\"]\ntoken_sha256 = \"{hash}\"\n"
            ));
        }
        let proxy = Setup {
            policy_dir: Some(policy.path().to_owned()),
            mysql: true,
            extra,
            ..Setup::default()
        }
        .start()
        .await;
        Env {
            proxy,
            _policy: policy,
            state,
            hooks,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.proxy.admin_port.unwrap())
    }

    /// The admin API, as `who`: (HTTP status, JSON body).
    async fn api(&self, who: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}{path}", self.url());
        let auth = format!("Bearer {}", token(who));
        let method = method.to_owned();
        tokio::task::spawn_blocking(move || {
            let agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .new_agent();
            let response = match (method.as_str(), body) {
                ("POST", Some(b)) => agent.post(&url).header("Authorization", &auth).send_json(b),
                ("POST", None) => agent.post(&url).header("Authorization", &auth).send_empty(),
                _ => agent.get(&url).header("Authorization", &auth).call(),
            };
            let mut response = response.unwrap();
            let status = response.status().as_u16();
            (status, response.body_mut().read_json().unwrap())
        })
        .await
        .unwrap()
    }

    /// The `airlock approvals` command as `who`.
    fn cli(&self, who: &str, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_airlock"))
            .arg("approvals")
            .args(args)
            .env("AIRLOCK_ADMIN_URL", self.url())
            .env("AIRLOCK_TOKEN", token(who))
            .output()
            .unwrap()
    }

    /// Waits (bounded) for an open ticket holding exactly `statement`; returns its id.
    async fn ticket_for(&self, statement: &str) -> i64 {
        for _ in 0..200 {
            let (_, v) = self.api("alice", "GET", "/api/approvals", None).await;
            let found = v["tickets"].as_array().unwrap().iter().find(|t| {
                t["statement"] == statement
                    && matches!(t["state"].as_str(), Some("pending" | "escalated"))
            });
            if let Some(t) = found {
                return t["id"].as_i64().unwrap();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no open ticket for {statement:?}");
    }

    /// psql running `sql` through Airlock, to be spawned.
    fn psql(&self, sql: &str) -> tokio::process::Command {
        let mut psql = tokio::process::Command::new("psql");
        psql.args(["-h", "127.0.0.1", "-p", &self.proxy.port.to_string()])
            .args(["-U", USER, "-d", "test", "-c", sql])
            .env("PGPASSWORD", common::PASSWORD);
        psql
    }

    /// `who` approves ticket `id` (this statement only): the status and the body.
    async fn approve(&self, who: &str, id: i64) -> (u16, Value) {
        let path = format!("/api/approvals/{id}/approve");
        self.api(who, "POST", &path, None).await
    }

    /// `who` denies ticket `id` for `reason`.
    async fn deny(&self, who: &str, id: i64, reason: &str) -> (u16, Value) {
        let path = format!("/api/approvals/{id}/deny");
        let body = serde_json::json!({ "reason": reason });
        self.api(who, "POST", &path, Some(body)).await
    }

    /// Waits (bounded) until ticket `id` is in `state`.
    async fn wait_state(&self, id: i64, state: &str) {
        for _ in 0..100 {
            if self.state_of(id).await == state {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(self.state_of(id).await, state, "ticket {id}");
    }

    async fn state_of(&self, id: i64) -> String {
        let (_, v) = self
            .api("alice", "GET", &format!("/api/approvals/{id}"), None)
            .await;
        v["ticket"]["state"].as_str().unwrap().to_owned()
    }
}

/// A direct connection to PostgreSQL, to set up and observe from the side.
async fn pg_direct() -> tokio_postgres::Client {
    common::connect_plain("host=127.0.0.1 port=5432 user=postgres dbname=test").await
}

async fn table_exists(name: &str) -> bool {
    let db = pg_direct().await;
    let row = db
        .query_one("select to_regclass($1) is not null", &[&name])
        .await
        .unwrap();
    row.get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_then_approved_with_the_cli_and_the_client_gets_its_result() {
    let env = Env::start().await;
    let t = unique("held");
    let sql = format!("create table {t} (id int)");

    // psql, to see the notice a held statement's client is given at once.
    let mut psql = env.psql(&sql);
    let waiting = tokio::spawn(async move { psql.output().await });
    let id = env.ticket_for(&sql).await;
    assert!(!table_exists(&t).await, "nothing runs while it is held");

    let shown = env.cli("bob", &["show", &id.to_string()]);
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.contains(&sql) && shown.contains("ddl-needs-a-dba"),
        "{shown}"
    );
    let listed = env.cli("bob", &["list", "--state", "pending"]);
    assert!(String::from_utf8_lossy(&listed.stdout).contains(&t));

    let approved = env.cli("alice", &["approve", &id.to_string()]);
    assert!(
        approved.status.success(),
        "{}",
        String::from_utf8_lossy(&approved.stderr)
    );
    let out = waiting.await.unwrap().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "CREATE TABLE");
    assert!(
        stderr.contains(&format!(
            "NOTICE:  held for approval: ticket {id}, approvers dba"
        )),
        "{stderr}"
    );
    assert!(table_exists(&t).await);
    assert_eq!(env.state_of(id).await, "approved");

    // The history names who did what.
    let (_, v) = env
        .api("bob", "GET", &format!("/api/approvals/{id}"), None)
        .await;
    let events: Vec<(&str, &str)> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap(),
                e["actor"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(events, [("created", ""), ("approved", "alice")]);

    // The webhooks heard of it: JSON with the ticket, Slack text with the command to approve,
    // and the flaky receiver by a retry.
    let is = |event: &'static str| move |v: &Value| v["event"] == event && v["ticket"]["id"] == id;
    let created = env.hooks.wait_for("json", is("created")).await;
    assert_eq!(created["ticket"]["statement"], sql.as_str());
    assert_eq!(created["ticket"]["rule"], "ddl-needs-a-dba");
    env.hooks.wait_for("json", is("approved")).await;
    let approve = format!("airlock approvals approve {id}");
    let slack = env
        .hooks
        .wait_for("slack", |v| {
            v["text"].as_str().is_some_and(|t| t.contains(&approve))
        })
        .await;
    assert!(slack["text"].as_str().unwrap().contains(&sql));
    env.hooks.wait_for("flaky", is("approved")).await;

    // The audit trail's transcript of the session: the statement, its ticket, who approved
    // it, that the approved statement is the one that ran, and how it ended.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let sessions =
        airlock::audit::sessions::sessions(airlock::audit::records(env.state.path()).unwrap());
    let key = sessions
        .iter()
        .find(|(_, s)| {
            s.steps.iter().any(|st| {
                matches!(&st.statement, airlock::audit::Event::Statement { text, .. } if *text == sql)
            })
        })
        .map(|(k, _)| k.to_string())
        .expect("the held statement's session is in the trail");
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_airlock"))
            .args([
                "sessions",
                "--state-dir",
                env.state.path().to_str().unwrap(),
            ])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    assert!(cli(&["list"]).contains(&key));
    let transcript = cli(&["show", &key]);
    for expected in [
        "review by rule ddl-needs-a-dba".to_owned(),
        sql.clone(),
        format!("ticket {id} created"),
        format!("ticket {id} approved by alice"),
        "-> ran".to_owned(),
    ] {
        assert!(
            transcript.contains(&expected),
            "{expected:?} not in:\n{transcript}"
        );
    }
    let line = transcript
        .lines()
        .find(|l| l.contains("approved sha256"))
        .unwrap_or_else(|| panic!("{transcript}"));
    assert!(line.contains(" == "), "{line}");
    let replayed = cli(&["replay", &key, "--speed", "100"]);
    assert_eq!(replayed, transcript);
    let db = pg_direct().await;
    db.batch_execute(&format!("drop table {t}")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_with_a_reason_and_the_session_carries_on() {
    let env = Env::start().await;
    let t = unique("denied");
    let sql = format!("create table {t} (id int)");
    let client = env.proxy.connect().await;
    let held = {
        let sql = sql.clone();
        tokio::spawn(async move {
            let r = client.batch_execute(&sql).await;
            (client, r)
        })
    };
    let id = env.ticket_for(&sql).await;

    // A reason is required; the requester cannot decide; nor can someone outside the group.
    let (status, _) = env
        .api("alice", "POST", &format!("/api/approvals/{id}/deny"), None)
        .await;
    assert_eq!(status, 400);
    let (status, v) = env.approve("app", id).await;
    assert_eq!(status, 403, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("asked for this statement")
    );
    let (status, _) = env.approve("carol", id).await;
    assert_eq!(status, 403);
    let denied = env.cli(
        "alice",
        &["deny", &id.to_string(), "--reason", "not during the freeze"],
    );
    assert!(
        denied.status.success(),
        "{}",
        String::from_utf8_lossy(&denied.stderr)
    );

    let (client, result) = held.await.unwrap();
    let e = result.unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    assert!(
        text(&e).contains("alice denied this statement"),
        "{}",
        text(&e)
    );
    assert!(text(&e).contains("not during the freeze"));
    assert!(!table_exists(&t).await);
    // Decided is decided.
    let (status, _) = env.approve("bob", id).await;
    assert_eq!(status, 409);
    let one: i32 = client.query_one("select 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
}

/// The outcome the audit trail holds for the statement with `text`: (ran, error), once
/// recorded.
async fn outcome_of(env: &Env, text: &str) -> (bool, Option<String>) {
    use airlock::audit::Event;
    for _ in 0..100 {
        let events: Vec<Event> = airlock::audit::records(env.state.path())
            .unwrap()
            .iter()
            .map(|r| serde_json::from_str(&r.event).unwrap())
            .collect();
        let outcome = events.iter().find_map(|e| match e {
            Event::Statement {
                text: t,
                outcome: Some(o),
                ..
            } if t == text => Some((o.ran, o.error.clone())),
            _ => None,
        });
        if let Some(outcome) = outcome {
            return outcome;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no outcome recorded for {text}");
}

/// The trail tells Airlock's refusal from the database's own error, whatever its SQLSTATE:
/// an approved statement that fails with 34000 (the code the database gives a refused
/// statement's substitute) ran and failed; a denied one was refused and did not run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trail_tells_a_refusal_from_an_approved_statement_that_failed() {
    let env = Env::start().await;
    let f = unique("raise_34000");
    let db = pg_direct().await;
    db.batch_execute(&format!(
        "create function {f}() returns int language plpgsql as \
         $$ begin raise exception 'no such cursor' using errcode = '34000'; end $$"
    ))
    .await
    .unwrap();
    let client = env.proxy.connect().await;

    let t = unique("approved_fails");
    let approved = format!("create table {t} as select {f}()");
    let run = |sql: String, client: tokio_postgres::Client| {
        tokio::spawn(async move {
            let r = client.batch_execute(&sql).await;
            (client, r)
        })
    };
    let held = run(approved.clone(), client);
    let id = env.ticket_for(&approved).await;
    assert_eq!(env.approve("alice", id).await.0, 200);
    let (client, result) = held.await.unwrap();
    assert_eq!(sqlstate(&result.unwrap_err()), "34000");
    assert_eq!(
        outcome_of(&env, &approved).await,
        (true, Some("34000".into()))
    );

    let denied = format!("create table {t}_denied (id int)");
    let held = run(denied.clone(), client);
    let id = env.ticket_for(&denied).await;
    let out = env.cli("alice", &["deny", &id.to_string(), "--reason", "no"]);
    assert!(out.status.success());
    let (_, result) = held.await.unwrap();
    assert_eq!(sqlstate(&result.unwrap_err()), "42501");
    assert_eq!(
        outcome_of(&env, &denied).await,
        (false, Some("refused by Airlock".into()))
    );
    db.batch_execute(&format!("drop function {f}"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_denies_and_an_escalation_goes_to_the_second_group() {
    let env = Env::start().await;
    let t = unique("timeouts");
    let db = pg_direct().await;
    db.batch_execute(&format!(
        "create table {t} (id int); insert into {t} values (1), (2)"
    ))
    .await
    .unwrap();

    // No escalation: denied once the deadline passes.
    let client = env.proxy.connect().await;
    let e = client
        .batch_execute(&format!("update {t} set id = 0"))
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    assert!(text(&e).contains("timed out"), "{}", text(&e));

    // Escalated after a second, then only the second group decides.
    let sql = format!("delete from {t}");
    let held = {
        let sql = sql.clone();
        tokio::spawn(async move { client.execute(&sql, &[]).await })
    };
    let id = env.ticket_for(&sql).await;
    env.wait_state(id, "escalated").await;
    env.hooks
        .wait_for("json", |v| {
            v["event"] == "escalated" && v["ticket"]["id"] == id
        })
        .await;
    let (status, _) = env.approve("alice", id).await;
    assert_eq!(status, 403, "the first stage's group no longer decides");
    let (status, v) = env.approve("carol", id).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        held.await.unwrap().unwrap(),
        2,
        "the delete ran and removed both rows"
    );
    db.batch_execute(&format!("drop table {t}")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_distinct_approvals_for_a_rule_that_needs_two() {
    let env = Env::start().await;
    let t = unique("two");
    let db = pg_direct().await;
    db.batch_execute(&format!(
        "create table {t} (id int); insert into {t} values (1)"
    ))
    .await
    .unwrap();
    let client = env.proxy.connect().await;
    let sql = format!("truncate {t}");

    // An approver's tool waits for changes instead of polling: it is woken by the hold.
    let (_, v) = env
        .api(
            "bob",
            "GET",
            "/api/approvals/changes?since=0&wait_secs=0",
            None,
        )
        .await;
    let version = v["version"].as_u64().unwrap();
    let waiter = {
        let path = format!("/api/approvals/changes?since={version}&wait_secs=60");
        let env_url = env.url();
        tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let mut response = ureq::get(format!("{env_url}{path}"))
                .header("Authorization", format!("Bearer {}", token("bob")))
                .call()
                .unwrap();
            let body: Value = response.body_mut().read_json().unwrap();
            (body, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let held = {
        let sql = sql.clone();
        tokio::spawn(async move { client.batch_execute(&sql).await })
    };
    let id = env.ticket_for(&sql).await;
    let (changed, waited) = waiter.await.unwrap();
    assert!(changed["version"].as_u64().unwrap() > version);
    assert!(
        waited < Duration::from_secs(30),
        "woken by the change, not the timeout"
    );
    assert!(
        changed["tickets"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == id),
        "{changed}"
    );
    let (status, v) = env.approve("alice", id).await;
    assert_eq!(
        (status, v["ticket"]["state"].as_str()),
        (200, Some("pending"))
    );
    let (status, _) = env.approve("alice", id).await;
    assert_eq!(status, 409, "the same approver twice is one approval");
    let rows: i64 = db
        .query_one(&format!("select count(*) from {t}"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 1, "one approval of two runs nothing");
    let (status, _) = env.approve("bob", id).await;
    assert_eq!(status, 200);
    held.await.unwrap().unwrap();
    let rows: i64 = db
        .query_one(&format!("select count(*) from {t}"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 0);
    db.batch_execute(&format!("drop table {t}")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_abandons_its_ticket_and_the_statement_never_runs() {
    let env = Env::start().await;
    let t = unique("abandoned");
    let sql = format!("create table {t} (id int)");
    let mut psql = env
        .psql(&sql)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let id = env.ticket_for(&sql).await;
    psql.kill().await.unwrap();
    env.wait_state(id, "abandoned").await;
    env.hooks
        .wait_for("json", |v| {
            v["event"] == "abandoned" && v["ticket"]["id"] == id
        })
        .await;
    let (status, _) = env.approve("alice", id).await;
    assert_eq!(status, 409);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!table_exists(&t).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_request_withdraws_a_held_statement() {
    let env = Env::start().await;
    let t = unique("cancelled");
    let sql = format!("create table {t} (id int)");
    let client = env.proxy.connect().await;
    let cancel = client.cancel_token();
    let held = {
        let sql = sql.clone();
        tokio::spawn(async move {
            let r = client.batch_execute(&sql).await;
            (client, r)
        })
    };
    let id = env.ticket_for(&sql).await;
    cancel.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let (client, r) = held.await.unwrap();
    let e = r.unwrap_err();
    assert_eq!(sqlstate(&e), "57014", "{}", text(&e));
    assert_eq!(env.state_of(id).await, "abandoned");
    let one: i32 = client.query_one("select 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1, "the session carries on");
    assert!(!table_exists(&t).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tickets_open_when_airlock_stopped_are_abandoned_at_the_next_start() {
    use airlock::approval::store::{SqliteStore, TicketStore};
    let state = tempfile::tempdir().unwrap();
    // A ticket left open by an Airlock that was killed.
    let id = {
        let store = SqliteStore::open(state.path()).unwrap();
        let request: airlock::approval::ticket::Request = serde_json::from_value(serde_json::json!({
            "requester": "app", "groups": [], "client_addr": "127.0.0.1:1", "listener": "postgres",
            "database": "test", "statement": "drop table important", "kind": "ddl",
            "findings": ["drop"], "rule": "ddl-needs-a-dba", "message": null,
            "approvers": ["dba"], "required": 1, "timeout_secs": 900, "escalation": null
        }))
        .unwrap();
        store.create(&request, 100, 1000).unwrap().id
    };
    let env = Env::start_in(state).await;
    assert_eq!(env.state_of(id).await, "abandoned");
    let (status, _) = env.approve("alice", id).await;
    assert_eq!(status, 409);
    assert!(env.state.path().join("airlock.db").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_held_statements_are_approved_or_denied_with_1142() {
    let env = Env::start().await;
    let port = env.proxy.mysql_port.unwrap();
    let t = unique("my_held");

    let sql = format!("create table {t} (id int)");
    let mut conn = mysql_async::Conn::new(opts(port)).await.unwrap();
    let held = {
        let sql = sql.clone();
        tokio::spawn(async move {
            let r = conn.query_drop(&sql).await;
            (conn, r)
        })
    };
    let id = env.ticket_for(&sql).await;
    let (status, v) = env.approve("alice", id).await;
    assert_eq!(status, 200, "{v}");
    let (mut conn, r) = held.await.unwrap();
    r.unwrap();
    let mut db = my_direct().await;
    let n: Option<i64> = db
        .query_first(format!(
            "select count(*) from information_schema.tables where table_name = '{t}'"
        ))
        .await
        .unwrap();
    assert_eq!(n, Some(1));

    let drop = format!("drop table {t}");
    let held = {
        let drop = drop.clone();
        tokio::spawn(async move {
            let r = conn.query_drop(&drop).await;
            (conn, r)
        })
    };
    let id = env.ticket_for(&drop).await;
    let (status, _) = env.deny("bob", id, "keep it").await;
    assert_eq!(status, 200);
    let (mut conn, r) = held.await.unwrap();
    let e = r.unwrap_err();
    assert_eq!(my_code(&e), 1142);
    assert!(
        my_message(&e).contains("bob denied this statement"),
        "{}",
        my_message(&e)
    );
    let one: Option<i32> = conn.query_first("select 1").await.unwrap();
    assert_eq!(one, Some(1), "the session carries on");
    db.query_drop(&drop).await.unwrap();
}

/// A hundred sessions each holding a statement, half on each listener (PostgreSQL's default
/// of 100 connections leaves no room for a hundred on one alongside the other tests).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_held_statements_approved_in_random_order_each_get_their_own_result() {
    let env = Env::start().await;
    let probe = unique("approval_probe");
    let db = pg_direct().await;
    db.batch_execute(&format!(
        "create table {probe} (n int); insert into {probe} values (1000)"
    ))
    .await
    .unwrap();
    let mut my = my_direct().await;
    my.query_drop(format!(
        "create table {probe} (n int); insert into {probe} values (1000)"
    ))
    .await
    .unwrap();
    let sql = |i: i32| format!("select n + {i} from {probe}");
    let mut waiting = Vec::new();
    for i in 0..100 {
        let sql = sql(i);
        if i % 2 == 0 {
            let client = env.proxy.connect().await;
            waiting.push(tokio::spawn(async move {
                client.query_one(&sql, &[]).await.unwrap().get::<_, i32>(0) as i64
            }));
        } else {
            let mut conn = mysql_async::Conn::new(opts(env.proxy.mysql_port.unwrap()))
                .await
                .unwrap();
            waiting.push(tokio::spawn(async move {
                let n: Option<i64> = conn.query_first(&sql).await.unwrap();
                n.unwrap()
            }));
        }
    }
    let mut ids = Vec::new();
    for i in 0..100 {
        ids.push(env.ticket_for(&sql(i)).await);
    }
    // A fixed shuffle, so that a failure repeats.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for k in (1..ids.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        ids.swap(k, (x % (k as u64 + 1)) as usize);
    }
    for &id in &ids {
        let (status, v) = env.approve("alice", id).await;
        assert_eq!(status, 200, "{v}");
    }
    for (i, task) in waiting.into_iter().enumerate() {
        assert_eq!(task.await.unwrap(), 1000 + i as i64);
    }
    db.batch_execute(&format!("drop table {probe}"))
        .await
        .unwrap();
    my.query_drop(format!("drop table {probe}")).await.unwrap();
}

/// An Alembic migration run through Airlock, approved once with the session's scope: its
/// first schema change waits for a DBA, and the rest of the run passes under that approval,
/// each statement still recorded as a ticket approved within its scope.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alembic_run_approved_once_for_the_session() {
    let env = Env::start().await;
    let prefix = unique("alembic");
    let db = pg_direct().await;
    db.batch_execute("drop table if exists alembic_version")
        .await
        .unwrap();
    let project = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/alembic_run");
    let url = format!(
        "postgresql+psycopg://{USER}:{}@127.0.0.1:{}/test",
        common::PASSWORD,
        env.proxy.port
    );
    let alembic = tokio::process::Command::new(common::python())
        .args(["-m", "alembic", "-c"])
        .arg(project.join("alembic.ini"))
        .args(["upgrade", "head"])
        .env("AIRLOCK_TEST_DB_URL", &url)
        .env("AIRLOCK_TEST_PREFIX", &prefix)
        .kill_on_drop(true)
        .output();
    let run = tokio::spawn(alembic);

    // The first schema change holds the run.
    let mut first = None;
    for _ in 0..200 {
        let (_, v) = env
            .api("alice", "GET", "/api/approvals?state=pending", None)
            .await;
        first = v["tickets"].as_array().unwrap().iter().find_map(|t| {
            let s = t["statement"].as_str().unwrap_or("");
            s.contains("alembic_version")
                .then(|| t["id"].as_i64().unwrap())
        });
        if first.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let first = first.expect("Alembic's first schema change is held");
    let approved = env.cli(
        "alice",
        &["approve", &first.to_string(), "--scope", "session"],
    );
    assert!(
        approved.status.success(),
        "{}",
        String::from_utf8_lossy(&approved.stderr)
    );
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the run finishes once approved")
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "alembic failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(table_exists(&format!("{prefix}_accounts")).await);
    assert!(table_exists(&format!("{prefix}_events")).await);

    // Every later schema change of the run has its own ticket, approved within the scope.
    let (_, v) = env
        .api("alice", "GET", "/api/approvals?state=approved", None)
        .await;
    let within: Vec<&Value> = v["tickets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| {
            t["statement"]
                .as_str()
                .unwrap_or("")
                .contains(prefix.as_str())
        })
        .collect();
    assert!(within.len() >= 3, "{within:?}");
    for t in &within {
        assert_eq!(
            t["reason"].as_str(),
            Some(format!("within the scope of ticket {first}").as_str())
        );
        assert_eq!(t["decided_by"], "alice");
    }
    let (_, v) = env
        .api("alice", "GET", "/api/approvals?state=pending", None)
        .await;
    assert_eq!(
        v["tickets"].as_array().unwrap().len(),
        0,
        "nothing else waits"
    );

    // Another session is not covered by that approval.
    let other = env.proxy.connect().await;
    let sql = format!("drop table {prefix}_events");
    let held = {
        let sql = sql.clone();
        tokio::spawn(async move { other.batch_execute(&sql).await })
    };
    let id = env.ticket_for(&sql).await;
    let (status, _) = env.deny("bob", id, "not yet").await;
    assert_eq!(status, 200);
    assert_eq!(sqlstate(&held.await.unwrap().unwrap_err()), "42501");
    db.batch_execute(&format!(
        "drop table {prefix}_events; drop table {prefix}_accounts; drop table alembic_version"
    ))
    .await
    .unwrap();
}

/// A held Execute's ticket carries the parameters the client bound (tokio-postgres binds in
/// binary: shown as hex), and the approval runs exactly that portal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_execute_shows_its_parameters() {
    let env = Env::start().await;
    let probe = unique("approval_probe");
    let db = pg_direct().await;
    db.batch_execute(&format!(
        "create table {probe} (n int); insert into {probe} values (1000)"
    ))
    .await
    .unwrap();
    let client = env.proxy.connect().await;
    let sql = format!("select n + $1 from {probe}");
    let held = {
        let sql = sql.clone();
        tokio::spawn(async move {
            let row = client.query_one(&sql, &[&7i32]).await.unwrap();
            row.get::<_, i32>(0)
        })
    };
    let id = env.ticket_for(&sql).await;
    let (_, v) = env
        .api("alice", "GET", &format!("/api/approvals/{id}"), None)
        .await;
    assert_eq!(v["ticket"]["params"], serde_json::json!(["\\x00000007"]));
    let shown = env.cli("bob", &["show", &id.to_string()]);
    assert!(
        String::from_utf8_lossy(&shown.stdout).contains("$1 = \\x00000007"),
        "{}",
        String::from_utf8_lossy(&shown.stdout)
    );
    let (status, _) = env.approve("alice", id).await;
    assert_eq!(status, 200);
    assert_eq!(held.await.unwrap(), 1007);
    db.batch_execute(&format!("drop table {probe}"))
        .await
        .unwrap();
}

/// The MySQL listener's side of timeouts, disconnects and KILL QUERY on a held statement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_timeouts_disconnects_and_kill_query_end_a_hold() {
    let env = Env::start().await;
    let port = env.proxy.mysql_port.unwrap();
    let t = unique("my_holds");
    let mut my = my_direct().await;
    my.query_drop(format!(
        "create table {t} (id int); insert into {t} values (1), (2)"
    ))
    .await
    .unwrap();

    // Timed out: 1142 saying so, and the rows are untouched.
    let mut conn = mysql_async::Conn::new(opts(port)).await.unwrap();
    let e = conn
        .query_drop(format!("update {t} set id = 0"))
        .await
        .unwrap_err();
    assert_eq!(my_code(&e), 1142);
    assert!(my_message(&e).contains("timed out"), "{}", my_message(&e));

    // KILL QUERY from the user's other connection withdraws the held statement (1317), and
    // the session carries on.
    let airlock_id = conn.id();
    let sql = format!("create table {t}_k (id int)");
    let held = {
        let sql = sql.clone();
        tokio::spawn(async move {
            let r = conn.query_drop(&sql).await;
            (conn, r)
        })
    };
    let id = env.ticket_for(&sql).await;
    let mut other = mysql_async::Conn::new(opts(port)).await.unwrap();
    other
        .query_drop(format!("KILL QUERY {airlock_id}"))
        .await
        .unwrap();
    let (mut conn, r) = held.await.unwrap();
    assert_eq!(my_code(&r.unwrap_err()), 1317);
    assert_eq!(env.state_of(id).await, "abandoned");
    let one: Option<i32> = conn.query_first("select 1").await.unwrap();
    assert_eq!(one, Some(1));

    // A client that disconnects abandons its ticket.
    let sql = format!("create table {t}_d (id int)");
    let held = {
        let sql = sql.clone();
        tokio::spawn(async move { conn.query_drop(&sql).await })
    };
    let id = env.ticket_for(&sql).await;
    held.abort();
    env.wait_state(id, "abandoned").await;
    let n: Option<i64> = my
        .query_first(format!(
            "select count(*) from information_schema.tables where table_name in ('{t}_k', '{t}_d')"
        ))
        .await
        .unwrap();
    assert_eq!(n, Some(0), "neither held statement ran");
    my.query_drop(format!("drop table {t}")).await.unwrap();
}

/// A held COM_STMT_EXECUTE's ticket shows the values it would run with, read from the binary
/// protocol, and the approval runs exactly that command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_mysql_execute_shows_its_parameters() {
    let env = Env::start().await;
    let probe = unique("approval_probe");
    let mut my = my_direct().await;
    my.query_drop(format!(
        "create table {probe} (n int); insert into {probe} values (1000)"
    ))
    .await
    .unwrap();
    let mut conn = mysql_async::Conn::new(opts(env.proxy.mysql_port.unwrap()))
        .await
        .unwrap();
    let sql = format!("select n + ? from {probe} where ? <> ''");
    let held = {
        let sql = sql.clone();
        tokio::spawn(async move {
            let n: Option<i64> = conn.exec_first(&sql, (7, "it's")).await.unwrap();
            n
        })
    };
    let id = env.ticket_for(&sql).await;
    let (_, v) = env
        .api("alice", "GET", &format!("/api/approvals/{id}"), None)
        .await;
    assert_eq!(v["ticket"]["params"], serde_json::json!(["7", "'it\\'s'"]));
    let (status, _) = env.approve("alice", id).await;
    assert_eq!(status, 200);
    assert_eq!(held.await.unwrap(), Some(1007));
    my.query_drop(format!("drop table {probe}")).await.unwrap();
}
