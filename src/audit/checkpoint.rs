//! Signed checkpoints of the chain head. Anyone holding an earlier checkpoint can tell when
//! the trail was cut short (its record is gone) or rewritten (its record's hash differs),
//! which the chain alone cannot show. Ed25519 (ring); pure: keys and text in, checkpoints
//! out.

use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde::{Deserialize, Serialize};

use super::record::{Head, hex};

/// A signed statement that the chain had `hash` at record `seq`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub seq: u64,
    /// Hex SHA-256 of record `seq` (all zeros for an empty chain).
    pub hash: String,
    /// When it was signed, microseconds since the Unix epoch.
    pub at: i64,
    /// Why: `periodic`, `on-demand`, or `prune` (records up to `seq` were removed).
    pub reason: String,
    /// Hex Ed25519 public key of the signer.
    pub public_key: String,
    /// Hex signature over [`Checkpoint::message`].
    pub signature: String,
}

/// A key that signs checkpoints.
pub struct Signer {
    pair: Ed25519KeyPair,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error(
        "the checkpoint key is not an Ed25519 PKCS#8 key (make one with `airlock audit keygen`)"
    )]
    BadKey,
    #[error("the checkpoint's signature does not verify: it was forged or altered")]
    BadSignature,
    #[error("the checkpoint was signed by key {found}, not the expected {expected}")]
    WrongKey { expected: String, found: String },
}

impl Signer {
    /// A new key, as PKCS#8 bytes to store.
    pub fn generate() -> Vec<u8> {
        let rng = ring::rand::SystemRandom::new();
        Ed25519KeyPair::generate_pkcs8(&rng)
            .expect("the system random source works")
            .as_ref()
            .to_vec()
    }

    pub fn from_pkcs8(bytes: &[u8]) -> Result<Signer, CheckpointError> {
        Ed25519KeyPair::from_pkcs8(bytes)
            .map(|pair| Signer { pair })
            .map_err(|_| CheckpointError::BadKey)
    }

    pub fn public_key(&self) -> String {
        hex(self.pair.public_key().as_ref())
    }

    pub fn sign(&self, head: Head, at: i64, reason: &str) -> Checkpoint {
        let mut c = Checkpoint {
            seq: head.seq,
            hash: hex(&head.hash),
            at,
            reason: reason.to_owned(),
            public_key: self.public_key(),
            signature: String::new(),
        };
        c.signature = hex(self.pair.sign(c.message().as_bytes()).as_ref());
        c
    }
}

impl Checkpoint {
    /// What is signed.
    fn message(&self) -> String {
        format!(
            "airlock audit checkpoint v1\n{}\n{}\n{}\n{}",
            self.seq, self.hash, self.at, self.reason
        )
    }

    /// Checks the signature, and the signer if `expected_key` (hex) is given.
    pub fn check(&self, expected_key: Option<&str>) -> Result<(), CheckpointError> {
        if let Some(expected) = expected_key
            && !expected.eq_ignore_ascii_case(&self.public_key)
        {
            return Err(CheckpointError::WrongKey {
                expected: expected.to_owned(),
                found: self.public_key.clone(),
            });
        }
        let key = unhex(&self.public_key).ok_or(CheckpointError::BadSignature)?;
        let signature = unhex(&self.signature).ok_or(CheckpointError::BadSignature)?;
        UnparsedPublicKey::new(&ED25519, key)
            .verify(self.message().as_bytes(), &signature)
            .map_err(|_| CheckpointError::BadSignature)
    }

    /// The head it vouches for.
    pub fn head(&self) -> Option<Head> {
        let hash = unhex(&self.hash)?.try_into().ok()?;
        Some(Head {
            seq: self.seq,
            hash,
        })
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_verify_and_forgeries_do_not() {
        let signer = Signer::from_pkcs8(&Signer::generate()).unwrap();
        let head = Head {
            seq: 42,
            hash: [7; 32],
        };
        let c = signer.sign(head, 1_000, "on-demand");
        assert_eq!(c.check(None), Ok(()));
        assert_eq!(c.check(Some(&signer.public_key())), Ok(()));
        assert_eq!(c.head(), Some(head));

        let mut moved = c.clone();
        moved.seq = 41;
        assert_eq!(moved.check(None), Err(CheckpointError::BadSignature));

        // Re-signed by another key: valid on its own, refused against the expected key.
        let other = Signer::from_pkcs8(&Signer::generate()).unwrap();
        let forged = other.sign(head, 1_000, "on-demand");
        assert_eq!(forged.check(None), Ok(()));
        assert!(matches!(
            forged.check(Some(&signer.public_key())),
            Err(CheckpointError::WrongKey { .. })
        ));
        assert_eq!(
            Signer::from_pkcs8(b"nope").err(),
            Some(CheckpointError::BadKey)
        );
    }
}
