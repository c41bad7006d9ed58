//! Streaming with backpressure: a 1 GiB result, a 1 GiB COPY out and a 512 MiB COPY in pass
//! through the real `airlock` binary while its resident memory grows by less than 64 MiB (read
//! from /proc, not timed).

mod common;

use std::process::{Child, Command, Stdio};

use futures_util::TryStreamExt;

struct Airlock {
    child: Child,
    _dir: tempfile::TempDir,
    port: u16,
}

impl Drop for Airlock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn_airlock() -> Airlock {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let text = common::Setup::default().config_text().replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{port}\""),
    );
    let config = dir.path().join("airlock.toml");
    std::fs::write(&config, text).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_airlock"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("AIRLOCK_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    Airlock {
        child,
        _dir: dir,
        port,
    }
}

/// A /proc/PID/status field in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} missing in /proc/{pid}/status"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gigabyte_results_and_copies_stream_in_bounded_memory() {
    let airlock = spawn_airlock();
    let conninfo = format!(
        "host=127.0.0.1 port={} user={} password={} dbname=test",
        airlock.port,
        common::USER,
        common::PASSWORD
    );
    let mut client = None;
    for _ in 0..100 {
        if let Ok((c, conn)) = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls).await {
            tokio::spawn(conn);
            client = Some(c);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let client = client.expect("airlock came up within 10 s");
    client.query_one("select 1", &[]).await.unwrap();
    let pid = airlock.child.id();
    let baseline = status_kib(pid, "VmRSS:");

    // 131,072 rows of 8,192 bytes: 1 GiB of row data.
    let rows = client
        .query_raw(
            "select repeat('x', 8192) from generate_series(1, 131072)",
            Vec::<i32>::new(),
        )
        .await
        .unwrap();
    let mut rows = std::pin::pin!(rows);
    let mut bytes = 0usize;
    let mut count = 0usize;
    while let Some(row) = rows.try_next().await.unwrap() {
        bytes += row.get::<_, &str>(0).len();
        count += 1;
    }
    assert_eq!(count, 131_072);
    assert_eq!(bytes, 1 << 30);

    // COPY out of 1 GiB and COPY in of 512 MiB, through the same session.
    let out = client
        .copy_out("copy (select repeat('y', 8191) from generate_series(1, 131072)) to stdout")
        .await
        .unwrap();
    let mut out = std::pin::pin!(out);
    let mut copied = 0usize;
    while let Some(chunk) = out.try_next().await.unwrap() {
        copied += chunk.len();
    }
    assert_eq!(copied, 1 << 30, "8191 bytes and a newline per row");
    client
        .batch_execute("create temp table sink (t text)")
        .await
        .unwrap();
    let sink = client.copy_in("copy sink from stdin").await.unwrap();
    let mut sink = std::pin::pin!(sink);
    let line = bytes::Bytes::from(format!("{}\n", "z".repeat(1023)));
    let chunk = bytes::Bytes::from(line.repeat(256));
    for _ in 0..2048 {
        futures_util::SinkExt::send(&mut sink, chunk.clone())
            .await
            .unwrap();
    }
    assert_eq!(sink.as_mut().finish().await.unwrap(), 2048 * 256);

    let peak = status_kib(pid, "VmHWM:");
    let growth_mib = peak.saturating_sub(baseline) / 1024;
    println!(
        "airlock RSS baseline {} MiB, peak {} MiB, growth {growth_mib} MiB",
        baseline / 1024,
        peak / 1024
    );
    assert!(
        growth_mib < 64,
        "memory grew by {growth_mib} MiB relaying 1 GiB"
    );
}
