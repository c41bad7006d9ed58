//! The input is a stream of bytes from a client after start-up: split it into messages as the
//! session does and read every message Airlock looks at, including each Bind parameter and
//! format code and each FunctionCall argument. None of it may panic.
#![no_main]

use airlock::protocol::pg::frame::{self, HEADER_LEN};
use airlock::protocol::pg::frontend::{self, FrontendMessage};
use libfuzzer_sys::fuzz_target;
use std::hint::black_box;

/// The frame limit the fuzzer uses; the header check must refuse anything larger.
const MAX: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    loop {
        let h = match frame::complete(rest, MAX) {
            Ok(Some(h)) => h,
            Ok(None) | Err(_) => break,
        };
        assert!(h.total_len >= HEADER_LEN && h.total_len <= rest.len() && h.total_len <= MAX);
        let body = &rest[HEADER_LEN..h.total_len];
        assert_eq!(body.len(), h.body_len());
        match frontend::parse(h.tag, body) {
            Ok(FrontendMessage::Bind(b)) => {
                let mut seen = 0usize;
                for p in b.params() {
                    black_box(p);
                    seen += 1;
                }
                assert_eq!(seen, b.param_count());
                // Past the end, too: the accessors answer 0 rather than index out of bounds.
                for i in 0..=b.param_count() + 1 {
                    black_box(b.param_format(i));
                }
                for i in 0..=b.result_format_count() + 1 {
                    black_box(b.result_format(i));
                }
                black_box((b.portal, b.statement));
            }
            Ok(FrontendMessage::FunctionCall(f)) => {
                for a in f.args() {
                    black_box(a);
                }
                black_box(f.function_oid);
            }
            Ok(m) => {
                black_box(m);
            }
            Err(e) => {
                black_box(e.to_string());
            }
        }
        rest = &rest[h.total_len..];
    }
});
