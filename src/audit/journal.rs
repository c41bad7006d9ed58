//! The audit journal: `audit.journal` next to `audit.db`. With `audit = "required"` a record
//! is durable once it is appended here (one `write` of the records not yet journaled, which
//! survives a crash of Airlock as a committed SQLite transaction does, at a tenth of the
//! cost); the records reach `audit.db` in batches a few milliseconds later, and whatever a
//! crash left only here is moved into `audit.db` when the trail is next opened. A journal
//! grown past its size is set aside (`audit.journal.old`) for a new one, and removed once its
//! records are in `audit.db`.
//!
//! A frame: its length (u32, little-endian, of what follows), the record's number (u64),
//! time (i64), previous hash and hash (32 bytes each), and its event text.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

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

/// The journal appended to.
const NAME: &str = "audit.journal";
/// A full journal set aside until its records are in `audit.db`.
const RETIRED: &str = "audit.journal.old";

/// The whole frames in `dir`'s journals, oldest first (what a running Airlock has not
/// committed to `audit.db` yet, or what a crash left), read without changing anything.
pub fn read(dir: &Path) -> Vec<Record> {
    let mut records = Vec::new();
    for name in [RETIRED, NAME] {
        if let Ok(bytes) = std::fs::read(dir.join(name)) {
            records.extend(frames(&bytes).0);
        }
    }
    records
}

pub struct Journal {
    dir: PathBuf,
    file: File,
    len: u64,
    /// Whether a full journal is set aside ([`RETIRED`]).
    retired: bool,
}

impl Journal {
    /// Opens (creating if needed) the journal in `dir`; returns it and the records it holds,
    /// with those of a journal set aside before them.
    pub fn open(dir: &Path) -> std::io::Result<(Journal, Vec<Record>)> {
        let retired = dir.join(RETIRED);
        let mut records = match std::fs::read(&retired) {
            Ok(bytes) => frames(&bytes).0,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(dir.join(NAME))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let (current, used) = frames(&bytes);
        if used < bytes.len() {
            // A frame cut short: its statement was never forwarded.
            file.set_len(used as u64)?;
        }
        records.extend(current);
        let journal = Journal {
            dir: dir.to_owned(),
            file,
            len: used as u64,
            retired: retired.exists(),
        };
        Ok((journal, records))
    }

    /// Appends `bytes` (whole frames) in one write.
    pub fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.file.write_all(bytes)?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Once the journal is larger than `max`, sets it aside and goes on in a new, empty one;
    /// [`Journal::drop_retired`] removes it once its records are in `audit.db`. Only one is
    /// set aside at a time.
    pub fn rotate(&mut self, max: u64) -> std::io::Result<()> {
        if self.retired || self.len <= max {
            return Ok(());
        }
        let (current, retired) = (self.dir.join(NAME), self.dir.join(RETIRED));
        std::fs::rename(&current, &retired)?;
        match OpenOptions::new().append(true).create(true).open(&current) {
            Ok(file) => {
                self.file = file;
                self.len = 0;
                self.retired = true;
                Ok(())
            }
            Err(e) => {
                // Go on appending to the full journal, under its own name again, so that
                // nothing newer lands in a file about to be removed.
                let _ = std::fs::rename(&retired, &current);
                Err(e)
            }
        }
    }

    /// Removes the journal set aside by [`Journal::rotate`]: its records are in `audit.db`.
    pub fn drop_retired(&mut self) -> std::io::Result<()> {
        match self.retired {
            true => self.remove_retired(),
            false => Ok(()),
        }
    }

    fn remove_retired(&mut self) -> std::io::Result<()> {
        match std::fs::remove_file(self.dir.join(RETIRED)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => {
                self.retired = false;
                Ok(())
            }
        }
    }

    /// Empties the journal and removes one set aside (everything is in `audit.db`).
    pub fn clear(&mut self) -> std::io::Result<()> {
        self.remove_retired()?;
        self.file.set_len(0)?;
        self.len = 0;
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0 && !self.retired
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

    /// A full journal is set aside for a new one; until it is dropped, opening (recovery)
    /// and readers see its records before the new journal's.
    #[test]
    fn a_rotated_journal_is_read_first_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let mut head = Head::EMPTY;
        let mut next = |j: &mut Journal| {
            let r = head.next(0, format!("{{\"n\":{}}}", head.seq));
            head = Head {
                seq: r.seq,
                hash: r.hash,
            };
            let mut bytes = Vec::new();
            frame(&r, &mut bytes);
            j.append(&bytes).unwrap();
        };
        let (mut j, _) = Journal::open(dir.path()).unwrap();
        next(&mut j);
        next(&mut j);
        j.rotate(1).unwrap();
        next(&mut j);
        // Only one journal is set aside at a time.
        j.rotate(1).unwrap();
        next(&mut j);
        let seqs = |records: Vec<Record>| records.iter().map(|r| r.seq).collect::<Vec<_>>();
        assert_eq!(seqs(read(dir.path())), [1, 2, 3, 4]);
        assert_eq!(seqs(Journal::open(dir.path()).unwrap().1), [1, 2, 3, 4]);
        j.drop_retired().unwrap();
        assert_eq!(seqs(read(dir.path())), [3, 4]);
        j.clear().unwrap();
        assert!(read(dir.path()).is_empty());
        assert!(Journal::open(dir.path()).unwrap().0.is_empty());
    }
}
