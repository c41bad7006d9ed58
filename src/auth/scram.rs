//! SCRAM-SHA-256 verifiers in PostgreSQL's `rolpassword` format
//! (`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, RFC 5803), made from a password
//! and checked against a cleartext password. The SASL exchange itself is pgwire's
//! `ScramServerAuth`; this module supplies it with the stored secret.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use pgwire::api::auth::sasl::scram::{ScramSecret, gen_salted_password};
use subtle::ConstantTimeEq;

/// Iterations for newly made verifiers (PostgreSQL's default).
pub const DEFAULT_ITERATIONS: usize = 4096;
const MAX_ITERATIONS: usize = 10_000_000;

/// A parsed verifier. Holds no password, only what PostgreSQL itself stores.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramVerifier {
    pub iterations: usize,
    pub salt: Vec<u8>,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

impl std::fmt::Debug for ScramVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramVerifier")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl ScramVerifier {
    /// Parses `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
    pub fn parse(text: &str) -> Option<ScramVerifier> {
        let rest = text.strip_prefix("SCRAM-SHA-256$")?;
        let (iter_salt, keys) = rest.split_once('$')?;
        let (iterations, salt) = iter_salt.split_once(':')?;
        let (stored, server) = keys.split_once(':')?;
        let iterations: usize = iterations.parse().ok()?;
        if iterations == 0 || iterations > MAX_ITERATIONS {
            return None;
        }
        let salt = STANDARD.decode(salt).ok()?;
        if salt.is_empty() {
            return None;
        }
        let stored_key = STANDARD.decode(stored).ok()?.try_into().ok()?;
        let server_key = STANDARD.decode(server).ok()?.try_into().ok()?;
        Some(ScramVerifier {
            iterations,
            salt,
            stored_key,
            server_key,
        })
    }

    /// Makes a verifier from a password with a fresh random salt.
    pub fn from_password(password: &str, iterations: usize) -> ScramVerifier {
        let salt: [u8; 16] = rand::random();
        Self::from_password_and_salt(password, &salt, iterations)
    }

    fn from_password_and_salt(password: &str, salt: &[u8], iterations: usize) -> ScramVerifier {
        let salted = gen_salted_password(password, salt, iterations);
        match ScramSecret::verifier_from_salted_password(salt.to_vec(), salted, iterations) {
            ScramSecret::Verifier {
                stored_key,
                server_key,
                ..
            } => ScramVerifier {
                iterations,
                salt: salt.to_vec(),
                stored_key: stored_key.try_into().expect("SHA-256 output is 32 bytes"),
                server_key: server_key
                    .try_into()
                    .expect("HMAC-SHA-256 output is 32 bytes"),
            },
            ScramSecret::SaltedPassword { .. } => {
                unreachable!("verifier_from_salted_password returns a verifier")
            }
        }
    }

    /// Checks a cleartext password (as sent by AuthenticationCleartextPassword) in constant time.
    pub fn matches_password(&self, password: &str) -> bool {
        let candidate = Self::from_password_and_salt(password, &self.salt, self.iterations);
        candidate.stored_key.ct_eq(&self.stored_key).into()
    }

    /// The secret handed to pgwire's SCRAM exchange.
    pub fn to_secret(&self) -> ScramSecret {
        ScramSecret::Verifier {
            salt: self.salt.clone(),
            iterations: self.iterations,
            stored_key: self.stored_key.to_vec(),
            server_key: self.server_key.to_vec(),
        }
    }
}

/// Verifiers for users that do not exist, so that an unknown user goes through the same
/// exchange as a wrong password and cannot be told apart from one: the same iteration count
/// and salt length as the configured users, and a salt that stays the same for a name across
/// attempts and restarts (derived from the configured verifiers, which are not public).
pub struct Decoy {
    key: ring::hmac::Key,
    iterations: usize,
    salt_len: usize,
}

impl Decoy {
    pub fn new<'a>(verifiers: impl Iterator<Item = &'a String>) -> Decoy {
        let mut material = ring::digest::Context::new(&ring::digest::SHA256);
        material.update(b"airlock decoy verifier v1");
        let mut shapes = std::collections::HashMap::new();
        for text in verifiers {
            material.update(text.as_bytes());
            if let Some(v) = ScramVerifier::parse(text) {
                *shapes.entry((v.iterations, v.salt.len())).or_insert(0usize) += 1;
            }
        }
        let (iterations, salt_len) = shapes
            .into_iter()
            .max_by_key(|(shape, n)| (*n, *shape))
            .map(|(shape, _)| shape)
            .unwrap_or((DEFAULT_ITERATIONS, 16));
        Decoy {
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, material.finish().as_ref()),
            iterations,
            salt_len: salt_len.min(32),
        }
    }

    pub fn for_user(&self, user: &str) -> ScramVerifier {
        let tag = ring::hmac::sign(&self.key, user.as_bytes());
        ScramVerifier {
            iterations: self.iterations,
            salt: tag.as_ref()[..self.salt_len].to_vec(),
            stored_key: rand::random(),
            server_key: rand::random(),
        }
    }
}

impl std::fmt::Display for ScramVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SCRAM-SHA-256${}:{}${}:{}",
            self.iterations,
            STANDARD.encode(&self.salt),
            STANDARD.encode(self.stored_key),
            STANDARD.encode(self.server_key)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_text() {
        let v = ScramVerifier::from_password("correct horse", 4096);
        let text = v.to_string();
        assert!(text.starts_with("SCRAM-SHA-256$4096:"));
        assert_eq!(ScramVerifier::parse(&text), Some(v));
    }

    #[test]
    fn checks_cleartext_passwords() {
        let v = ScramVerifier::from_password("correct horse", 4096);
        assert!(v.matches_password("correct horse"));
        assert!(!v.matches_password("correct horsE"));
        assert!(!v.matches_password(""));
    }

    /// A verifier PostgreSQL 15 itself made for password 'airlock-test'
    /// (`SET password_encryption = 'scram-sha-256'; CREATE ROLE ... PASSWORD ...`).
    #[test]
    fn accepts_postgres_made_verifier() {
        let pg = "SCRAM-SHA-256$4096:RgUJ0yMpISo/51ZS8lX8oQ==$heBu5pY+qNJC4sHUhB6gtn/zertoDpiBw84WVxkD7BA=:iCDvtF7QmZO+Wqwcs09GuEfLO2OrmbMo2+MpcsB9wfE=";
        let v = ScramVerifier::parse(pg).expect("postgres format parses");
        assert_eq!(v.iterations, 4096);
        assert_eq!(v.to_string(), pg);
        assert!(v.matches_password("airlock-test"));
        assert!(!v.matches_password("airlock-tesT"));
    }

    #[test]
    fn refuses_malformed_verifiers() {
        for bad in [
            "",
            "md5abc",
            "SCRAM-SHA-256$0:c2FsdA==$AAAA:AAAA",
            "SCRAM-SHA-256$4096:c2FsdA==$AAAA:AAAA",
            "SCRAM-SHA-256$4096:$x:y",
            "SCRAM-SHA-256$x:c2FsdA==$a:b",
        ] {
            assert!(ScramVerifier::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn decoys_look_like_the_configured_verifiers_and_stay_put() {
        let real = ScramVerifier::from_password_and_salt("pw", &[7u8; 20], 10_000).to_string();
        let decoy = Decoy::new([real.clone()].iter());
        let a = decoy.for_user("ghost");
        assert_eq!(a.iterations, 10_000);
        assert_eq!(a.salt.len(), 20);
        assert_eq!(
            Decoy::new([real].iter()).for_user("ghost").salt,
            a.salt,
            "same across restarts"
        );
        assert_ne!(decoy.for_user("other").salt, a.salt);
        assert_eq!(
            Decoy::new(std::iter::empty()).for_user("x").iterations,
            DEFAULT_ITERATIONS
        );
    }

    #[test]
    fn debug_hides_keys() {
        let v = ScramVerifier::from_password("pw", 4096);
        let dbg = format!("{v:?}");
        assert!(!dbg.contains(&STANDARD.encode(v.stored_key)));
    }
}
