//! One column value, masked according to what it is: text, JSON (masked inside its strings
//! only, so it stays JSON), PostgreSQL bytea in hex, a value masked whole by a column rule, or
//! a binary value whose layout Airlock does not rewrite.

use super::Masker;

/// How a result column's values are masked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Treat {
    /// Text (or bytes shown as they are): detectors run on it.
    Text,
    /// JSON text: detectors run on it, but never mask across a string's quotes.
    Json,
    /// PostgreSQL jsonb in binary: a version byte, then JSON text.
    JsonbBinary,
    /// PostgreSQL bytea in text format: `\x` and hex digits.
    ByteaHex,
    /// A binary value of a type Airlock does not rewrite (numbers, dates, arrays...): passed
    /// as it is unless a detector finds a secret in its bytes, which fails closed.
    Opaque,
    /// A column rule masks the whole value: text-like values become the placeholder.
    WholeText,
    /// As `WholeText`, for JSON: the placeholder as a JSON string.
    WholeJson,
    /// As `WholeJson`, for jsonb in binary.
    WholeJsonbBinary,
    /// A column rule on a type that cannot hold the placeholder: the value becomes NULL.
    WholeNull,
}

/// What becomes of one value.
#[derive(Debug, PartialEq, Eq)]
pub enum Masked {
    /// Unchanged.
    Same,
    Value(Vec<u8>),
    Null,
    /// A detector found a secret in a value Airlock cannot rewrite.
    Unrewritable,
}

/// The placeholder a column rule puts in place of a whole value.
const COLUMN: &str = "column";

impl Treat {
    /// Whether values of this column are masked whatever they hold.
    pub fn is_whole(self) -> bool {
        matches!(
            self,
            Treat::WholeText | Treat::WholeJson | Treat::WholeJsonbBinary | Treat::WholeNull
        )
    }

    /// `value` (not NULL) masked as this treatment says.
    pub fn mask(self, masker: &Masker, value: &[u8]) -> Masked {
        let changed = |v: Option<Vec<u8>>| v.map_or(Masked::Same, Masked::Value);
        match self {
            Treat::Text => changed(mask_text(masker, value)),
            Treat::Json => changed(masker.mask_json(value)),
            Treat::JsonbBinary => match value.split_first() {
                Some((&version, json)) => changed(masker.mask_json(json).map(|m| {
                    let mut out = Vec::with_capacity(m.len() + 1);
                    out.push(version);
                    out.extend_from_slice(&m);
                    out
                })),
                None => Masked::Same,
            },
            // The escape format shows text as it is.
            Treat::ByteaHex => changed(mask_hex_runs(masker, value).or_else(|| masker.mask(value))),
            Treat::Opaque => match masker.mask(value) {
                Some(_) => Masked::Unrewritable,
                None => Masked::Same,
            },
            Treat::WholeText => Masked::Value(whole(masker, value)),
            Treat::WholeJson => Masked::Value(json_string(whole(masker, value))),
            Treat::WholeJsonbBinary => {
                let mut out = vec![1u8];
                out.extend(json_string(whole(masker, value)));
                Masked::Value(out)
            }
            Treat::WholeNull => Masked::Null,
        }
    }
}

fn whole(masker: &Masker, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(COLUMN.len() + 18);
    masker.placeholder(COLUMN, value, &mut out);
    out
}

fn json_string(placeholder: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(placeholder.len() + 2);
    out.push(b'"');
    out.extend(placeholder);
    out.push(b'"');
    out
}

/// Whether `bytes` (a row, a message) may hold a secret that a treatment other than a whole
/// one finds: a detector's anchor, or a backslash-x that may start bytea in hex. False means
/// certainly not.
pub fn may_hide(masker: &Masker, bytes: &[u8]) -> bool {
    masker.may_hold(bytes) || memchr::memmem::find(bytes, b"\\x").is_some()
}

/// `text` with the secrets in it masked, as it is and inside each bytea it shows in hex (a
/// bytea[] or a record in text format, a COPY line); `None` if it holds none.
pub fn mask_text(masker: &Masker, text: &[u8]) -> Option<Vec<u8>> {
    let masked = masker.mask(text);
    let as_masked = masked.as_deref().unwrap_or(text);
    mask_hex_runs(masker, as_masked).or(masked)
}

/// `text` with each bytea shown in hex inside it (`\\x` and an even run of hex digits, as
/// PostgreSQL writes bytea in COPY text and CSV) decoded, masked and encoded again; `None` if
/// none holds a secret. The digits hold none of the bytes the detectors look for.
pub fn mask_hex_runs(masker: &Masker, text: &[u8]) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    let mut copied = 0;
    let mut at = 0;
    while let Some(found) = memchr::memchr(b'\\', &text[at..]) {
        let backslash = at + found;
        at = backslash + 1;
        if text.get(backslash + 1) != Some(&b'x') {
            continue;
        }
        let start = backslash + 2;
        let digits = text[start..]
            .iter()
            .take_while(|c| c.is_ascii_hexdigit())
            .count();
        let run = &text[start..start + digits];
        at = start + digits;
        let Some(masked) = unhex(run).and_then(|raw| masker.mask(&raw)) else {
            continue;
        };
        let out = out.get_or_insert_with(|| Vec::with_capacity(text.len() + 64));
        out.extend_from_slice(&text[copied..start]);
        out.extend(masked.iter().flat_map(|b| hex(*b)));
        copied = at;
    }
    let mut out = out?;
    out.extend_from_slice(&text[copied..]);
    Some(out)
}

fn unhex(digits: &[u8]) -> Option<Vec<u8>> {
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    let nibble = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    digits
        .chunks(2)
        .map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?))
        .collect()
}

pub(crate) use crate::hex::byte as hex;

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "ghp_aB3dE5gH7jK9mN1pQ3sT5vX7zA9cE1gI3kM5";

    fn text(m: Masked) -> String {
        match m {
            Masked::Value(v) => String::from_utf8(v).unwrap(),
            other => panic!("not a value: {other:?}"),
        }
    }

    #[test]
    fn each_treatment() {
        let m = Masker::built_in();
        assert_eq!(
            text(Treat::Text.mask(&m, format!("t={TOKEN}").as_bytes())),
            "t=[masked:github_token]"
        );
        let raw: Vec<u8> = TOKEN.bytes().flat_map(hex).collect();
        let hexed = [b"\\x".as_slice(), &raw].concat();
        let out = text(Treat::ByteaHex.mask(&m, &hexed));
        let back = unhex(out.strip_prefix("\\x").unwrap().as_bytes()).unwrap();
        assert_eq!(back, b"[masked:github_token]");
        assert_eq!(Treat::Opaque.mask(&m, b"\x00\x01\x02"), Masked::Same);
        assert_eq!(
            Treat::Opaque.mask(&m, TOKEN.as_bytes()),
            Masked::Unrewritable
        );
        assert_eq!(
            text(Treat::WholeText.mask(&m, b"hunter2")),
            "[masked:column]"
        );
        assert_eq!(
            text(Treat::WholeJson.mask(&m, b"{}")),
            "\"[masked:column]\""
        );
        assert_eq!(Treat::WholeNull.mask(&m, b"\x00\x00\x00\x07"), Masked::Null);
        let jsonb = [b"\x01{\"t\": \"".as_slice(), TOKEN.as_bytes(), b"\"}"].concat();
        assert_eq!(
            text(Treat::JsonbBinary.mask(&m, &jsonb)),
            "\u{1}{\"t\": \"[masked:github_token]\"}"
        );
    }

    #[test]
    fn bytea_in_hex_inside_text_is_masked() {
        let m = Masker::built_in();
        let hexed: String = TOKEN.bytes().flat_map(hex).map(char::from).collect();
        // A COPY text line: bytea's backslash is escaped there; an odd run is no bytea.
        let line = format!("1\t\\\\x{hexed}\t\\\\x{hexed}0\t\\\\xzz\n");
        let out = String::from_utf8(mask_hex_runs(&m, line.as_bytes()).unwrap()).unwrap();
        let masked: String = b"[masked:github_token]"
            .iter()
            .copied()
            .flat_map(hex)
            .map(char::from)
            .collect();
        assert_eq!(out, format!("1\t\\\\x{masked}\t\\\\x{hexed}0\t\\\\xzz\n"));
        assert_eq!(mask_hex_runs(&m, b"\\x00ff and \\"), None);
    }

    #[test]
    fn json_is_never_masked_across_quotes() {
        let m = Masker::built_in();
        // A URL-password match would run from one string into the next.
        let doc = br#"{"a":"x://u:p","b":"q@host"}"#;
        assert_eq!(Treat::Json.mask(&m, doc), Masked::Same);
        assert_ne!(Treat::Text.mask(&m, doc), Masked::Same);
    }
}
