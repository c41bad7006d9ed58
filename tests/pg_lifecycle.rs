//! The `airlock` binary's life: `check-config` on the example, `passwd` and `dev-cert`, and a
//! SIGTERM that stops new connections while open sessions finish their work.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_airlock");

#[test]
fn check_config_accepts_the_example_and_names_bad_keys() {
    let out = Command::new(BIN)
        .args([
            "check-config",
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/airlock.example.toml"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[postgres]\nlisten = \"127.0.0.1:1\"\nlisten_port = 3\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("listen_port"), "{err}");
}

#[test]
fn passwd_makes_a_verifier_the_config_accepts() {
    let mut child = Command::new(BIN)
        .arg("passwd")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"s3cret-pass\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let verifier = String::from_utf8(out.stdout).unwrap();
    let v = airlock::auth::scram::ScramVerifier::parse(verifier.trim()).expect("a verifier");
    assert!(v.matches_password("s3cret-pass"));
    assert!(!verifier.contains("s3cret-pass"));
}

#[test]
fn dev_cert_writes_a_usable_pair() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["dev-cert", "--out-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    airlock::net::tls::ServerTls::load(&dir.path().join("cert.pem"), &dir.path().join("key.pem"))
        .unwrap();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o077,
        0,
        "the private key is readable by its owner only"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_accepting_and_lets_sessions_finish() {
    // pg_sleep is a finding under the default policy; this test is about shutdown.
    let setup = common::Setup {
        policy_dir: common::allow_all(),
        ..common::Setup::default()
    };
    let mut airlock =
        common::Binary::spawn(&setup, "\n[server]\nshutdown_grace_secs = 20\n", "warn");
    let client = airlock.connect().await;
    let conninfo = airlock.conninfo();
    let running = tokio::spawn(async move {
        let r = client
            .query_one("select pg_sleep(1), 'finished'", &[])
            .await;
        (r, client)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    Command::new("kill")
        .args(["-TERM", &airlock.child.id().to_string()])
        .status()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    assert!(
        tokio_postgres::connect(&conninfo, tokio_postgres::NoTls)
            .await
            .is_err(),
        "no new sessions after SIGTERM"
    );
    let (r, client) = running.await.unwrap();
    assert_eq!(
        r.unwrap().get::<_, &str>(1),
        "finished",
        "the open session's query completed"
    );
    drop(client);
    let mut status = None;
    for _ in 0..100 {
        status = airlock.child.try_wait().unwrap();
        if status.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        status
            .expect("airlock exits once its last session ends")
            .success()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_left_when_the_grace_runs_out_are_told_57p01() {
    use common::raw::{Raw, field};
    let proxy = common::Proxy::start().await;
    let mut idle = Raw::session(proxy.port).await;
    let left = proxy.running.shutdown(Duration::from_millis(300)).await;
    assert_eq!(left, 1, "the idle session outlived the grace");
    let (tag, body) = idle.message().await.expect("a goodbye before the close");
    assert_eq!(tag, b'E');
    assert_eq!(field(&body, b'C').as_deref(), Some("57P01"));
    assert_eq!(field(&body, b'S').as_deref(), Some("FATAL"));
    assert!(idle.message().await.is_none(), "then the connection closes");
}

#[test]
fn policy_check_explains_a_decision() {
    let out = Command::new(BIN)
        .args(["policy", "check", "--policy-dir"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/policies"))
        .args(["--as", "app", "select 1; truncate audit_log"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("finding:     truncate"), "{text}");
    assert!(text.contains("overall:       review by dba"), "{text}");

    let out = Command::new(BIN)
        .args([
            "policy",
            "check",
            "--policy-dir",
            "/nonexistent-policies",
            "--as",
            "app",
            "select 1",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent-policies"));
}

/// Runs `airlock policy test` on a policy directory and its cases; returns its summary line.
fn policy_test(policy_dir: &str, cases_dir: &str) -> String {
    let out = Command::new(BIN)
        .args([
            "policy",
            "test",
            "--policy-dir",
            policy_dir,
            "--cases-dir",
            cases_dir,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.trim_end()
        .lines()
        .last()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn policy_test_runs_the_shipped_cases() {
    let root = env!("CARGO_MANIFEST_DIR");
    let summary = policy_test(
        &format!("{root}/policies"),
        &format!("{root}/policies/cases"),
    );
    assert_eq!(summary, "19 passed, 0 failed");
}

#[test]
fn policy_test_runs_the_production_example_cases() {
    let dir = format!(
        "{}/policies/examples/production",
        env!("CARGO_MANIFEST_DIR")
    );
    let summary = policy_test(&dir, &format!("{dir}/cases"));
    assert_eq!(summary, "15 passed, 0 failed");
}
