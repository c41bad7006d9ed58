//! sysbench through Airlock's MySQL listener, with the shipped default policy: `oltp_read_only`
//! with zero errors, and `oltp_read_write` completing with only the deadlocks MariaDB itself
//! reports (sysbench retries 1213/1205 and stops at any other error), compared with the same
//! run made directly.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{PASSWORD, Setup, USER};

const DB: &str = "airlock_sysbench";

fn sysbench(workload: &str, port: u16, user: &str, password: &str, phase: &str) -> String {
    let out = Command::new("sysbench")
        .arg(workload)
        .args(["--tables=1", "--table-size=2000", "--threads=4", "--time=4"])
        .args([
            "--db-driver=mysql",
            "--mysql-host=127.0.0.1",
            "--mysql-ssl=off",
        ])
        .arg(format!("--mysql-port={port}"))
        .arg(format!("--mysql-user={user}"))
        .arg(format!("--mysql-password={password}"))
        .arg(format!("--mysql-db={DB}"))
        .arg(phase)
        .output()
        .expect("sysbench must be installed (apt-get install sysbench)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "sysbench {workload} {phase}:\n{text}");
    text
}

/// The "ignored errors" count of a sysbench run.
fn ignored_errors(report: &str) -> u64 {
    report
        .lines()
        .find_map(|l| l.trim().strip_prefix("ignored errors:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no error count in:\n{report}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sysbench_oltp_through_the_default_policy() {
    let root = Command::new("mariadb")
        .args([
            "-h",
            "127.0.0.1",
            "-P",
            "3306",
            "-u",
            "root",
            "--protocol=tcp",
            "-e",
        ])
        .arg(format!(
            "drop database if exists {DB}; create database {DB}"
        ))
        .status()
        .unwrap();
    assert!(root.success());
    // The tables are made directly: DDL through Airlock is held by the default policy.
    let _ =
        tokio::task::spawn_blocking(|| sysbench("oltp_read_write", 3306, "root", "", "prepare"))
            .await
            .unwrap();
    let proxy = Setup {
        mysql: true,
        policy_dir: Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policies")),
        ..Setup::default()
    }
    .start()
    .await;
    let port = proxy.mysql_port.unwrap();

    let read_only = tokio::task::spawn_blocking(move || {
        sysbench("oltp_read_only", port, USER, PASSWORD, "run")
    })
    .await
    .unwrap();
    assert_eq!(ignored_errors(&read_only), 0, "{read_only}");

    let through = tokio::task::spawn_blocking(move || {
        sysbench("oltp_read_write", port, USER, PASSWORD, "run")
    })
    .await
    .unwrap();
    let direct =
        tokio::task::spawn_blocking(|| sysbench("oltp_read_write", 3306, "root", "", "run"))
            .await
            .unwrap();
    let (through_errors, direct_errors) = (ignored_errors(&through), ignored_errors(&direct));
    // Deadlocks on a small table come and go; a proxy adds none of its own.
    assert!(
        through_errors <= 3 * direct_errors + 20,
        "through Airlock {through_errors} deadlocks, directly {direct_errors}"
    );
}
