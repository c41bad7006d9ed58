//! The hot path of the PostgreSQL codec: splitting a buffer into messages and reading the
//! frontend messages Airlock inspects.
//!
//! `cargo bench --bench framing -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use airlock::protocol::pg::frame::{self, HEADER_LEN};
use airlock::protocol::pg::frontend::{self, FrontendMessage};
use airlock::protocol::pg::startup;
use bytes::{BufMut, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const MAX_MESSAGE: usize = 1 << 20;
const BUFFER: usize = 64 * 1024;

/// One DataRow as a backend sends it for a 6-column row of text-format values, one of them NULL.
fn data_row(i: usize, out: &mut BytesMut) {
    let id = (100_000 + i).to_string();
    let name = format!("customer-{:05}", i % 10_000);
    let email = format!("user{}@example.com", i % 977);
    let created = format!("2024-05-{:02} 12:34:56.{:03}+00", 1 + i % 28, i % 1000);
    let amount = format!("{}.{:02}", i * 7 % 100_000, i % 100);
    let columns: [Option<&[u8]>; 6] = [
        Some(id.as_bytes()),
        Some(name.as_bytes()),
        Some(email.as_bytes()),
        Some(created.as_bytes()),
        if i.is_multiple_of(5) {
            None
        } else {
            Some(b"t")
        },
        Some(amount.as_bytes()),
    ];
    let mut body = Vec::with_capacity(128);
    body.put_u16(columns.len() as u16);
    for c in columns {
        match c {
            Some(v) => {
                body.put_i32(v.len() as i32);
                body.put_slice(v);
            }
            None => body.put_i32(-1),
        }
    }
    frame::put_message(out, b'D', &body);
}

/// As many whole DataRows as fit in 64 KiB: what one read from the server typically holds
/// in the middle of a large result.
fn data_rows_64k() -> BytesMut {
    let mut buf = BytesMut::with_capacity(BUFFER);
    let mut row = BytesMut::new();
    for i in 0.. {
        row.clear();
        data_row(i, &mut row);
        if buf.len() + row.len() > BUFFER {
            break;
        }
        buf.extend_from_slice(&row);
    }
    buf
}

/// Splits `buf` into messages; returns how many there were and how many bytes were left over.
fn split(mut buf: &[u8]) -> (usize, usize) {
    let mut n = 0;
    while let Ok(Some(h)) = frame::complete(buf, MAX_MESSAGE) {
        black_box((h.tag, &buf[HEADER_LEN..h.total_len]));
        buf = &buf[h.total_len..];
        n += 1;
    }
    (n, buf.len())
}

fn query_body() -> Vec<u8> {
    b"SELECT id, name, email, created_at FROM customers WHERE id = 42 ORDER BY created_at DESC LIMIT 50\0"
        .to_vec()
}

fn parse_body() -> Vec<u8> {
    let mut b = Vec::new();
    b.put_slice(b"s1\0");
    b.put_slice(
        b"UPDATE customers SET email = $2, updated_at = now() WHERE id = $1 AND tenant = $3\0",
    );
    b.put_u16(3);
    b.put_u32(20); // int8
    b.put_u32(25); // text
    b.put_u32(23); // int4
    b
}

/// A Bind of "s1" to the unnamed portal: three parameters (binary int8, text, NULL), one
/// format code per parameter, and binary results.
fn bind_body() -> Vec<u8> {
    let mut b = Vec::new();
    b.put_slice(b"\0s1\0");
    b.put_u16(3);
    b.put_i16(1);
    b.put_i16(0);
    b.put_i16(1);
    b.put_u16(3);
    b.put_i32(8);
    b.put_i64(42);
    let email = b"alice@example.invalid";
    b.put_i32(email.len() as i32);
    b.put_slice(email);
    b.put_i32(-1);
    b.put_u16(1);
    b.put_i16(1);
    b
}

/// A StartupMessage for protocol 3.0 with user and database, built by hand.
fn startup_packet() -> Vec<u8> {
    let params = b"user\0app\0database\0test\0\0";
    let mut p = Vec::new();
    p.put_i32((8 + params.len()) as i32);
    p.put_i32(196_608);
    p.put_slice(params);
    p
}

fn framing(c: &mut Criterion) {
    let buf = data_rows_64k();
    let (rows, left) = split(&buf);
    assert_eq!(left, 0, "the buffer holds whole messages");
    let mut g = c.benchmark_group("frame");
    g.throughput(Throughput::Bytes(buf.len() as u64));
    g.bench_function(format!("split_64k_datarows/{rows}_msgs"), |b| {
        b.iter(|| split(black_box(&buf)))
    });
    g.finish();
}

fn frontend_parse(c: &mut Criterion) {
    let query = query_body();
    let parse = parse_body();
    let bind = bind_body();
    assert!(matches!(
        frontend::parse(b'Q', &query),
        Ok(FrontendMessage::Query { .. })
    ));
    assert!(matches!(
        frontend::parse(b'P', &parse),
        Ok(FrontendMessage::Parse(_))
    ));
    let Ok(FrontendMessage::Bind(b)) = frontend::parse(b'B', &bind) else {
        panic!("the bench's Bind does not parse")
    };
    assert_eq!(b.params().count(), 3);

    let mut g = c.benchmark_group("frontend_parse");
    g.bench_function("query", |b| {
        b.iter(|| frontend::parse(black_box(b'Q'), black_box(&query)))
    });
    g.bench_function("parse_3_types", |b| {
        b.iter(|| frontend::parse(black_box(b'P'), black_box(&parse)))
    });
    g.bench_function("bind_3_params", |b| {
        b.iter(|| frontend::parse(black_box(b'B'), black_box(&bind)))
    });
    g.bench_function("bind_3_params_walk", |b| {
        b.iter(|| {
            let Ok(FrontendMessage::Bind(m)) = frontend::parse(black_box(b'B'), black_box(&bind))
            else {
                unreachable!()
            };
            let mut n = 0usize;
            for (i, p) in m.params().enumerate() {
                n += p.map_or(0, <[u8]>::len) + m.param_format(i) as usize;
            }
            n + m.result_format(0) as usize
        })
    });
    g.finish();
}

fn startup_parse(c: &mut Criterion) {
    let packet = startup_packet();
    let Ok(startup::StartupPacket::Startup(m)) = startup::parse(&packet) else {
        panic!("the bench's startup packet does not parse")
    };
    assert_eq!(m.param("database"), Some("test"));

    c.bench_function("startup_parse/user_database", |b| {
        b.iter(|| startup::parse(black_box(&packet)))
    });
}

criterion_group!(benches, framing, frontend_parse, startup_parse);
criterion_main!(benches);
