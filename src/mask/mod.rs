//! Masking: values that look like credentials are replaced by a placeholder naming what was
//! found (`[masked:aws_access_key_id]`). Pure: bytes in, bytes out.
//!
//! One pass of a SIMD packed searcher (aho-corasick's Teddy) over a value looks for the
//! literal anchors every detector's matches contain; a value with none (nearly every value)
//! is clean after that single pass. Only a value with an anchor is searched by the detectors' patterns.

pub mod detectors;
pub mod mysql;
pub mod pg;
pub mod value;

use std::borrow::Cow;
use std::collections::HashSet;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, MatchKind, packed};
use regex::bytes::{Regex, RegexBuilder};

use crate::policy::mask::{ColumnRules, MaskPolicy};
use detectors::BUILT_IN;

/// What a listener's sessions share for masking: the policy's `[mask]` table, its detectors
/// compiled and its column rules split.
pub struct Masking {
    pub masker: Masker,
    pub columns: ColumnRules,
    pub policy: MaskPolicy,
}

impl Masking {
    /// Compiles `policy`; `key` is the keyed-hash key its `hash_key_env` names, if any.
    pub fn new(policy: &MaskPolicy, key: Option<&[u8]>) -> Result<Masking, String> {
        Ok(Masking {
            masker: Masker::new(policy, key)?,
            columns: ColumnRules::new(&policy.columns),
            policy: policy.clone(),
        })
    }
}

/// A compiled detector.
struct Detector {
    name: Box<str>,
    regex: Regex,
    min_entropy: f64,
}

/// The detectors, compiled once per policy load.
pub struct Masker {
    detectors: Vec<Detector>,
    prefilter: Prefilter,
    /// The anchors' first two bytes, to rule out short values before the searcher.
    starts: AnchorStarts,
    /// Values never masked.
    allow: HashSet<Box<[u8]>>,
    /// With a key, placeholders carry a short keyed hash of what they replace.
    key: Option<ring::hmac::Key>,
}

impl Masker {
    /// The built-in detectors.
    pub fn built_in() -> Masker {
        Masker::new(&MaskPolicy::default(), None).expect("the built-in patterns compile")
    }

    /// The detectors `policy` asks for (built-in and its own), its allow-list, and `key` for
    /// keyed hashes in placeholders. Patterns were checked when the policy was parsed; an
    /// error here names the detector.
    pub fn new(policy: &MaskPolicy, key: Option<&[u8]>) -> Result<Masker, String> {
        let built_in = BUILT_IN.iter().filter(|_| policy.built_in).map(|s| {
            let regex = Regex::new(s.pattern).map_err(|e| format!("{}: {e}", s.name))?;
            let anchors: Vec<String> = s.anchors.iter().map(|a| a.to_string()).collect();
            Ok::<_, String>((
                Detector {
                    name: s.name.into(),
                    regex,
                    min_entropy: s.min_entropy,
                },
                if s.any_case {
                    any_case(&anchors)
                } else {
                    anchors
                },
            ))
        });
        let custom = policy.detectors.iter().map(|d| {
            let regex = RegexBuilder::new(&d.pattern)
                .unicode(false)
                .build()
                .map_err(|e| format!("detector {}: {e}", d.name))?;
            Ok((
                Detector {
                    name: d.name.as_str().into(),
                    regex,
                    min_entropy: 0.0,
                },
                any_case(&d.anchors),
            ))
        });
        let mut detectors = Vec::new();
        let mut anchors: Vec<String> = Vec::new();
        for compiled in built_in.chain(custom) {
            let (detector, its_anchors): (Detector, Vec<String>) = compiled?;
            detectors.push(detector);
            for a in its_anchors {
                if !anchors.contains(&a) {
                    anchors.push(a);
                }
            }
        }
        let prefilter = Prefilter::new(&anchors)?;
        Ok(Masker {
            detectors,
            prefilter,
            starts: AnchorStarts::new(&anchors),
            allow: policy.allow.iter().map(|v| v.as_bytes().into()).collect(),
            key: key.map(|k| ring::hmac::Key::new(ring::hmac::HMAC_SHA256, k)),
        })
    }

    /// Whether `bytes` may hold a secret: false means certainly not. One pass; callers
    /// with several values (a row) ask once for all of them, and mask values only if so.
    pub fn may_hold(&self, bytes: &[u8]) -> bool {
        // Short values (numbers, dates, flags, small rows) are mostly ruled out by a byte
        // table faster than by the searcher, whose short-input path hashes every window.
        if bytes.len() < SHORT_VALUE && !self.starts.any_in(bytes) {
            return false;
        }
        match &self.prefilter {
            Prefilter::Packed(searcher) => searcher.find(bytes).is_some(),
            Prefilter::Automaton(automaton) => automaton.is_match(bytes),
        }
    }

    /// `value` with every secret found replaced, or `None` if it holds none.
    pub fn mask(&self, value: &[u8]) -> Option<Vec<u8>> {
        self.mask_where(value, |_| true)
    }

    /// As [`Masker::mask`] for JSON text: a secret is masked only inside one string, so the
    /// document stays JSON.
    pub fn mask_json(&self, value: &[u8]) -> Option<Vec<u8>> {
        self.mask_where(value, |found| !found.contains(&b'"'))
    }

    /// Masks what the detectors find and `keep` accepts.
    fn mask_where(&self, value: &[u8], keep: impl Fn(&[u8]) -> bool) -> Option<Vec<u8>> {
        if !self.may_hold(value) {
            return None;
        }
        let mut found: Vec<(usize, usize, &str)> = Vec::new();
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
                if end > start
                    && entropy(&value[start..end]) >= d.min_entropy
                    && !self.allow.contains(&value[start..end])
                    && keep(&value[start..end])
                {
                    found.push((start, end, &d.name));
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
            self.placeholder(name, &value[start..end], &mut out);
            copied = end;
        }
        out.extend_from_slice(&value[copied..]);
        Some(out)
    }
}

impl Masker {
    /// `[masked:NAME]`, or `[masked:NAME:HASH]` with a key: the first four bytes of
    /// HMAC-SHA-256 of the secret, in hex.
    pub fn placeholder(&self, name: &str, secret: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(b"[masked:");
        out.extend_from_slice(name.as_bytes());
        if let Some(key) = &self.key {
            let tag = ring::hmac::sign(key, secret);
            out.push(b':');
            out.extend(tag.as_ref()[..4].iter().flat_map(|b| value::hex(*b)));
        }
        out.push(b']');
    }

    /// `text` with every secret masked, for logs, tickets and records.
    pub fn text<'a>(&self, text: &'a str) -> Cow<'a, str> {
        match value::mask_text(self, text.as_bytes()) {
            // Placeholders are ASCII and secrets are cut at ASCII boundaries, but be sure.
            Some(masked) => Cow::Owned(String::from_utf8_lossy(&masked).into_owned()),
            None => Cow::Borrowed(text),
        }
    }
}

/// The search for anchors: a SIMD packed searcher (Teddy) when the anchors are few enough
/// for it (the built-in ones are), otherwise a DFA.
enum Prefilter {
    Packed(packed::Searcher),
    Automaton(AhoCorasick),
}

impl Prefilter {
    fn new(anchors: &[String]) -> Result<Prefilter, String> {
        let packed = packed::Config::new()
            .match_kind(packed::MatchKind::LeftmostFirst)
            .builder()
            .extend(anchors)
            .build();
        if let Some(searcher) = packed {
            return Ok(Prefilter::Packed(searcher));
        }
        let automaton = AhoCorasickBuilder::new()
            .match_kind(MatchKind::LeftmostFirst)
            // A full DFA: one table lookup per byte, whatever the number of anchors.
            .kind(Some(AhoCorasickKind::DFA))
            .build(anchors)
            .map_err(|e| format!("detector anchors: {e}"))?;
        Ok(Prefilter::Automaton(automaton))
    }
}

/// Below this length a value is checked against [`AnchorStarts`] first.
const SHORT_VALUE: usize = 64;

/// Which byte pairs begin an anchor: for each first byte, the set of second bytes (every
/// byte for a one-byte anchor). A value in which no two adjacent bytes begin one (and whose
/// last byte begins none) holds no anchor.
struct AnchorStarts {
    /// Per byte, 1 + its index in `seconds`, or 0 if no anchor begins with it.
    first: [u16; 256],
    seconds: Vec<[u64; 4]>,
    /// An empty anchor (which a checked policy never has) is found in every value.
    empty: bool,
}

impl AnchorStarts {
    fn new(anchors: &[String]) -> AnchorStarts {
        let mut starts = AnchorStarts {
            first: [0; 256],
            seconds: Vec::new(),
            empty: false,
        };
        for a in anchors {
            let Some(&a0) = a.as_bytes().first() else {
                starts.empty = true;
                continue;
            };
            let slot = match starts.first[usize::from(a0)] {
                0 => {
                    starts.seconds.push([0; 4]);
                    starts.first[usize::from(a0)] = starts.seconds.len() as u16;
                    starts.seconds.len() - 1
                }
                k => usize::from(k) - 1,
            };
            let set = &mut starts.seconds[slot];
            match a.as_bytes().get(1) {
                Some(&a1) => set[usize::from(a1 >> 6)] |= 1 << (a1 & 63),
                None => *set = [u64::MAX; 4],
            }
        }
        starts
    }

    /// Whether an anchor may begin somewhere in `bytes`.
    fn any_in(&self, bytes: &[u8]) -> bool {
        self.empty
            || bytes.iter().enumerate().any(|(i, &b)| {
                let k = self.first[usize::from(b)];
                k != 0
                    && bytes.get(i + 1).is_none_or(|&n| {
                        self.seconds[usize::from(k) - 1][usize::from(n >> 6)] & (1 << (n & 63)) != 0
                    })
            })
    }
}

/// `anchors` as written, in lower case, upper case and title case.
fn any_case(anchors: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for a in anchors {
        let mut title = a.to_ascii_lowercase();
        if let Some(first) = title.get_mut(..1) {
            first.make_ascii_uppercase();
        }
        for v in [
            a.clone(),
            a.to_ascii_lowercase(),
            a.to_ascii_uppercase(),
            title,
        ] {
            if !out.contains(&v) {
                out.push(v);
            }
        }
    }
    out
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

    /// Statement text for a ticket or a record: a bytea literal in hex is read too.
    #[test]
    fn text_masks_bytea_literals_in_hex() {
        let m = Masker::built_in();
        let key = "AKIAIOSFODNN7EXAMPLE";
        let hexed: String = key.bytes().flat_map(value::hex).map(char::from).collect();
        let sql = format!("insert into t values ('\\x{hexed}', E'\\\\x{hexed}')");
        let out = m.text(&sql);
        assert!(!out.contains(&hexed), "{out}");
        let placeholder: String = b"[masked:aws_access_key_id]"
            .iter()
            .copied()
            .flat_map(value::hex)
            .map(char::from)
            .collect();
        assert_eq!(out.matches(&placeholder).count(), 2, "{out}");
    }

    #[test]
    fn the_byte_pair_table_never_rules_out_a_value_the_searcher_would_flag() {
        use rand::{Rng, SeedableRng};
        let m = Masker::built_in();
        let search = |v: &[u8]| match &m.prefilter {
            Prefilter::Packed(s) => s.find(v).is_some(),
            Prefilter::Automaton(a) => a.is_match(v),
        };
        // Bytes of the anchors and their neighbours, so that anchors and their starts appear.
        let alphabet = b"-:$_=AKIaksptxgreyJPWSbc0123456789 \0\x01";
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut flagged = 0;
        for _ in 0..200_000 {
            let len = rng.random_range(0..SHORT_VALUE);
            let mut v: Vec<u8> = (0..len)
                .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                .collect();
            if rng.random_bool(0.25) {
                // An anchor, whole or cut short by the end of the value.
                let spec = &BUILT_IN[rng.random_range(0..BUILT_IN.len())];
                let anchor = spec.anchors[rng.random_range(0..spec.anchors.len())].as_bytes();
                let at = rng.random_range(0..=v.len());
                v.splice(at..at, anchor.iter().copied());
                v.truncate(rng.random_range(at..=v.len()).min(SHORT_VALUE - 1));
            }
            if search(&v) {
                flagged += 1;
                assert!(m.starts.any_in(&v), "{:?}", String::from_utf8_lossy(&v));
            }
        }
        assert!(flagged > 1000, "the alphabet makes anchors: {flagged}");
        // What it is for: numbers, negative ones too, are ruled out.
        for v in [
            &b"12345"[..],
            b"-1234",
            b"\0\x01\0\0\0\x05-1234",
            b"2026-11-26 12:00:00",
        ] {
            assert!(!m.starts.any_in(v) && !m.may_hold(v));
        }
        // An anchor's first byte at the very end may begin it.
        assert!(m.starts.any_in(b"12-") && m.starts.any_in(b"x-----BEGIN"));
        // An empty anchor rules nothing out.
        assert!(AnchorStarts::new(&["".into(), "ab".into()]).any_in(b"12"));
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
    fn allow_list_custom_detectors_and_keyed_hashes() {
        let policy = MaskPolicy {
            allow: vec!["AKIAIOSFODNN7EXAMPLE".into()],
            detectors: vec![crate::policy::mask::CustomDetector {
                name: "acme_key".into(),
                pattern: r"acme_[a-z0-9]{12}".into(),
                anchors: vec!["acme_".into()],
            }],
            ..MaskPolicy::default()
        };
        let m = Masker::new(&policy, Some(b"a key of sixteen bytes")).unwrap();
        let text = |s: &str| m.text(s).into_owned();
        assert_eq!(text("doc AKIAIOSFODNN7EXAMPLE"), "doc AKIAIOSFODNN7EXAMPLE");
        let a = text("k acme_0123456789ab");
        assert!(
            a.starts_with("k [masked:acme_key:") && a.len() == "k [masked:acme_key:]".len() + 8
        );
        assert_eq!(
            text("again acme_0123456789ab")[6..],
            a[2..],
            "equal secrets, equal hashes"
        );
        assert_ne!(
            text("k acme_0123456789ac"),
            a,
            "different secrets, different hashes"
        );
        let unkeyed = Masker::new(&policy, None).unwrap();
        assert_eq!(unkeyed.text("acme_0123456789ab"), "[masked:acme_key]");
        let none = MaskPolicy {
            built_in: false,
            ..MaskPolicy::default()
        };
        let m = Masker::new(&none, None).unwrap();
        assert_eq!(
            m.text("ghp_R8x2Lq9ZtV4mK7pW3nY6cH1jB5dF0sG2aE8u"),
            "ghp_R8x2Lq9ZtV4mK7pW3nY6cH1jB5dF0sG2aE8u"
        );
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
