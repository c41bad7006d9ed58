//! tokio-postgres through Airlock against the real PostgreSQL: extended protocol, binary
//! results, pipelining, errors, transactions, COPY, LISTEN/NOTIFY, notices, cancel.

mod common;

use common::{Proxy, direct, sqlstate, unique};
use futures_util::{SinkExt, StreamExt, TryStreamExt};
use tokio_postgres::AsyncMessage;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_protocol_with_binary_results() {
    let proxy = Proxy::start().await;
    let client = proxy.connect().await;
    // tokio-postgres uses the extended protocol and binary result format for query().
    let row = client
        .query_one(
            "select $1::int4 + 1, $2::text || '!', $3::bytea, $4::bool, $5::float8 * 2, \
             $6::int8[], null::text, 'ünïcødé'::text",
            &[
                &41i32,
                &"hi",
                &vec![0u8, 1, 255],
                &true,
                &1.25f64,
                &vec![1i64, 2, 3],
            ],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
    assert_eq!(row.get::<_, &str>(1), "hi!");
    assert_eq!(row.get::<_, Vec<u8>>(2), vec![0u8, 1, 255]);
    assert!(row.get::<_, bool>(3));
    assert_eq!(row.get::<_, f64>(4), 2.5);
    assert_eq!(row.get::<_, Vec<i64>>(5), vec![1, 2, 3]);
    assert_eq!(row.get::<_, Option<&str>>(6), None);
    assert_eq!(row.get::<_, &str>(7), "ünïcødé");

    // A named prepared statement, executed many times.
    let stmt = client
        .prepare("select generate_series(1, $1::int4)")
        .await
        .unwrap();
    for n in [0, 1, 1000] {
        assert_eq!(client.query(&stmt, &[&n]).await.unwrap().len(), n as usize);
    }
    // The simple protocol with several statements in one string.
    let messages = client
        .simple_query("select 1; select 2, 3; create temp table t(x int)")
        .await
        .unwrap();
    let rows = messages
        .iter()
        .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
        .count();
    assert_eq!(rows, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_queries_and_an_error_that_skips_to_sync() {
    let proxy = Proxy::start().await;
    let client = proxy.connect().await;
    let stmt = client.prepare("select $1::int4 * 10").await.unwrap();
    // tokio-postgres pipelines concurrent queries on one connection: all are written before
    // any result is read. One of them fails; the others must still succeed.
    let futures = (0..50).map(|i| {
        let client = &client;
        let stmt = &stmt;
        async move {
            if i == 25 {
                client
                    .query_one("select 1 / (0 * $1::int4)", &[&i])
                    .await
                    .map(|_| -1)
            } else {
                client
                    .query_one(stmt, &[&i])
                    .await
                    .map(|r| r.get::<_, i32>(0))
            }
        }
    });
    let results = futures_util::future::join_all(futures).await;
    for (i, r) in results.iter().enumerate() {
        match r {
            Ok(v) => assert_eq!(*v, i as i32 * 10),
            Err(e) => {
                assert_eq!(i, 25);
                assert_eq!(sqlstate(e), "22012", "division_by_zero keeps its SQLSTATE");
            }
        }
    }
    assert!(results[25].is_err());
    // The connection is still usable afterwards.
    assert_eq!(common::one_i32(&client, "select 7").await, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_keep_sqlstate_and_transactions_work() {
    let proxy = Proxy::start().await;
    let mut client = proxy.connect().await;
    let e = client
        .query("select * from no_such_table_anywhere", &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42P01");
    let e = client.batch_execute("selec 1").await.unwrap_err();
    assert_eq!(sqlstate(&e), "42601");

    let table = unique("tx");
    client
        .batch_execute(&format!("create table {table} (id int primary key)"))
        .await
        .unwrap();
    let tx = client.transaction().await.unwrap();
    tx.execute(&format!("insert into {table} values (1)"), &[])
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    let tx = client.transaction().await.unwrap();
    tx.execute(&format!("insert into {table} values (2)"), &[])
        .await
        .unwrap();
    let e = tx
        .execute(&format!("insert into {table} values (2)"), &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "23505");
    let e = tx.execute("select 1", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&e), "25P02", "in failed transaction");
    tx.rollback().await.unwrap();
    let count: i64 = client
        .query_one(&format!("select count(*) from {table}"), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 0);
    client
        .batch_execute(&format!("drop table {table}"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_and_out() {
    let proxy = Proxy::start().await;
    let client = proxy.connect().await;
    let table = unique("copy");
    client
        .batch_execute(&format!("create table {table} (id int, note text)"))
        .await
        .unwrap();
    let sink = client
        .copy_in(&format!("copy {table} from stdin"))
        .await
        .unwrap();
    let mut sink = std::pin::pin!(sink);
    let mut expected = String::new();
    for chunk in 0..20 {
        let mut data = String::new();
        for i in 0..5000 {
            let id = chunk * 5000 + i;
            data.push_str(&format!("{id}\tnote number {id} with\\ttab\n"));
        }
        expected.push_str(&data);
        sink.send(bytes::Bytes::from(data)).await.unwrap();
    }
    assert_eq!(sink.as_mut().finish().await.unwrap(), 100_000);

    let stream = client
        .copy_out(&format!(
            "copy (select * from {table} order by id) to stdout"
        ))
        .await
        .unwrap();
    let chunks: Vec<bytes::Bytes> = stream.try_collect().await.unwrap();
    let out: Vec<u8> = chunks.concat();
    assert_eq!(String::from_utf8(out).unwrap(), expected);

    // A COPY that fails mid-way reports the database's error and the session goes on.
    let sink = client
        .copy_in(&format!("copy {table} from stdin"))
        .await
        .unwrap();
    let mut sink = std::pin::pin!(sink);
    sink.send(bytes::Bytes::from_static(b"not-a-number\tx\n"))
        .await
        .unwrap();
    let e = sink.as_mut().finish().await.unwrap_err();
    assert_eq!(sqlstate(&e), "22P02");
    client
        .batch_execute(&format!("drop table {table}"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_notify_and_notices_arrive_asynchronously() {
    let proxy = Proxy::start().await;
    let (listener, mut conn) = tokio_postgres::connect(&proxy.conninfo(""), tokio_postgres::NoTls)
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(Ok(m)) = messages.next().await {
            let _ = tx.send(m);
        }
    });
    let channel = unique("chan");
    listener
        .batch_execute(&format!("listen {channel}"))
        .await
        .unwrap();

    let notifier = proxy.connect().await;
    notifier
        .batch_execute(&format!("notify {channel}, 'hello through airlock'"))
        .await
        .unwrap();
    listener
        .batch_execute("do $$ begin raise notice 'a notice for you'; end $$")
        .await
        .unwrap();

    let mut got_notification = false;
    let mut got_notice = false;
    while !(got_notification && got_notice) {
        let m = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
            .await
            .expect("async messages arrive")
            .expect("connection open");
        match m {
            AsyncMessage::Notification(n) => {
                assert_eq!(n.channel(), channel);
                assert_eq!(n.payload(), "hello through airlock");
                got_notification = true;
            }
            AsyncMessage::Notice(n) => {
                assert_eq!(n.message(), "a notice for you");
                got_notice = true;
            }
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_the_running_query() {
    let proxy = Proxy::start().await;
    let client = proxy.connect().await;
    let token = client.cancel_token();
    let query = tokio::spawn(async move {
        let r = client.query("select pg_sleep(30)", &[]).await;
        (r.map(|_| ()), client)
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let (result, client) = tokio::time::timeout(std::time::Duration::from_secs(10), query)
        .await
        .expect("the cancel took effect")
        .unwrap();
    assert_eq!(sqlstate(&result.unwrap_err()), "57014");
    assert_eq!(common::one_i32(&client, "select 1").await, 1);
}

/// 40 sessions sleep; 100 cancel requests race in at once, 5 each for 20 of them. Exactly
/// those 20 are cancelled; the other 20 finish their sleep normally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_cancels_hit_only_their_own_queries() {
    let proxy = Proxy::start().await;
    let mut clients = Vec::new();
    for _ in 0..40 {
        clients.push(proxy.connect().await);
    }
    let tokens: Vec<_> = clients.iter().map(|c| c.cancel_token()).collect();
    let queries: Vec<_> = clients
        .into_iter()
        .map(|c| tokio::spawn(async move { c.query("select pg_sleep(4)", &[]).await.map(|_| ()) }))
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;

    let mut cancels = Vec::new();
    for round in 0..5 {
        for token in tokens.iter().take(20) {
            let token = token.clone();
            let _ = round;
            cancels.push(tokio::spawn(async move {
                token.cancel_query(tokio_postgres::NoTls).await
            }));
        }
    }
    assert_eq!(cancels.len(), 100);
    for c in cancels {
        c.await.unwrap().unwrap();
    }
    for (i, q) in queries.into_iter().enumerate() {
        let r = q.await.unwrap();
        if i < 20 {
            assert_eq!(
                sqlstate(&r.unwrap_err()),
                "57014",
                "session {i} was cancelled"
            );
        } else {
            assert!(
                r.is_ok(),
                "session {i} was not targeted and must finish: {r:?}"
            );
        }
    }
}

/// A cancel request must carry the exact key Airlock handed out: the right pid with a wrong
/// secret, or an unknown pid, does nothing; the right key cancels.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_needs_the_exact_key() {
    use common::raw::{Raw, cancel_request, field, msg};
    let proxy = Proxy::start().await;
    let (mut session, pid, secret) = Raw::session_with_key(proxy.port).await;
    session.send(&msg(b'Q', b"select pg_sleep(1.5), 5\0")).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let mut wrong = secret;
    wrong[0] ^= 0xff;
    for (p, s) in [
        (pid, &wrong[..]),
        (pid ^ 1, &secret[..]),
        (pid, &secret[..3]),
    ] {
        let mut raw = Raw::tcp(proxy.port).await;
        raw.send(&cancel_request(p, s)).await;
        assert!(
            raw.message().await.is_none(),
            "a cancel request gets no answer"
        );
    }
    let answer = session.until_ready().await;
    assert!(
        answer.iter().any(|(t, _)| *t == b'D'),
        "the query was not cancelled"
    );

    session.send(&msg(b'Q', b"select pg_sleep(30)\0")).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let mut raw = Raw::tcp(proxy.port).await;
    raw.send(&cancel_request(pid, &secret)).await;
    let answer = session.until_ready().await;
    let (_, error) = answer.iter().find(|(t, _)| *t == b'E').expect("cancelled");
    assert_eq!(field(error, b'C').as_deref(), Some("57014"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_vanishes_mid_query_releases_its_database_session() {
    let proxy = Proxy::start().await;
    let app = unique("vanish");
    let (client, conn) = tokio_postgres::connect(
        &proxy.conninfo(&format!("application_name={app}")),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    let conn = tokio::spawn(conn);
    let _query = tokio::spawn(async move { client.query("select pg_sleep(60)", &[]).await });
    let observer = direct().await;
    let sessions = |app: String| {
        let observer = &observer;
        async move { common::backends(observer, "application_name", &app).await }
    };
    assert!(common::eventually(50, || async { sessions(app.clone()).await == 1 }).await);
    conn.abort(); // the socket to Airlock is dropped, mid-query
    assert!(
        common::eventually(50, || async { sessions(app.clone()).await == 0 }).await,
        "the upstream session must end within 5 s"
    );
}
