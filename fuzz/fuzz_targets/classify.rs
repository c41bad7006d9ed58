//! Any text at all through the statement classifier and the shape the cache keys on: neither
//! may panic, and what the classifier cannot read must come out unknown with a reason, never
//! as an empty answer.
#![no_main]

use airlock::sql::Dialect;
use airlock::sql::classify::{Kind, classify};
use airlock::sql::shape::shape;
use libfuzzer_sys::fuzz_target;
use std::hint::black_box;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let statements = classify(&text, Dialect::Postgres);
    for s in &statements {
        if s.kind == Kind::Unknown {
            assert!(!s.findings.is_empty(), "an unknown statement says why: {text:?}");
        }
    }
    if let Some((key, statement)) = shape(&text) {
        assert_eq!(key.first(), Some(&0), "a shape starts with NUL");
        assert!(text.contains(statement));
        assert_eq!(
            statements.len(),
            1,
            "text with a shape is one statement: {text:?}"
        );
    }
    black_box(statements);
});
