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

/// Whether `bytes` are all ASCII: eight at a time for text of any length (the standard
/// library's check walks text shorter than 64 bytes, most statements, a byte at a time).
#[inline]
pub fn is_ascii(bytes: &[u8]) -> bool {
    let (words, rest) = bytes.as_chunks::<8>();
    let high = words
        .iter()
        .fold(0, |high, word| high | u64::from_ne_bytes(*word));
    high & 0x8080_8080_8080_8080 == 0 && rest.is_ascii()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_is_told_apart_at_every_length_and_place() {
        for len in 0..40 {
            let text = vec![b'a'; len];
            assert!(is_ascii(&text), "{len}");
            for at in 0..len {
                for byte in [0x80, 0xc3, 0xff] {
                    let mut text = text.clone();
                    text[at] = byte;
                    assert!(!is_ascii(&text), "{len} {at} {byte:#x}");
                }
            }
        }
    }

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
