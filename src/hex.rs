//! Lower-case hex digits, for hashes, tokens and binary values shown as text. Pure.

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// A byte as two lower-case hex digits.
pub fn byte(b: u8) -> [u8; 2] {
    [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 15)]]
}

/// `bytes` as lower-case hex digits.
pub fn encode(bytes: &[u8]) -> String {
    let out: Vec<u8> = bytes.iter().flat_map(|b| byte(*b)).collect();
    String::from_utf8(out).expect("hex digits are ASCII")
}
