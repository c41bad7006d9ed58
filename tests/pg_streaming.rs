//! Streaming with backpressure: a 1 GiB result, a 1 GiB COPY out and a 512 MiB COPY in pass
//! through the real `airlock` binary while its resident memory grows by less than 64 MiB (read
//! from /proc, not timed).

mod common;

use futures_util::TryStreamExt;

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
    let airlock = common::Binary::spawn(
        &common::Setup {
            policy_dir: common::allow_all(),
            ..common::Setup::default()
        },
        "",
        "warn",
    );
    let client = airlock.connect().await;
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
