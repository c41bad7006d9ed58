//! The shape of a statement: its text with each number and plain string literal replaced by a
//! placeholder, so that statements differing only in literal values (pgbench's, an ORM's with
//! inlined values) share one classification in the cache. Classification depends only on
//! where literals are, except for statements that say otherwise
//! (`Classified::reads_values`, `Classified::session_names`), which the cache refuses.
//!
//! This scanner is deliberately timid: it gives a shape only for one statement of plain
//! tokens it reads the way PostgreSQL does, and gives none at the first thing it would have
//! to interpret (comments, dollar signs, backslashes, prefixed strings like `E'..'`,
//! semicolons inside the text, control characters). Text without a shape is cached by its
//! exact bytes instead, so a mistake here can only cost a cache miss, never a wrong answer:
//! two texts get the same shape only if they have the same tokens apart from literal values.

use std::ops::Range;

/// Placeholders: bytes that cannot appear outside a quoted token in text that has a shape.
const NUMBER: u8 = 1;
const STRING: u8 = 2;

/// The shape of `sql` and the statement text (trimmed, without a trailing `;`), or `None`.
/// A shape starts with a NUL byte, so it never equals any statement's text. A shape is
/// bytes: UTF-8 when `sql` is, since only whole ASCII-delimited tokens are replaced.
pub fn shape(sql: &str) -> Option<(Vec<u8>, &str)> {
    let mut out = Vec::new();
    let text = shape_into(sql.as_bytes(), &mut out)?;
    // Trimming took ASCII bytes off the ends, so the range falls on character boundaries.
    Some((out, sql.get(text)?))
}

/// Like [`shape`], for bytes, writing the shape into `out` (cleared first; a lookup reuses
/// one buffer) and giving where the statement text is in `sql`.
pub fn shape_into(sql: &[u8], out: &mut Vec<u8>) -> Option<Range<usize>> {
    out.clear();
    // ASCII white space only: another space character is not white space to the server.
    let start = sql.len() - sql.trim_ascii_start().len();
    let text = sql[start..].trim_ascii_end();
    let b = text.strip_suffix(b";").unwrap_or(text).trim_ascii_end();
    if b.is_empty() {
        return None;
    }
    // Each byte of text gives at most one of shape, after the leading NUL: the shape is
    // written by index into a buffer that long (fixed-size stores, no calls), then cut to
    // its length. `out[..o]` is the shape of `b[..i]`, and `o <= i + 1`.
    out.resize(b.len() + 1, 0);
    let mut o = 1;
    let mut i = 0;
    while i < b.len() {
        // Names, keywords, spaces and operators are copied as they are: in a run, eight
        // bytes at a time while it lasts (one branch for eight, not eight).
        while let Some(chunk) = b.get(i..i + 8).and_then(|c| <&[u8; 8]>::try_from(c).ok())
            && chunk
                .iter()
                .fold(true, |plain, &c| plain & PLAIN[c as usize])
        {
            out[o..o + 8].copy_from_slice(chunk);
            o += 8;
            i += 8;
        }
        while let Some(&c) = b.get(i)
            && PLAIN[c as usize]
        {
            out[o] = c;
            o += 1;
            i += 1;
        }
        let Some(&c) = b.get(i) else { break };
        match c {
            b'\'' => {
                if i > 0 && (is_word(b[i - 1]) || b[i - 1] == b'&') {
                    return None; // E'..', U&'..', B'..', X'..', N'..'
                }
                i = string_end(b, i)?;
                out[o] = STRING;
                o += 1;
            }
            b'"' => {
                let end = quoted_end(b, i)?;
                out[o..o + (end - i)].copy_from_slice(&b[i..end]);
                o += end - i;
                i = end;
            }
            b'0'..=b'9' => {
                if i > 0 && is_word(b[i - 1]) {
                    // Part of a name such as t1.
                    out[o] = c;
                    o += 1;
                    i += 1;
                    continue;
                }
                if i > 0 && b[i - 1] == b'.' {
                    return None;
                }
                i = number_end(b, i)?;
                out[o] = NUMBER;
                o += 1;
            }
            b'-' | b'/' => {
                if b.get(i + 1) == Some(&if c == b'-' { b'-' } else { b'*' }) {
                    return None; // a comment
                }
                out[o] = c;
                o += 1;
                i += 1;
            }
            // `$`: dollar quotes, parameters and names such as a$b; backslash: escapes; `#` and
            // backquotes: MySQL's comments and quoted names; control characters.
            _ => return None,
        }
    }
    out.truncate(o);
    Some(start..start + b.len())
}

/// Bytes the scanner copies without looking further: everything but quotes, digits, the
/// starts of comments, and the bytes that give no shape (`$ \ ; # \``, control characters).
/// A quote or `$` right after a name is caught where the quote or `$` is.
const PLAIN: [bool; 256] = {
    let mut t = [true; 256];
    let mut c = 0;
    while c < 0x20 {
        t[c] = false;
        c += 1;
    }
    t[b'\t' as usize] = true;
    t[b'\n' as usize] = true;
    t[b'\r' as usize] = true;
    t[0x7f] = false;
    let special = b"'\"0123456789-/$\\;#`";
    let mut k = 0;
    while k < special.len() {
        t[special[k] as usize] = false;
        k += 1;
    }
    t
};

/// Letters, digits, `_` and any byte of a multi-byte UTF-8 character: what names are made of.
fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80
}

/// The end of a `'...'` literal starting at `start` (`''` is a quote inside it). A backslash
/// inside gives no shape: whether it escapes depends on standard_conforming_strings.
fn string_end(b: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    loop {
        match *b.get(i)? {
            b'\'' if b.get(i + 1) == Some(&b'\'') => i += 2,
            b'\'' => return Some(i + 1),
            b'\\' => return None,
            _ => i += 1,
        }
    }
}

/// The end of a `"..."` identifier starting at `start`, copied as it is. A backslash inside
/// gives no shape: to MySQL `"..."` is a string, in which `\"` does not end it, so the two
/// would disagree on where the quoted text ends (and on what is a literal after it).
fn quoted_end(b: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    loop {
        match *b.get(i)? {
            b'"' if b.get(i + 1) == Some(&b'"') => i += 2,
            b'"' => return Some(i + 1),
            b'\\' => return None,
            _ => i += 1,
        }
    }
}

/// The end of an unsigned number (`12`, `12.5`, `12.`) starting at `start`; none if a letter,
/// another dot or a quote follows (exponents, `1.2.3`, junk).
// Always in line: called for every number, and code apart is one more line to fetch.
#[inline(always)]
fn number_end(b: &[u8], start: usize) -> Option<usize> {
    let mut i = start;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
    }
    match b.get(i) {
        Some(&c) if is_word(c) || c == b'.' || c == b'\'' || c == b'"' || c == b'$' => None,
        _ => Some(i),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(sql: &str) -> Option<String> {
        shape(sql).map(|(s, _)| {
            let s = String::from_utf8(s).expect("the shape of UTF-8 is UTF-8");
            let s = s.strip_prefix('\0').expect("shapes start with NUL");
            s.replace(char::from(NUMBER), "#")
                .replace(char::from(STRING), "'?'")
        })
    }

    #[test]
    fn literals_become_placeholders() {
        assert_eq!(
            key("SELECT abalance FROM pgbench_accounts WHERE aid = 48213;").as_deref(),
            Some("SELECT abalance FROM pgbench_accounts WHERE aid = #")
        );
        assert_eq!(
            key("update t1 set v = 'it''s', n = 2.50 where id = 7").as_deref(),
            Some("update t1 set v = '?', n = # where id = #")
        );
        assert_eq!(
            key("select \"odd 'name\" from t where x = -1").as_deref(),
            Some("select \"odd 'name\" from t where x = -#")
        );
        assert_eq!(
            shape("  select 1 ;  ").map(|(_, t)| t),
            Some("select 1"),
            "the text as split gives it"
        );
        assert_eq!(
            key("select 'é', ünïcode from t2").as_deref(),
            Some("select '?', ünïcode from t2")
        );
        assert_eq!(
            key("select 5/2, 5-2, x1y2 from t where a-b > 3").as_deref(),
            Some("select #/#, #-#, x1y2 from t where a-b > #")
        );
    }

    #[test]
    fn same_shape_only_for_the_same_tokens() {
        assert_eq!(key("select 1 from t"), key("select 22 from t"));
        assert_ne!(
            key("select 1 from t"),
            key("select '1' from t"),
            "number vs string"
        );
        assert_ne!(key("select a from t"), key("select b from t"));
        // Only ASCII white space is white space to the server; U+3000 belongs to a name.
        assert_eq!(key(" \n select 1 from t ;\t"), key("select 2 from t"));
        assert_ne!(key("\u{3000}select 1 from t"), key("select 1 from t"));
        assert_ne!(key("select 1 from t\u{3000}"), key("select 1 from t"));
    }

    #[test]
    fn anything_it_would_have_to_interpret_has_no_shape() {
        for sql in [
            "select 1; delete from t",
            "delete from t -- where id = 1",
            "delete from t /* where */",
            "select $1",
            "select $$x$$",
            "select E'\\''",
            "select 'a\\'",
            "select u&'x'",
            "select x'ff'",
            "select 1e5",
            "select 1.2.3",
            "select .5",
            "select 'open",
            "select \"open",
            // MySQL reads "..." as a string in which a backslash escapes the quote.
            "update t set a = \"x\\\" , ' , \" where id = 5 and b = ''",
            "select \"a\\\"",
            "select a$b from t",
            "select t1$ from t",
            "select n'x'",
            "select 1--c",
            "select 1 -- c",
            "select 1/*c*/",
            "select `1` from t",
            "delete from t # where id = 1",
            "select \u{1}",
            "",
            ";",
        ] {
            assert_eq!(key(sql), None, "{sql:?}");
        }
    }
}
