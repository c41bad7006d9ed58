//! Real MySQL clients through Airlock's MySQL listener, in front of the MariaDB on
//! 127.0.0.1:3306: the mariadb command-line client (batch mode, a deliberate error, `source`
//! of a script), mysql_async (text and binary protocol, prepared statements, several result
//! sets, TLS, both login methods), PyMySQL and mysql-connector-python, with and without the
//! shipped default policy.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::mysql::{code, connect, direct, mariadb, message, opts};
use common::mysql_raw::{MyRaw, Reply};
use common::{Certs, PASSWORD, Proxy, Setup, USER, unique};
use mysql_async::prelude::*;

fn shipped_policies() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("policies")
}

async fn proxy(policy: Option<PathBuf>) -> Proxy {
    Setup {
        mysql: true,
        policy_dir: policy,
        ..Setup::default()
    }
    .start()
    .await
}

/// A table with three rows, made directly in MariaDB.
async fn table() -> String {
    let name = unique("my_guarded");
    let mut db = direct().await;
    db.query_drop(format!(
        "create table {name} (id int primary key, v varchar(20)); \
         insert into {name} values (1, 'a'), (2, 'b'), (3, 'c')"
    ))
    .await
    .unwrap();
    name
}

async fn rows_in(table: &str) -> i64 {
    let mut db = direct().await;
    db.query_first(format!("select count(*) from {table}"))
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_async_text_binary_prepared_and_several_results() {
    let proxy = proxy(None).await;
    let mut conn = connect(proxy.mysql_port.unwrap()).await;
    let t = unique("my_relay");
    conn.query_drop(format!(
        "create table {t} (id int primary key, note text, amount decimal(10,2), at datetime)"
    ))
    .await
    .unwrap();
    // Binary protocol: a prepared INSERT run with parameters.
    let insert = conn
        .prep(format!("insert into {t} values (?, ?, ?, now())"))
        .await
        .unwrap();
    for i in 0..20 {
        conn.exec_drop(&insert, (i, format!("row {i}"), "12.50"))
            .await
            .unwrap();
    }
    // Text protocol.
    let rows: Vec<(i32, String)> = conn
        .query(format!("select id, note from {t} order by id"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 20);
    assert_eq!(rows[7], (7, "row 7".to_owned()));
    // Binary protocol results, with a NULL and a decimal.
    let got: Vec<(i32, Option<String>, String)> = conn
        .exec(
            format!("select id, null, cast(amount as char) from {t} where id < ? order by id"),
            (3,),
        )
        .await
        .unwrap();
    assert_eq!(got, [0, 1, 2].map(|i| (i, None, "12.50".to_owned())));
    // Several result sets from one COM_QUERY.
    let mut results = conn.query_iter("select 1; select 2, 3").await.unwrap();
    let first: Vec<i32> = results.collect().await.unwrap();
    let second: Vec<(i32, i32)> = results.collect().await.unwrap();
    assert_eq!((first, second), (vec![1], vec![(2, 3)]));
    drop(results);
    // A deliberate error comes back as MariaDB sent it, and the session carries on.
    let e = conn
        .query_drop("select * from no_such_table_here")
        .await
        .unwrap_err();
    assert_eq!(code(&e), 1146, "{e}");
    let one: Option<i32> = conn.query_first("select 1").await.unwrap();
    assert_eq!(one, Some(1));
    conn.query_drop(format!("drop table {t}")).await.unwrap();
    conn.disconnect().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_greeting_carries_the_databases_version() {
    let proxy = proxy(None).await;
    let mut conn = connect(proxy.mysql_port.unwrap()).await;
    let mut db = direct().await;
    let through: Option<String> = conn.query_first("select version()").await.unwrap();
    let direct_version: Option<String> = db.query_first("select version()").await.unwrap();
    assert_eq!(through, direct_version);
    let (major, minor, _) = conn.server_version();
    let (dmajor, dminor, _) = db.server_version();
    assert_eq!(
        (major, minor),
        (dmajor, dminor),
        "clients see the real server version"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clients_character_set_is_the_sessions() {
    let proxy = proxy(None).await;
    let port = proxy.mysql_port.unwrap();
    // mysql_async logs in with utf8mb4: four-byte characters survive the round trip.
    let mut conn = connect(port).await;
    let charset: String = conn
        .query_first("select @@character_set_client")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(charset, "utf8mb4");
    let t = unique("my_charset");
    conn.query_drop(format!(
        "create table {t} (v varchar(20)) character set utf8mb4"
    ))
    .await
    .unwrap();
    conn.exec_drop(
        format!("insert into {t} values (?)"),
        ("snow \u{2603} \u{1F600}",),
    )
    .await
    .unwrap();
    let back: String = conn
        .query_first(format!("select v from {t}"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back, "snow \u{2603} \u{1F600}");
    conn.query_drop(format!("drop table {t}")).await.unwrap();
    // The CLI asks for latin1 in its login, and gets it.
    let out = mariadb(
        port,
        &[
            "--default-character-set=latin1",
            "-N",
            "-e",
            "select @@character_set_client",
        ],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "latin1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_policy_refuses_with_1142_and_judges_every_execute() {
    let proxy = proxy(Some(shipped_policies())).await;
    let t = table().await;
    let mut conn = connect(proxy.mysql_port.unwrap()).await;

    let e = conn
        .query_drop(format!("delete from {t}"))
        .await
        .unwrap_err();
    assert_eq!(code(&e), 1142, "{e}");
    assert!(
        message(&e).contains("everything-else-needs-a-dba")
            && message(&e).contains("delete_without_where"),
        "{}",
        message(&e)
    );
    assert_eq!(rows_in(&t).await, 3);

    // Preparing runs nothing; each execute is judged.
    let wipe = conn.prep(format!("delete from {t}")).await.unwrap();
    for _ in 0..3 {
        let e = conn.exec_drop(&wipe, ()).await.unwrap_err();
        assert_eq!(code(&e), 1142);
    }
    assert_eq!(rows_in(&t).await, 3);
    let one = conn
        .prep(format!("delete from {t} where id = ?"))
        .await
        .unwrap();
    conn.exec_drop(&one, (2,)).await.unwrap();
    assert_eq!(rows_in(&t).await, 2);

    // MySQL keeps a transaction open after an error; so does a refusal.
    conn.query_drop("start transaction").await.unwrap();
    conn.query_drop(format!("insert into {t} values (10, 'x')"))
        .await
        .unwrap();
    assert_eq!(
        code(
            &conn
                .query_drop(format!("drop table {t}"))
                .await
                .unwrap_err()
        ),
        1142
    );
    conn.query_drop("commit").await.unwrap();
    assert_eq!(rows_in(&t).await, 3, "the INSERT committed");

    // SQL-level PREPARE ... FROM 'text': each EXECUTE is judged as the text.
    conn.query_drop("PREPARE one FROM 'SELECT 1'")
        .await
        .unwrap();
    conn.query_drop("EXECUTE one").await.unwrap();
    conn.query_drop(format!("PREPARE wipe FROM 'DELETE FROM {t}'"))
        .await
        .expect("preparing runs nothing");
    let e = conn.query_drop("EXECUTE wipe").await.unwrap_err();
    assert_eq!(code(&e), 1142, "{e}");
    assert!(
        message(&e).contains("delete_without_where"),
        "{}",
        message(&e)
    );
    // From a variable, Airlock cannot read what is prepared.
    conn.query_drop(format!("SET @q = 'DELETE FROM {t}'"))
        .await
        .unwrap();
    let e = conn.query_drop("PREPARE one FROM @q").await.unwrap_err();
    assert_eq!(code(&e), 1142, "{e}");
    let e = conn.query_drop("EXECUTE one").await.unwrap_err();
    assert_eq!(code(&e), 1142, "one may hold the DELETE now: {e}");
    assert_eq!(rows_in(&t).await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caching_sha2_logs_in_over_tls_first_then_by_the_fast_path() {
    let certs = Certs::new();
    let ca = certs.ca_file();
    let proxy = Setup {
        mysql: true,
        mysql_native: false,
        certs: Some(certs),
        ..Setup::default()
    }
    .start()
    .await;
    let port = proxy.mysql_port.unwrap();
    // No cached hash yet and no TLS: the password cannot be checked.
    let e = mysql_async::Conn::new(opts(port)).await.unwrap_err();
    assert_eq!(code(&e), 1045);
    assert!(message(&e).contains("TLS"), "{}", message(&e));
    // Over TLS, the full login.
    let tls = mysql_async::SslOpts::default().with_root_certs(vec![ca.into()]);
    let mut conn = mysql_async::Conn::new(opts(port).ssl_opts(Some(tls)))
        .await
        .expect("full caching_sha2_password login over TLS");
    let cipher: Option<(String, String)> = conn
        .query_first("show status like 'Ssl_cipher'")
        .await
        .unwrap();
    assert!(cipher.is_some());
    conn.disconnect().await.unwrap();
    // Now the fast path, without TLS.
    let mut conn = connect(port).await;
    let one: Option<i32> = conn.query_first("select 1").await.unwrap();
    assert_eq!(one, Some(1));
    // A wrong password is refused like any other.
    let wrong = opts(port).pass(Some("not-the-password"));
    let e = mysql_async::Conn::new(wrong).await.unwrap_err();
    assert_eq!(code(&e), 1045);
}

/// A client may send its TLS ClientHello right behind the SSLRequest, in the same segment:
/// the server says nothing in between. Airlock must leave those bytes to the TLS handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_hello_in_the_same_segment_as_the_ssl_request_is_not_lost() {
    use mysql_common::constants::CapabilityFlags;
    use mysql_common::packets::SslRequest;
    use mysql_common::proto::MySerialize;
    use std::io::{Read, Write};

    let certs = Certs::new();
    let client_config = std::sync::Arc::new(certs.client_config());
    let proxy = Setup {
        mysql: true,
        certs: Some(certs),
        ..Setup::default()
    }
    .start()
    .await;
    let port = proxy.mysql_port.unwrap();
    tokio::task::spawn_blocking(move || {
        let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        tcp.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let mut header = [0u8; 4];
        tcp.read_exact(&mut header).unwrap();
        let len = u32::from_le_bytes([header[0], header[1], header[2], 0]) as usize;
        tcp.read_exact(&mut vec![0u8; len]).unwrap();

        let caps = CapabilityFlags::CLIENT_SSL
            | CapabilityFlags::CLIENT_PROTOCOL_41
            | CapabilityFlags::CLIENT_SECURE_CONNECTION
            | CapabilityFlags::CLIENT_PLUGIN_AUTH;
        let mut request = Vec::new();
        SslRequest::new(caps, 0xFF_FFFF, 45).serialize(&mut request);
        let mut segment = (request.len() as u32).to_le_bytes().to_vec();
        segment[3] = 1;
        segment.extend_from_slice(&request);
        let name = "localhost".try_into().unwrap();
        let mut tls = rustls::ClientConnection::new(client_config, name).unwrap();
        tls.write_tls(&mut segment).unwrap();
        tcp.write_all(&segment).unwrap();
        while tls.is_handshaking() {
            tls.complete_io(&mut tcp)
                .expect("the TLS handshake finishes with the ClientHello sent early");
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_cli_batch_errors_and_source() {
    let proxy = proxy(Some(shipped_policies())).await;
    let port = proxy.mysql_port.unwrap();
    let t = table().await;
    let out = tokio::task::spawn_blocking(move || {
        mariadb(
            port,
            &["-e", "select 6 * 7 as answer; select @@version_comment"],
        )
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("answer\n42"));

    // A deliberate error (MariaDB's own) and a refusal (Airlock's), each stopping the batch.
    for (sql, expect) in [
        ("select * from no_such_table_anywhere", "ERROR 1146"),
        ("truncate table mysql.user", "ERROR 1142"),
    ] {
        let out = tokio::task::spawn_blocking(move || mariadb(port, &["-e", sql]))
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect), "{sql}: {err}");
    }

    // `source` of a script; --force carries on past the refused statement.
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("script.sql");
    std::fs::write(
        &script,
        format!(
            "select count(*) as before_rows from {t};\n\
             delete from {t};\n\
             update {t} set v = 'z' where id = 1;\n\
             select v from {t} where id = 1;\n"
        ),
    )
    .unwrap();
    let source = format!("source {}", script.display());
    let out = tokio::task::spawn_blocking(move || mariadb(port, &["--force", "-e", &source]))
        .await
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(stdout.contains("before_rows\n3"), "{stdout}");
    assert!(stdout.contains("v\nz"), "{stdout}");
    assert!(stderr.contains("ERROR 1142"), "{stderr}");
    assert_eq!(rows_in(&t).await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_or_unknown_user_gets_1045() {
    let proxy = proxy(None).await;
    let port = proxy.mysql_port.unwrap();
    let mut answers = Vec::new();
    for (user, pass) in [(USER, "wrong"), ("nobody_here", PASSWORD)] {
        let o = opts(port).user(Some(user)).pass(Some(pass));
        let e = mysql_async::Conn::new(o).await.unwrap_err();
        assert_eq!(code(&e), 1045, "{user}");
        answers.push(message(&e).replace(user, "<user>"));
    }
    assert_eq!(
        answers[0], answers[1],
        "the same answer: neither tells which users exist"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backslash_tricks_fail_closed_once_the_server_stops_reading_escapes() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("policy.toml"),
        "[defaults]\naction = \"allow\"\n\n\
         [[rule]]\nname = \"no-unknowns\"\naction = \"deny\"\nkinds = [\"unknown\"]\n",
    )
    .unwrap();
    let proxy = proxy(Some(dir.path().to_owned())).await;
    let t = table().await;
    let mut conn = connect(proxy.mysql_port.unwrap()).await;
    // With backslash escapes (as Airlock reads strings) this is one SELECT of a string; with
    // NO_BACKSLASH_ESCAPES the string ends early and a DROP follows.
    let trick = format!("SELECT 'a\\'; DROP TABLE {t}; -- '");
    conn.query_drop(&trick)
        .await
        .expect("harmless as the server reads it now");
    conn.query_drop("SET SESSION sql_mode = 'NO_BACKSLASH_ESCAPES'")
        .await
        .unwrap();
    let e = conn.query_drop(&trick).await.unwrap_err();
    assert_eq!(code(&e), 1142, "{e}");
    assert!(
        message(&e).contains("no_backslash_escapes"),
        "{}",
        message(&e)
    );
    assert_eq!(rows_in(&t).await, 3, "the table is still there");
    conn.query_drop("SET SESSION sql_mode = DEFAULT")
        .await
        .unwrap();
    conn.query_drop(&trick).await.expect("back to normal");
    assert_eq!(rows_in(&t).await, 3);
}

/// With ANSI_QUOTES, `"..."` is a quoted name in which a backslash does not escape, so
/// `SELECT 1 AS "a\" ; DROP TABLE t; -- "` runs a DROP where Airlock reads one SELECT. The
/// default policy holds the SET that would turn it on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sql_mode_that_makes_double_quotes_names_is_held() {
    let proxy = proxy(Some(shipped_policies())).await;
    let mut conn = connect(proxy.mysql_port.unwrap()).await;
    let e = conn
        .query_drop("SET SESSION sql_mode = 'ANSI_QUOTES'")
        .await
        .unwrap_err();
    assert_eq!(code(&e), 1142, "{e}");
    assert!(
        message(&e).contains("string_syntax_change"),
        "{}",
        message(&e)
    );
    conn.query_drop("SET SESSION sql_mode = 'STRICT_TRANS_TABLES'")
        .await
        .expect("other modes are ordinary");
}

/// `SET CHARACTER SET` (PHP applications and older drivers send it), which sqlparser does not
/// read, runs under the default policy for a character set Airlock reads; one whose
/// multibyte characters may end in an ASCII byte is held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_character_set_runs_unless_airlock_cannot_read_the_set() {
    let proxy = proxy(Some(shipped_policies())).await;
    let mut conn = connect(proxy.mysql_port.unwrap()).await;
    for (sql, charset) in [
        ("SET CHARACTER SET latin1", "latin1"),
        ("set charset 'utf8mb4';", "utf8mb4"),
    ] {
        conn.query_drop(sql).await.expect(sql);
        let now: String = conn
            .query_first("select @@character_set_client")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(now, charset, "{sql}");
    }
    let e = conn.query_drop("SET CHARACTER SET sjis").await.unwrap_err();
    assert_eq!(code(&e), 1142, "{e}");
    assert!(message(&e).contains("client_encoding"), "{}", message(&e));
    let still: String = conn
        .query_first("select @@character_set_client")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(still, "utf8mb4", "the refused switch never ran");
}

/// An EXECUTE in a comment MySQL runs (`/*! ... */`) was served from the classification
/// cache: once `/*! EXECUTE s */` had run a harmless SELECT, it ran whatever `s` held next,
/// unjudged. It is judged by what the name holds now; DROP PREPARE forgets a name too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_execute_is_judged_by_what_its_name_holds_now() {
    let proxy = proxy(Some(shipped_policies())).await;
    let name = table().await;
    let mut conn = connect(proxy.mysql_port.unwrap()).await;
    conn.query_drop("PREPARE s FROM 'SELECT 1'").await.unwrap();
    let one: Option<i64> = conn.query_first("/*! EXECUTE s */").await.unwrap();
    assert_eq!(one, Some(1));
    conn.query_drop("DEALLOCATE PREPARE s").await.unwrap();
    conn.query_drop(format!("PREPARE s FROM 'DELETE FROM {name}'"))
        .await
        .unwrap();
    let e = conn.query_drop("/*! EXECUTE s */").await.unwrap_err();
    assert_eq!(code(&e), 1142, "{e}");
    assert!(
        message(&e).contains("delete_without_where"),
        "{}",
        message(&e)
    );
    assert_eq!(rows_in(&name).await, 3, "nothing was deleted");
    conn.query_drop("DROP PREPARE s")
        .await
        .expect("DROP PREPARE only forgets a name");
    let e = conn.query_drop("EXECUTE s").await.unwrap_err();
    assert_eq!(code(&e), 1142, "Airlock knows s is gone: {e}");
}

/// MySQL reads `||` as OR, sqlparser as concatenation: `WHERE id = 5 || 1 = 1` was one
/// limited DELETE to Airlock and removed every row at the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn double_pipes_are_read_as_mysql_reads_them() {
    let proxy = proxy(Some(shipped_policies())).await;
    let name = table().await;
    let mut conn = connect(proxy.mysql_port.unwrap()).await;
    let e = conn
        .query_drop(format!("DELETE FROM {name} WHERE id = 5 || 1 = 1"))
        .await
        .unwrap_err();
    assert_eq!(code(&e), 1142, "{e}");
    assert_eq!(rows_in(&name).await, 3, "nothing was deleted");
    conn.query_drop(format!("DELETE FROM {name} WHERE id = 5 || id = 3"))
        .await
        .expect("a condition on a column either side");
    assert_eq!(rows_in(&name).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_query_names_airlocks_connection_ids() {
    let proxy = proxy(None).await;
    let port = proxy.mysql_port.unwrap();
    let mut sleeper = connect(port).await;
    let id = sleeper.id();
    let started = std::time::Instant::now();
    let running = tokio::spawn(async move {
        let r: Result<Option<i64>, _> = sleeper.query_first("SELECT SLEEP(20)").await;
        (r, sleeper)
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let mut other = connect(port).await;
    other
        .query_drop(format!("KILL QUERY {id}"))
        .await
        .expect("a KILL of one's own session's id is mapped to the database's thread");
    let (r, mut sleeper) = running.await.unwrap();
    // MariaDB ends an interrupted SLEEP early (returning 1) or with error 1317.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "{r:?}"
    );
    let one: Option<i32> = sleeper.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1), "KILL QUERY keeps the connection");
    let e = other.query_drop("KILL QUERY 4000000000").await.unwrap_err();
    assert_eq!(code(&e), 1094, "an id Airlock never gave out: {e}");
    // The database's own id, as CONNECTION_ID() shows it through Airlock, works too.
    let thread: Option<u32> = sleeper.query_first("SELECT CONNECTION_ID()").await.unwrap();
    other
        .query_drop(format!("KILL QUERY {}", thread.unwrap()))
        .await
        .expect("the database's id of one's own session");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_is_named_in_the_error() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let setup = Setup {
        mysql: true,
        ..Setup::default()
    };
    let text = setup.config_text().replace(
        "address = \"127.0.0.1:3306\"",
        &format!("address = \"127.0.0.1:{port}\""),
    );
    let config = airlock::config::Config::parse(&text).unwrap();
    let running = airlock::app::start_with(&config, airlock::app::Inspectors::none())
        .await
        .unwrap();
    let e = mysql_async::Conn::new(opts(running.mysql_addr.unwrap().port()))
        .await
        .unwrap_err();
    assert_eq!(code(&e), 2003, "{e}");
    assert!(
        message(&e).contains(&format!("127.0.0.1:{port}")),
        "{}",
        message(&e)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_mid_statement_does_not_leave_it_running() {
    let proxy = proxy(None).await;
    let port = proxy.mysql_port.unwrap();
    let marker = unique("left_behind");
    let sql = format!("SELECT SLEEP(30) AS {marker}");
    let mut child = Command::new("mariadb")
        .args(["-h", "127.0.0.1", "-P", &port.to_string(), "-u", USER])
        .arg(format!("-p{PASSWORD}"))
        .args(["--protocol=tcp", "test", "-e", &sql])
        .spawn()
        .unwrap();
    let mut db = direct().await;
    let running = format!(
        "select count(*) from information_schema.processlist where info like '%{marker}%' \
         and info not like '%processlist%'"
    );
    let mut seen = false;
    for _ in 0..50 {
        let n: Option<i64> = db.query_first(&running).await.unwrap();
        if n == Some(1) {
            seen = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(seen, "the statement started");
    child.kill().unwrap();
    let _ = child.wait();
    let mut gone = false;
    for _ in 0..50 {
        let n: Option<i64> = db.query_first(&running).await.unwrap();
        if n == Some(0) {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(gone, "the database stopped the departed client's statement");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pymysql_and_mysql_connector_python() {
    let python = common::python();
    let proxy = proxy(Some(shipped_policies())).await;
    let port = proxy.mysql_port.unwrap().to_string();
    let t = table().await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/mysql_clients.py");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(&python)
            .arg(&script)
            .args(["127.0.0.1", &port, USER, PASSWORD, &t])
            .output()
    })
    .await
    .unwrap()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "Python MySQL clients failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("mysql clients: all checks passed"),
        "{stdout}"
    );
}

/// Counts what the MySQL seam is shown.
#[derive(Default)]
struct RowCounter {
    seen: std::sync::Arc<std::sync::Mutex<(usize, usize, usize)>>,
}

struct Counting(std::sync::Arc<std::sync::Mutex<(usize, usize, usize)>>);

impl airlock::inspect::MysqlInspector for Counting {
    fn command(
        &mut self,
        _c: &airlock::protocol::mysql::command::Command<'_>,
    ) -> airlock::inspect::Verdict {
        airlock::inspect::Verdict::Forward
    }
    fn wants_rows(&self) -> bool {
        true
    }
    fn definition(&mut self, _payload: &[u8]) {
        self.0.lock().unwrap().0 += 1;
    }
    fn row(&mut self, binary: bool, _payload: &[u8]) -> airlock::inspect::Rewrite {
        let mut seen = self.0.lock().unwrap();
        if binary {
            seen.2 += 1;
        } else {
            seen.1 += 1;
        }
        airlock::inspect::Rewrite::Keep
    }
}

impl airlock::inspect::MysqlInspectorFactory for RowCounter {
    fn for_session(
        &self,
        _s: &airlock::inspect::SessionInfo,
    ) -> Box<dyn airlock::inspect::MysqlInspector> {
        Box::new(Counting(self.seen.clone()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_in_both_protocols_reach_the_seam() {
    let counter = std::sync::Arc::new(RowCounter::default());
    let seen = counter.seen.clone();
    let setup = Setup {
        mysql: true,
        ..Setup::default()
    };
    let config = airlock::config::Config::parse(&setup.config_text()).unwrap();
    let inspectors = airlock::app::Inspectors {
        mysql: counter,
        ..airlock::app::Inspectors::none()
    };
    let running = airlock::app::start_with(&config, inspectors).await.unwrap();
    let mut conn = connect(running.mysql_addr.unwrap().port()).await;
    // The client may have run its own queries while connecting: count from here.
    let before = *seen.lock().unwrap();
    let text: Vec<(i32, String)> = conn
        .query("SELECT seq, CONCAT('row ', seq) FROM seq_1_to_25")
        .await
        .unwrap();
    assert_eq!(text.len(), 25);
    let mid = *seen.lock().unwrap();
    assert_eq!(mid.1 - before.1, 25, "every text row");
    assert!(mid.0 - before.0 >= 2, "the answer's columns: {mid:?}");
    let binary: Vec<(i64, String)> = conn
        .exec(
            "SELECT seq, CONCAT('row ', seq) FROM seq_1_to_10 WHERE seq > ?",
            (0,),
        )
        .await
        .unwrap();
    assert_eq!(binary.len(), 10);
    let after = *seen.lock().unwrap();
    assert_eq!(after.2 - mid.2, 10, "every binary row");
}

/// A policy's `databases` means the session's default database as it is now: a USE or a
/// COM_INIT_DB (the mariadb client's `use`) moves a session under the rules of the database
/// it switches to, and a prepared statement is judged for both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_for_a_database_follow_the_session_into_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("policy.toml"),
        "[defaults]\naction = \"allow\"\n\n\
         [[rule]]\nname = \"other-is-read-only\"\naction = \"deny\"\n\
         kinds = [\"write\"]\ndatabases = [\"airlock_other\"]\n",
    )
    .unwrap();
    let proxy = proxy(Some(dir.path().to_owned())).await;
    let port = proxy.mysql_port.unwrap();
    let t = unique("my_switch");
    let mut db = direct().await;
    db.query_drop(format!(
        "create database if not exists airlock_other; \
         create table airlock_other.{t} (id int primary key); \
         create table test.{t} (id int primary key)"
    ))
    .await
    .unwrap();
    let count = |schema: &'static str, t: String| async move {
        let mut db = direct().await;
        let n: Option<i64> = db
            .query_first(format!("select count(*) from {schema}.{t}"))
            .await
            .unwrap();
        n.unwrap()
    };

    let mut conn = connect(port).await;
    conn.query_drop(format!("insert into {t} values (1)"))
        .await
        .expect("test is not read-only");
    // Naming the database outright reaches it as surely as USE does.
    let e = conn
        .query_drop(format!("insert into airlock_other.{t} values (1)"))
        .await
        .unwrap_err();
    assert_eq!(code(&e), 1142, "{e}");
    let insert = conn
        .prep(format!("insert into {t} values (?)"))
        .await
        .unwrap();
    conn.exec_drop(&insert, (2,)).await.unwrap();

    conn.query_drop("USE airlock_other").await.unwrap();
    let e = conn
        .query_drop(format!("insert into {t} values (1)"))
        .await
        .unwrap_err();
    assert_eq!(code(&e), 1142, "{e}");
    assert!(
        message(&e).contains("other-is-read-only"),
        "{}",
        message(&e)
    );
    // Prepared in test, run after the switch: judged the stricter way.
    let e = conn.exec_drop(&insert, (3,)).await.unwrap_err();
    assert_eq!(code(&e), 1142, "{e}");
    let reads: Option<i64> = conn
        .query_first(format!("select count(*) from {t}"))
        .await
        .unwrap();
    assert_eq!(reads, Some(0), "reads still pass");

    // Back in test, writes pass again.
    conn.query_drop("USE test").await.unwrap();
    conn.query_drop(format!("insert into {t} values (4)"))
        .await
        .unwrap();
    // A USE with statements after it in one string, or in a version-gated comment the
    // server may skip, is refused: Airlock could not be sure which database follows.
    for sneaky in [
        format!("USE airlock_other; insert into {t} values (5)"),
        "SELECT 1 /*!99999 ; USE airlock_other */".to_owned(),
    ] {
        let e = conn.query_drop(&sneaky).await.unwrap_err();
        assert_eq!(code(&e), 1142, "{sneaky}: {e}");
        assert!(
            message(&e).contains("USE only when it is sent on its own"),
            "{}",
            message(&e)
        );
    }
    assert_eq!(count("airlock_other", t.clone()).await, 0);
    assert_eq!(count("test", t.clone()).await, 3);

    // The mariadb client's `use` is a COM_INIT_DB.
    let out = mariadb(
        port,
        &[
            "-e",
            &format!("use airlock_other; insert into {t} values (6)"),
        ],
    );
    assert!(!out.status.success(), "the insert is refused");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("1142") && stderr.contains("other-is-read-only"),
        "{stderr}"
    );
    assert_eq!(count("airlock_other", t.clone()).await, 0);
    db.query_drop(format!("drop table airlock_other.{t}; drop table test.{t}"))
        .await
        .unwrap();
}

/// A client may send commands before reading the answers to earlier ones. Airlock's ERR for a
/// refused command takes its place among the answers: after the answer to the command sent
/// before it (here a slow one), before the answer to the one sent after it. Also a USE
/// pipelined with the commands after it: those are refused, in order, and the session goes
/// on in the database the USE chose.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_in_a_pipeline_is_answered_in_its_place() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("policy.toml"),
        "[defaults]\naction = \"allow\"\n\n\
         [[rule]]\nname = \"no-wipes\"\naction = \"deny\"\n\
         findings = [\"delete_without_where\"]\n",
    )
    .unwrap();
    let proxy = proxy(Some(dir.path().to_owned())).await;
    let t = table().await;
    let mut raw = MyRaw::login(proxy.mysql_port.unwrap()).await;

    let wipe = format!("delete from {t}");
    raw.pipeline(&["select sleep(0.3)", &wipe, "select 2"])
        .await;
    let slow = Reply::Rows {
        seq: 1,
        first: vec![Some("0".into())],
    };
    assert_eq!(raw.reply().await, slow, "the slow answer first");
    assert_eq!(raw.reply().await, Reply::Err { seq: 1, code: 1142 });
    let two = Reply::Rows {
        seq: 1,
        first: vec![Some("2".into())],
    };
    assert_eq!(raw.reply().await, two);
    assert_eq!(rows_in(&t).await, 3);

    // Commands sent before a USE's answer are refused, each in its place.
    raw.pipeline(&["USE test", "select 3", "select 4"]).await;
    assert_eq!(raw.reply().await, Reply::Ok { seq: 1 });
    assert_eq!(raw.reply().await, Reply::Err { seq: 1, code: 1142 });
    assert_eq!(raw.reply().await, Reply::Err { seq: 1, code: 1142 });
    raw.pipeline(&["select database()"]).await;
    let test = Reply::Rows {
        seq: 1,
        first: vec![Some("test".into())],
    };
    assert_eq!(raw.reply().await, test, "the session goes on");
}

/// MySQL names a trigger by its database alone: a DROP TRIGGER with a bare name drops a
/// trigger of some table of the session's database, so a rule that denies one table's DDL
/// refuses it, and the trigger stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_dropped_by_its_bare_name_may_be_on_any_table() {
    let t = table().await;
    let trigger = format!("{t}_keep");
    let mut db = direct().await;
    db.query_drop(format!(
        "create trigger {trigger} before delete on {t} for each row \
         signal sqlstate '45000' set message_text = 'rows stay'"
    ))
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("policy.toml"),
        format!(
            "[defaults]\naction = \"allow\"\n\n\
             [[rule]]\nname = \"guarded-table-stays\"\naction = \"deny\"\n\
             kinds = [\"ddl\"]\ntables = [\"{t}\"]\n"
        ),
    )
    .unwrap();
    let proxy = proxy(Some(dir.path().to_owned())).await;
    let mut conn = connect(proxy.mysql_port.unwrap()).await;
    for sql in [
        format!("DROP TRIGGER {trigger}"),
        format!("DROP TRIGGER IF EXISTS test.{trigger}"),
    ] {
        let e = conn.query_drop(&sql).await.unwrap_err();
        assert_eq!(code(&e), 1142, "{sql}: {e}");
        assert!(
            message(&e).contains("guarded-table-stays"),
            "{}",
            message(&e)
        );
    }
    // The trigger is still there: deleting a row is still refused by it.
    let e = db.query_drop(format!("delete from {t}")).await.unwrap_err();
    assert!(e.to_string().contains("rows stay"), "{e}");
    assert_eq!(rows_in(&t).await, 3);
    // The connection carries on.
    let n: Option<i64> = conn
        .query_first(format!("select count(*) from {t}"))
        .await
        .unwrap();
    assert_eq!(n, Some(3));
    db.query_drop(format!("drop trigger {trigger}"))
        .await
        .unwrap();
}
