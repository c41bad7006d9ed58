//! `reuse_server_sessions`: a database session left idle by a client that said Terminate is
//! reset with DISCARD ALL and handed to the next client with the same start-up parameters.
//! The next client must see a clean session: no temp tables, settings, prepared statements,
//! LISTENs or advisory locks from before, and the start-up ParameterStatus values.

mod common;

use common::{Setup, unique};

fn reuse(extra: &str) -> Setup {
    Setup {
        postgres_extra: format!("reuse_server_sessions = true\n{extra}"),
        ..Setup::default()
    }
}

async fn pid(client: &tokio_postgres::Client) -> i32 {
    client
        .query_one("select pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_is_reset_and_reused() {
    let proxy = reuse("").start().await;
    let first = proxy.connect().await;
    let backend = pid(&first).await;
    first
        .batch_execute(
            "create temp table leftover (x int); set search_path = pg_catalog; \
             set application_name = 'first client'; listen leftover_channel; \
             prepare leftover_stmt as select 1; select pg_advisory_lock(4242);",
        )
        .await
        .unwrap();
    drop(first); // tokio-postgres sends Terminate
    // The reset runs right after the first client leaves.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let (second, conn) = tokio_postgres::connect(&proxy.conninfo(""), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    assert_eq!(
        pid(&second).await,
        backend,
        "the same database session was reused"
    );
    let row = second
        .query_one(
            "select to_regclass('pg_temp.leftover') is null, current_setting('search_path'), \
             current_setting('application_name'), \
             (select count(*) from pg_listening_channels()), \
             (select count(*) from pg_prepared_statements where name = 'leftover_stmt'), \
             (select count(*) from pg_locks where locktype = 'advisory' and pid = pg_backend_pid())",
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0), "temp table dropped");
    assert_eq!(row.get::<_, &str>(1), "\"$user\", public");
    assert_eq!(
        row.get::<_, &str>(2),
        "",
        "application_name back to its start-up value"
    );
    assert_eq!(row.get::<_, i64>(3), 0, "no LISTEN left");
    assert_eq!(row.get::<_, i64>(4), 0, "no prepared statement left");
    assert_eq!(row.get::<_, i64>(5), 0, "advisory lock released");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_not_reused_mid_transaction_or_across_parameters() {
    let proxy = reuse("").start().await;
    // Left inside a transaction block: closed, not reused.
    let first = proxy.connect().await;
    let backend = pid(&first).await;
    first.batch_execute("begin; select 1").await.unwrap();
    drop(first);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let second = proxy.connect().await;
    assert_ne!(
        pid(&second).await,
        backend,
        "a session left in a transaction is not reused"
    );

    // Different start-up parameters: a different session.
    let backend = pid(&second).await;
    drop(second);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let app = unique("app");
    let third = common::connect_plain(&proxy.conninfo(&format!("application_name={app}"))).await;
    assert_ne!(
        pid(&third).await,
        backend,
        "other start-up parameters, other session"
    );
    let name: String = third
        .query_one("select current_setting('application_name')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(name, app);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_expire_and_dead_ones_are_never_handed_out() {
    let proxy = reuse("server_idle_timeout_secs = 1\n").start().await;
    let first = proxy.connect().await;
    let backend = pid(&first).await;
    let direct = common::direct().await;
    let alive = |pid: i32| {
        let direct = &direct;
        async move { common::backends(direct, "pid", &pid).await == 1 }
    };
    drop(first);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(alive(backend).await, "parked for reuse");
    // No client comes: the reaper closes it once it has been idle for 1 s.
    assert!(
        common::eventually(50, || async { !alive(backend).await }).await,
        "the expired session was closed by the reaper"
    );
    let second = proxy.connect().await;
    assert_ne!(pid(&second).await, backend);

    // A parked session that the database terminates is not handed to the next client.
    let backend = pid(&second).await;
    drop(second);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    direct
        .query_one("select pg_terminate_backend($1)", &[&backend])
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let third = proxy.connect().await;
    assert_ne!(pid(&third).await, backend);
    third.query_one("select 1", &[]).await.unwrap();
}

/// A client that sends Terminate while its last query is still running leaves a busy session:
/// it is closed, not handed on. (DISCARD ALL would succeed afterwards, so only the busy check
/// keeps it out.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_still_running_a_query_is_not_reused() {
    use common::raw::{Raw, msg};
    let proxy = reuse("").start().await;
    // First show that an idle session is reused, so the check below is not vacuous.
    let mut idle = Raw::session(proxy.port).await;
    let parked = idle.backend_pid().await;
    idle.send(&msg(b'X', b"")).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let mut busy = Raw::session(proxy.port).await;
    assert_eq!(
        busy.backend_pid().await,
        parked,
        "the idle session was reused"
    );

    let mut bytes = msg(b'Q', b"do $$ begin perform pg_sleep(0.5); end $$\0");
    bytes.extend(msg(b'X', b""));
    busy.send(&bytes).await;
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    let next = proxy.connect().await;
    assert_ne!(
        pid(&next).await,
        parked,
        "a session busy at Terminate is not reused"
    );
}
