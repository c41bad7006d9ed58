//! Bytes from the wire as text. Pure.

use std::borrow::Cow;

/// `bytes` as text: borrowed when they are UTF-8, as nearly all are (checked a word at a
/// time, faster than `String::from_utf8_lossy`'s walk through chunks), else with each
/// invalid sequence replaced by U+FFFD.
pub fn lossy(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_text_is_borrowed_and_invalid_bytes_are_replaced() {
        assert!(matches!(
            lossy("sélect".as_bytes()),
            Cow::Borrowed("sélect")
        ));
        assert_eq!(lossy(b"a\xffb"), "a\u{fffd}b");
        assert_eq!(lossy(b""), "");
    }
}
