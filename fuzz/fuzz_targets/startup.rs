//! The input is an untagged start-up packet (or an ErrorResponse body): neither reader may panic.
#![no_main]

use airlock::protocol::pg::backend;
use airlock::protocol::pg::startup::{self, StartupPacket};
use libfuzzer_sys::fuzz_target;
use std::hint::black_box;

fuzz_target!(|data: &[u8]| {
    match startup::packet_len(data) {
        Ok(Some(len)) => assert!((8..=startup::MAX_STARTUP_LEN).contains(&len)),
        Ok(None) => assert!(data.len() < 4),
        Err(e) => {
            black_box(e.to_string());
        }
    }

    match startup::parse(data) {
        Ok(StartupPacket::Startup(m)) => {
            black_box(m.param("user"));
            black_box(m.protocol_options().count());
        }
        Ok(p) => {
            black_box(p);
        }
        Err(e) => {
            black_box(e.to_string());
        }
    }

    black_box(backend::fields(data).count());
    black_box(backend::sqlstate(data));
    black_box(backend::message(data));
});
