//! Lower-case hex digits, for hashes, tokens and binary values shown as text. Pure.

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// A byte as two lower-case hex digits.
pub fn byte(b: u8) -> [u8; 2] {
    [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 15)]]
}

/// `bytes` as lower-case hex digits.
pub fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(2 * bytes.len());
    encode_into(bytes, &mut out);
    out
}

/// `bytes` as lower-case hex digits, appended to `out`.
pub fn encode_into(bytes: &[u8], out: &mut String) {
    out.reserve(2 * bytes.len());
    // 32 bytes (a SHA-256) at a time through a buffer of digits.
    let mut digits = [0u8; 64];
    for chunk in bytes.chunks(32) {
        for (pair, &b) in digits.chunks_exact_mut(2).zip(chunk) {
            pair.copy_from_slice(&byte(b));
        }
        let digits = &digits[..2 * chunk.len()];
        out.push_str(std::str::from_utf8(digits).expect("hex digits are ASCII"));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn bytes_are_written_as_two_digits_each() {
        let bytes: Vec<u8> = (0..=255).collect();
        let hex = super::encode(&bytes);
        assert_eq!(hex.len(), 512);
        assert!(hex.starts_with("000102") && hex.ends_with("fdfeff"));
        assert_eq!(&hex[2 * 0xa5..2 * 0xa6], "a5");
        assert_eq!(super::encode(&[]), "");
    }
}
