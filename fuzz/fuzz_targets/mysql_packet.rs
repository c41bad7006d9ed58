//! The input is a stream of bytes from a MySQL client after login: split it into logical
//! packets as the relay does (16 MiB pieces joined, a 1 MiB limit) and read each as a command.
//! None of it may panic, and every packet must lie within the buffer.
#![no_main]

use airlock::protocol::mysql::command;
use airlock::protocol::mysql::packet::{self, Next};
use libfuzzer_sys::fuzz_target;
use std::hint::black_box;

const MAX: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    loop {
        match packet::logical(rest, MAX) {
            Ok(Next::Packet(p)) => {
                assert!(p.wire_len <= rest.len() && p.payload.len() <= MAX);
                assert!(p.wire_len >= packet::HEADER_LEN + p.payload.len());
                let _ = black_box(command::parse(&p.payload).map(|c| format!("{c:?}")));
                rest = &rest[p.wire_len..];
            }
            Ok(Next::More { need }) => {
                assert!(need > rest.len());
                break;
            }
            Err(e) => {
                assert!(e.len > MAX);
                break;
            }
        }
    }
});
