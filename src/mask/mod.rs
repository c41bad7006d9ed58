//! Masking: values that look like credentials are replaced by a placeholder naming what was
//! found (`[masked:aws_access_key_id]`). Pure: bytes in, bytes out.
//!
//! One pass of an Aho-Corasick automaton over a value looks for the literal anchors every
//! detector's matches contain; a value with none (nearly every value) is clean after that
//! single pass. Only a value with an anchor is searched by the detectors' patterns.

pub mod detectors;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, MatchKind};
use regex::bytes::Regex;

use detectors::{BUILT_IN, Spec};

/// A compiled detector.
struct Detector {
    name: &'static str,
    regex: Regex,
    min_entropy: f64,
}

/// The detectors, compiled once.
pub struct Masker {
    detectors: Vec<Detector>,
    prefilter: AhoCorasick,
}

impl Masker {
    /// The built-in detectors.
    pub fn built_in() -> Masker {
        Masker::new(BUILT_IN).expect("the built-in patterns compile")
    }

    fn new(specs: &[Spec]) -> Result<Masker, regex::Error> {
        let detectors = specs
            .iter()
            .map(|s| {
                Ok(Detector {
                    name: s.name,
                    regex: Regex::new(s.pattern)?,
                    min_entropy: s.min_entropy,
                })
            })
            .collect::<Result<Vec<_>, regex::Error>>()?;
        let anchors: Vec<&str> = specs
            .iter()
            .flat_map(|s| s.anchors.iter().copied())
            .collect();
        let prefilter = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::LeftmostFirst)
            // A full DFA: one table lookup per byte, whatever the number of anchors.
            .kind(Some(AhoCorasickKind::DFA))
            .build(anchors)
            .expect("the anchors build an automaton");
        Ok(Masker {
            detectors,
            prefilter,
        })
    }

    /// Whether `bytes` may hold a secret: false means certainly not. One pass; callers
    /// with several values (a row) ask once for all of them, and mask values only if so.
    pub fn may_hold(&self, bytes: &[u8]) -> bool {
        self.prefilter.is_match(bytes)
    }

    /// `value` with every secret found replaced, or `None` if it holds none.
    pub fn mask(&self, value: &[u8]) -> Option<Vec<u8>> {
        if !self.may_hold(value) {
            return None;
        }
        let mut found: Vec<(usize, usize, &'static str)> = Vec::new();
        for d in &self.detectors {
            for caps in d.regex.captures_iter(value) {
                let Some(m) = caps.get(1).or_else(|| caps.get(0)) else {
                    continue;
                };
                let (start, mut end) = (m.start(), m.end());
                // Never end inside an escape (JSON, string literals): a trailing backslash
                // stays outside the placeholder.
                while end > start && value[end - 1] == b'\\' {
                    end -= 1;
                }
                if end > start && entropy(&value[start..end]) >= d.min_entropy {
                    found.push((start, end, d.name));
                }
            }
        }
        if found.is_empty() {
            return None;
        }
        found.sort_by_key(|&(start, end, _)| (start, std::cmp::Reverse(end)));
        let mut out = Vec::with_capacity(value.len());
        let mut copied = 0;
        for (start, end, name) in found {
            if start < copied {
                continue; // inside (or overlapping) a range already masked
            }
            out.extend_from_slice(&value[copied..start]);
            out.extend_from_slice(b"[masked:");
            out.extend_from_slice(name.as_bytes());
            out.push(b']');
            copied = end;
        }
        out.extend_from_slice(&value[copied..]);
        Some(out)
    }
}

/// Shannon entropy of `bytes`, in bits per byte.
fn entropy(bytes: &[u8]) -> f64 {
    let mut counts = [0u32; 256];
    for &b in bytes {
        counts[b as usize] += 1;
    }
    let n = bytes.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(s: &str) -> String {
        let m = Masker::built_in();
        match m.mask(s.as_bytes()) {
            Some(v) => String::from_utf8(v).unwrap(),
            None => s.to_owned(),
        }
    }

    #[test]
    fn each_detector_names_what_it_found() {
        assert_eq!(
            masked("key AKIAIOSFODNN7EXAMPLE here"),
            "key [masked:aws_access_key_id] here"
        );
        assert_eq!(
            masked("postgres://app:s3cr3t-Pa55@db.internal:5432/prod"),
            "postgres://app:[masked:url_password]@db.internal:5432/prod"
        );
        assert_eq!(
            masked(r#"{"password": "Zx9!qL2#vB7@mN4$"}"#),
            r#"{"password": "[masked:secret_assignment]"}"#
        );
        assert_eq!(
            masked("-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----"),
            "[masked:private_key]"
        );
    }

    #[test]
    fn ordinary_values_pass_untouched() {
        for s in [
            "https://example.com/a/b?c=d",
            "550e8400-e29b-41d4-a716-446655440000",
            "da39a3ee5e6b4b0d3255bfef95601890afd80709",
            "#ff8800",
            "alice@example.com",
            "password reset requested",
            "token count: 12",
            "",
        ] {
            assert_eq!(masked(s), s);
        }
    }

    #[test]
    fn json_stays_json() {
        let doc = r#"{"note": "key=\"AKIAIOSFODNN7EXAMPLE\"", "secret": "aB3$xY9!pQ7&mK2\\"}"#;
        let out = masked(doc);
        assert!(out.contains("[masked:aws_access_key_id]"), "{out}");
        let v: serde_json::Value = serde_json::from_str(&out).expect("still JSON");
        assert!(v.is_object());
    }
}
