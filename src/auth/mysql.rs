//! MySQL client authentication checks, server side. Pure: no sockets.
//!
//! - mysql_native_password: the client proves SHA1(password) against a nonce; Airlock keeps
//!   the hash MySQL itself stores (`*` and 40 hex digits of SHA1(SHA1(password))).
//! - caching_sha2_password: the fast path proves SHA256(password) against a nonce, checked
//!   against SHA256(SHA256(password)) that the server caches after a full login. The full
//!   login sends the password itself (over TLS), which Airlock checks against the user's SCRAM
//!   verifier and then caches, exactly as MySQL fills its own cache.

use ring::digest::{Context, SHA1_FOR_LEGACY_USE_ONLY as SHA1, SHA256, digest};
use subtle::ConstantTimeEq;

/// SHA1(SHA1(password)): what mysql_native_password checks against.
#[derive(Clone, PartialEq, Eq)]
pub struct NativeHash([u8; 20]);

impl std::fmt::Debug for NativeHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NativeHash(<redacted>)")
    }
}

impl NativeHash {
    /// Parses MySQL's format: `*` followed by 40 hex digits.
    pub fn parse(text: &str) -> Option<NativeHash> {
        let hex = text.strip_prefix('*')?;
        if hex.len() != 40 {
            return None;
        }
        let mut out = [0u8; 20];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(NativeHash(out))
    }

    pub fn from_password(password: &str) -> NativeHash {
        let once = digest(&SHA1, password.as_bytes());
        NativeHash(array(digest(&SHA1, once.as_ref()).as_ref()))
    }

    /// Whether `response` proves the password for `nonce`:
    /// response = SHA1(password) XOR SHA1(nonce, SHA1(SHA1(password))).
    pub fn check(&self, nonce: &[u8], response: &[u8]) -> bool {
        proves(&SHA1, &self.0, [nonce, &self.0], response)
    }
}

impl std::fmt::Display for NativeHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("*")?;
        for b in self.0 {
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

/// SHA256(SHA256(password)): what the caching_sha2_password fast path checks against.
#[derive(Clone, PartialEq, Eq)]
pub struct Sha2Hash([u8; 32]);

impl std::fmt::Debug for Sha2Hash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sha2Hash(<redacted>)")
    }
}

impl Sha2Hash {
    pub fn from_password(password: &[u8]) -> Sha2Hash {
        let once = digest(&SHA256, password);
        Sha2Hash(array(digest(&SHA256, once.as_ref()).as_ref()))
    }

    /// Whether `response` proves the password for `nonce`:
    /// response = SHA256(password) XOR SHA256(SHA256(SHA256(password)), nonce).
    pub fn check(&self, nonce: &[u8], response: &[u8]) -> bool {
        proves(&SHA256, &self.0, [&self.0, nonce], response)
    }
}

/// Both plugins' proof: `response` XOR H(mask[0], mask[1]) is a value whose hash is `stored`.
fn proves(
    alg: &'static ring::digest::Algorithm,
    stored: &[u8],
    mask: [&[u8]; 2],
    response: &[u8],
) -> bool {
    if response.len() != stored.len() {
        return false;
    }
    let mut ctx = Context::new(alg);
    ctx.update(mask[0]);
    ctx.update(mask[1]);
    let mask = ctx.finish();
    let stage1: Vec<u8> = response
        .iter()
        .zip(mask.as_ref())
        .map(|(a, b)| a ^ b)
        .collect();
    digest(alg, &stage1).as_ref().ct_eq(stored).into()
}

/// The first `N` bytes of a digest.
fn array<const N: usize>(b: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&b[..N]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use mysql_common::scramble::{scramble_native, scramble_sha256};

    #[test]
    fn native_hash_has_mysqls_format() {
        // SELECT PASSWORD('airlock-demo') on MariaDB 10.11.
        let h = NativeHash::from_password("airlock-demo");
        assert_eq!(NativeHash::parse(&h.to_string()), Some(h.clone()));
        assert_eq!(
            NativeHash::from_password("password").to_string(),
            "*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19"
        );
        assert!(NativeHash::parse("2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19").is_none());
        assert!(NativeHash::parse("*2470").is_none());
        assert!(NativeHash::parse("*ZZ70C0C06DEE42FD1618BB99005ADCA2EC9D1E19").is_none());
    }

    #[test]
    fn checks_what_a_real_client_library_sends() {
        let nonce = b"0123456789abcdefghij";
        let native = NativeHash::from_password("s3cret");
        let good = scramble_native(nonce, b"s3cret").unwrap();
        assert!(native.check(nonce, &good));
        assert!(!native.check(nonce, &scramble_native(nonce, b"wrong").unwrap()));
        assert!(!native.check(b"another nonce here..", &good));
        assert!(!native.check(nonce, &good[..19]));

        let sha2 = Sha2Hash::from_password(b"s3cret");
        let good = scramble_sha256(nonce, b"s3cret").unwrap();
        assert!(sha2.check(nonce, &good));
        assert!(!sha2.check(nonce, &scramble_sha256(nonce, b"wrong").unwrap()));
        assert!(!sha2.check(nonce, &[0u8; 31]));
    }
}
