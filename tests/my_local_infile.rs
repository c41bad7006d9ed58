//! LOAD DATA LOCAL INFILE through Airlock's MySQL listener, in front of the MariaDB on
//! 127.0.0.1:3306: refused by Airlock itself unless `mysql.allow_local_infile` is on, and then
//! relayed for the mariadb command-line client and mysql_async, file and all.

mod common;

use std::path::PathBuf;

use common::mysql::{code, direct, mariadb, message, opts};
use common::{Proxy, Setup, allow_all, unique};
use mysql_async::prelude::*;

async fn proxy(allow_local_infile: bool) -> Proxy {
    Setup {
        mysql: true,
        policy_dir: allow_all(),
        mysql_extra: format!("allow_local_infile = {allow_local_infile}\n"),
        ..Setup::default()
    }
    .start()
    .await
}

/// An empty table made directly in MariaDB, and a CSV file of three rows for it.
async fn table_and_file(dir: &tempfile::TempDir) -> (String, PathBuf) {
    let name = unique("my_infile");
    let mut db = direct().await;
    db.query_drop(format!(
        "create table {name} (id int primary key, v varchar(20))"
    ))
    .await
    .unwrap();
    let file = dir.path().join("rows.csv");
    std::fs::write(&file, "1,one\n2,two\n3,three\n").unwrap();
    (name, file)
}

async fn rows_in(table: &str) -> i64 {
    let mut db = direct().await;
    let n = db
        .query_first(format!("select count(*) from {table}"))
        .await
        .unwrap()
        .unwrap();
    db.query_drop(format!("drop table {table}")).await.unwrap();
    n
}

fn load(file: &std::path::Path, table: &str) -> String {
    format!(
        "LOAD DATA LOCAL INFILE '{}' INTO TABLE {table} FIELDS TERMINATED BY ','",
        file.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_airlock_refuses_load_data_local_and_the_session_goes_on() {
    let proxy = proxy(false).await;
    let port = proxy.mysql_port.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (table, file) = table_and_file(&dir).await;

    // The CLI with local-infile on: Airlock's own error, which names the setting.
    let out = mariadb(port, &["--local-infile=1", "-e", &load(&file, &table)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("ERROR 1142") && stderr.contains("allow_local_infile = true"),
        "{stderr}"
    );

    // mysql_async with a handler for the file: the same refusal, and the session carries on.
    let opts =
        opts(port).local_infile_handler(Some(mysql_async::WhiteListFsHandler::new([file.clone()])));
    let mut conn = mysql_async::Conn::new(opts).await.unwrap();
    let e = conn.query_drop(load(&file, &table)).await.unwrap_err();
    assert_eq!(code(&e), 1142, "{}", message(&e));
    assert!(message(&e).contains("LOAD DATA LOCAL INFILE is turned off in Airlock"));
    let one: i64 = conn.query_first("SELECT 1").await.unwrap().unwrap();
    assert_eq!(one, 1);
    conn.disconnect().await.unwrap();
    assert_eq!(rows_in(&table).await, 0, "nothing was loaded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_allowed_the_file_is_relayed_for_the_cli_and_mysql_async() {
    let proxy = proxy(true).await;
    let port = proxy.mysql_port.unwrap();
    let dir = tempfile::tempdir().unwrap();

    // The CLI, with a statement after the load in the same string: the answer goes on after
    // the file.
    let (table, file) = table_and_file(&dir).await;
    let sql = format!("{}; SELECT COUNT(*) FROM {table}", load(&file, &table));
    let out = mariadb(port, &["--local-infile=1", "-N", "-e", &sql]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "3");
    assert_eq!(rows_in(&table).await, 3);

    // mysql_async, whose handler sends the file in several packets, then more statements on
    // the same session.
    let (table, file) = table_and_file(&dir).await;
    let big: String = (10..5000).map(|i| format!("{i},row-{i}\n")).collect();
    std::fs::write(&file, big).unwrap();
    let opts =
        opts(port).local_infile_handler(Some(mysql_async::WhiteListFsHandler::new([file.clone()])));
    let mut conn = mysql_async::Conn::new(opts).await.unwrap();
    conn.query_drop(load(&file, &table)).await.unwrap();
    assert_eq!(conn.affected_rows(), 4990);
    let n: i64 = conn
        .query_first(format!("SELECT COUNT(*) FROM {table}"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 4990);
    conn.disconnect().await.unwrap();
    assert_eq!(rows_in(&table).await, 4990);
}
