//! A plain TCP relay: the floor that the end-to-end benchmark (`benches/e2e.sh`) compares
//! Airlock against. It accepts connections, connects each one to the upstream and copies
//! bytes both ways with `tokio::io::copy_bidirectional`; no parsing, no TLS, no
//! authentication, so it costs about what any proxy must pay for two extra socket hops.
//!
//! ```text
//! cargo run --release --example tcp_relay -- 127.0.0.1:6433 127.0.0.1:5432
//! ```

use tokio::net::{TcpListener, TcpStream};

#[tokio::main(flavor = "multi_thread")]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream), None) = (args.next(), args.next(), args.next()) else {
        eprintln!("usage: tcp_relay LISTEN_ADDR UPSTREAM_ADDR");
        std::process::exit(2);
    };
    let listener = TcpListener::bind(&listen).await?;
    eprintln!("tcp_relay: {} -> {upstream}", listener.local_addr()?);
    loop {
        let (mut client, peer) = listener.accept().await?;
        let upstream = upstream.clone();
        tokio::spawn(async move {
            let mut server = match TcpStream::connect(&upstream).await {
                Ok(s) => s,
                Err(e) => return eprintln!("tcp_relay: {peer}: cannot connect to {upstream}: {e}"),
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        });
    }
}
