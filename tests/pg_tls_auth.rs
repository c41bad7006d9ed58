//! TLS on both legs and authentication: SCRAM-SHA-256-PLUS over TLS with certificates made in
//! the test, PostgreSQL 17 direct TLS, require_tls, cleartext only inside TLS, wrong passwords
//! and unknown users, the upstream TLS modes, and what clients see when the upstream refuses.

mod common;

use common::{Certs, PASSWORD, Proxy, Setup, USER, sqlstate};
use tokio_postgres::config::{ChannelBinding, SslMode, SslNegotiation};

fn tls_setup() -> Setup {
    Setup {
        certs: Some(Certs::new()),
        ..Setup::default()
    }
}

/// Whether the upstream leg of this session is encrypted, as the database sees it.
async fn upstream_ssl(client: &tokio_postgres::Client) -> bool {
    client
        .query_one(
            "select ssl from pg_stat_ssl where pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_client_with_scram_channel_binding() {
    let proxy = tls_setup().start().await;
    let certs = proxy.certs.as_ref().unwrap();
    let mut config: tokio_postgres::Config = proxy.conninfo("").parse().unwrap();
    config
        .ssl_mode(SslMode::Require)
        .channel_binding(ChannelBinding::Require);
    let (client, conn) = config.connect(certs.tokio_postgres_tls()).await.unwrap();
    tokio::spawn(conn);
    assert_eq!(common::one_i32(&client, "select 1").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_tls_negotiation_with_alpn() {
    let proxy = tls_setup().start().await;
    let certs = proxy.certs.as_ref().unwrap();
    let mut config: tokio_postgres::Config = proxy.conninfo("").parse().unwrap();
    config
        .ssl_mode(SslMode::Require)
        .ssl_negotiation(SslNegotiation::Direct);
    let mut tls_config = certs.client_config();
    tls_config.alpn_protocols = vec![b"postgresql".to_vec()];
    let (client, conn) = config
        .connect(tokio_postgres_rustls::MakeRustlsConnect::new(tls_config))
        .await
        .unwrap();
    tokio::spawn(conn);
    assert_eq!(common::one_i32(&client, "select 2").await, 2);

    // A direct TLS client that offers no ALPN at all passes the TLS handshake but is turned
    // away by Airlock, as PostgreSQL 17 does.
    let mut silent = certs.client_config();
    silent.alpn_protocols = vec![];
    let r = config
        .connect(tokio_postgres_rustls::MakeRustlsConnect::new(silent))
        .await;
    assert!(r.is_err(), "direct TLS without ALPN is refused");

    // One that names another protocol fails the TLS handshake itself.
    let mut no_alpn = certs.client_config();
    no_alpn.alpn_protocols = vec![b"http/1.1".to_vec()];
    let r = config
        .connect(tokio_postgres_rustls::MakeRustlsConnect::new(no_alpn))
        .await;
    assert!(r.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_tls_refuses_plaintext_clients() {
    let proxy = Setup {
        require_tls: true,
        ..tls_setup()
    }
    .start()
    .await;
    let e = common::refused(&proxy.conninfo("sslmode=disable")).await;
    assert_eq!(sqlstate(&e), "28000");
    assert!(
        common::text(&e).contains("requires TLS"),
        "{}",
        common::text(&e)
    );
    let client = proxy.connect_tls("sslmode=require").await.unwrap();
    client.query_one("select 1", &[]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleartext_password_only_inside_tls() {
    let proxy = Setup {
        client_auth: "password",
        ..tls_setup()
    }
    .start()
    .await;
    let client = proxy.connect_tls("sslmode=require").await.unwrap();
    client.query_one("select 1", &[]).await.unwrap();
    let e = common::refused(&proxy.conninfo("sslmode=disable")).await;
    assert_eq!(sqlstate(&e), "28000");
    assert!(
        common::text(&e).contains("only accepted over TLS"),
        "{}",
        common::text(&e)
    );
    let e = proxy
        .connect_tls("sslmode=require password=wrong")
        .await
        .expect_err("wrong password");
    assert_eq!(sqlstate(&e), "28P01");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_and_unknown_user_get_the_same_answer() {
    let proxy = Proxy::start().await;
    let wrong = common::refused(&proxy.conninfo("password=nope")).await;
    let unknown = common::refused(&format!(
        "host=127.0.0.1 port={} user=ghost password={PASSWORD} dbname=test",
        proxy.port
    ))
    .await;
    assert_eq!(sqlstate(&wrong), "28P01");
    assert_eq!(sqlstate(&unknown), "28P01");
    assert_eq!(
        common::text(&wrong).replace(USER, "X"),
        common::text(&unknown).replace("ghost", "X")
    );
    // The session that failed left nothing behind; a correct login still works.
    proxy
        .connect()
        .await
        .query_one("select 1", &[])
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_tls_modes() {
    for (mode, expect_ssl) in [("disable", false), ("prefer", true), ("require", true)] {
        let proxy = Setup {
            upstream_extra: format!("tls = \"{mode}\"\n"),
            ..Setup::default()
        }
        .start()
        .await;
        let client = proxy.connect().await;
        assert_eq!(upstream_ssl(&client).await, expect_ssl, "mode {mode}");
    }
}

/// The local PostgreSQL serves Debian's self-signed "snakeoil" certificate for localhost:
/// trusting it as the CA, verify-full succeeds for server_name localhost and fails for
/// another name; a CA that did not sign it fails with an error naming TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_verify_full() {
    let direct = common::direct().await;
    let cert_file: String = direct
        .query_one("show ssl_cert_file", &[])
        .await
        .unwrap()
        .get(0);
    let proxy = Setup {
        upstream_extra: format!(
            "tls = \"verify-full\"\nca_file = {cert_file:?}\nserver_name = \"localhost\"\n"
        ),
        ..Setup::default()
    }
    .start()
    .await;
    let client = proxy.connect().await;
    assert!(upstream_ssl(&client).await);

    for extra in [
        format!("tls = \"verify-full\"\nca_file = {cert_file:?}\nserver_name = \"db.example\"\n"),
        {
            let other = Certs::new();
            let path = other.ca_file().display().to_string();
            std::mem::forget(other);
            format!("tls = \"verify-full\"\nca_file = {path:?}\nserver_name = \"localhost\"\n")
        },
    ] {
        let proxy = Setup {
            upstream_extra: extra,
            ..Setup::default()
        }
        .start()
        .await;
        let e = common::refused(&proxy.conninfo("")).await;
        assert_eq!(sqlstate(&e), "08001");
        assert!(common::text(&e).contains("TLS"), "{}", common::text(&e));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_upstream_is_named() {
    let proxy = Setup {
        upstream_address: "127.0.0.1:1".into(),
        ..Setup::default()
    }
    .start()
    .await;
    let e = common::refused(&proxy.conninfo("")).await;
    assert_eq!(sqlstate(&e), "08001");
    assert!(
        common::text(&e).contains("127.0.0.1:1"),
        "{}",
        common::text(&e)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_errors_at_startup_reach_the_client() {
    let proxy = Proxy::start().await;
    let e = common::refused(&proxy.conninfo("dbname=no_such_database_here")).await;
    assert_eq!(sqlstate(&e), "3D000");

    // Airlock's own login refused (a role the database does not know) is reported as such,
    // not as the client's fault.
    let proxy = Setup {
        upstream_extra: "tls = \"disable\"\n".into(),
        ..Setup::default()
    };
    let text = proxy
        .config_text()
        .replace("user = \"postgres\"", "user = \"no_such_role_for_airlock\"");
    let config = airlock::config::Config::parse(&text).unwrap();
    let running = airlock::app::start(&config).await.unwrap();
    let e = common::refused(&format!(
        "host=127.0.0.1 port={} user={USER} password={PASSWORD} dbname=test",
        running.postgres_addr.unwrap().port()
    ))
    .await;
    assert_eq!(sqlstate(&e), "08004");
    assert!(
        common::text(&e).contains("refused Airlock's own login"),
        "{}",
        common::text(&e)
    );
}
