//! The audit journal: `audit.journal` next to `audit.db`. With `audit = "required"` a record
//! is durable once it is appended here (one `write` of the records not yet journaled, which
//! survives a crash of Airlock as a committed SQLite transaction does, at a tenth of the
//! cost); the records reach `audit.db` in batches a few milliseconds later, and whatever a
//! crash left only here is moved into `audit.db` when the trail is next opened.
//!
//! A frame: its length (u32, little-endian, of what follows), the record's number (u64),
//! time (i64), previous hash and hash (32 bytes each), and its event text.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;

use super::record::Record;

const FIXED: usize = 8 + 8 + 32 + 32;

/// Appends `r`'s frame to `out`.
pub fn frame(r: &Record, out: &mut Vec<u8>) {
    out.extend_from_slice(&((FIXED + r.event.len()) as u32).to_le_bytes());
    out.extend_from_slice(&r.seq.to_le_bytes());
    out.extend_from_slice(&r.at.to_le_bytes());
    out.extend_from_slice(&r.prev);
    out.extend_from_slice(&r.hash);
    out.extend_from_slice(r.event.as_bytes());
}

/// The whole frames at the start of `bytes`, and how many bytes they take (a frame cut
/// short by a crash, or anything unreadable, ends them).
pub fn frames(bytes: &[u8]) -> (Vec<Record>, usize) {
    let mut records = Vec::new();
    let mut at = 0;
    while let Some(len) = bytes.get(at..at + 4) {
        let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
        let Some(body) = bytes.get(at + 4..at + 4 + len) else {
            break;
        };
        if len < FIXED {
            break;
        }
        let Ok(event) = std::str::from_utf8(&body[FIXED..]) else {
            break;
        };
        let field = |i: usize, n: usize| &body[i..i + n];
        records.push(Record {
            seq: u64::from_le_bytes(field(0, 8).try_into().expect("8 bytes")),
            at: i64::from_le_bytes(field(8, 8).try_into().expect("8 bytes")),
            prev: field(16, 32).try_into().expect("32 bytes"),
            hash: field(48, 32).try_into().expect("32 bytes"),
            event: event.to_owned(),
        });
        at += 4 + len;
    }
    (records, at)
}

pub struct Journal {
    file: File,
    len: u64,
}

impl Journal {
    /// Opens (creating if needed) the journal in `dir`; returns it and the records it holds.
    pub fn open(dir: &Path) -> std::io::Result<(Journal, Vec<Record>)> {
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(dir.join("audit.journal"))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let (records, used) = frames(&bytes);
        if used < bytes.len() {
            // A frame cut short: its statement was never forwarded.
            file.set_len(used as u64)?;
        }
        let journal = Journal {
            file,
            len: used as u64,
        };
        Ok((journal, records))
    }

    /// Appends `bytes` (whole frames) in one write.
    pub fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.file.write_all(bytes)?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Empties the journal (everything in it is in `audit.db`).
    pub fn clear(&mut self) -> std::io::Result<()> {
        self.file.set_len(0)?;
        self.len = 0;
        Ok(())
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::Head;

    #[test]
    fn frames_round_trip_and_a_torn_tail_is_dropped() {
        let a = Head::EMPTY.next(1, "{\"a\":1}".into());
        let b = Head {
            seq: a.seq,
            hash: a.hash,
        }
        .next(2, "{\"b\":2}".into());
        let mut bytes = Vec::new();
        frame(&a, &mut bytes);
        frame(&b, &mut bytes);
        let whole = bytes.len();
        bytes.extend_from_slice(&[40, 0, 0, 0, 1, 2, 3]);
        let (records, used) = frames(&bytes);
        assert_eq!(records, vec![a, b]);
        assert_eq!(used, whole);
    }
}
