//! psycopg 3 (Python) through Airlock. The interpreter is `.venv/bin/python` at the repository
//! root (made by scripts/test) or `AIRLOCK_TEST_PYTHON`; a missing one fails the test loudly.

mod common;

use std::path::PathBuf;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg_client() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let python = common::python();
    let proxy = common::Proxy::start().await;
    let conninfo = proxy.conninfo("sslmode=disable");
    let script = root.join("tests/python/psycopg_client.py");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(&python)
            .arg(&script)
            .arg(&conninfo)
            .output()
    })
    .await
    .unwrap()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "psycopg checks failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("psycopg: all checks passed"), "{stdout}");
}
