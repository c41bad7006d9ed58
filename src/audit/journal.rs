//! The audit journal: `audit.journal` next to `audit.db`. With `audit = "required"` what is
//! appended here is durable (one `write`, which survives a crash of Airlock as a committed
//! SQLite transaction does, at a tenth of the cost); the records reach `audit.db` in batches
//! a few milliseconds later, and whatever a crash left only here is moved into `audit.db`
//! when the trail is next opened. A journal grown past its size is set aside
//! (`audit.journal.old`) for a new one, and removed once its records are in `audit.db`.
//!
//! A statement's record is chained once its answer is known; until then the journal holds
//! its *intent*: the statement's event without an outcome, written before the statement is
//! forwarded. The record that completes it names the intent it settles; an intent that no
//! record settles (Airlock stopped first) becomes a record with no outcome at recovery.
//!
//! A frame: its length (u32, little-endian, of what follows), the record's number (u64; 0
//! for an intent), time (i64), previous hash and hash (32 bytes each; zero for an intent),
//! the intent it settles or is (u64; 0 for none), and its event text.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::record::Record;

const FIXED: usize = 8 + 8 + 32 + 32 + 8;

/// What the journal holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A chained record, completing the intent `settles` (0: none).
    Record { record: Record, settles: u64 },
    /// A statement whose record waits for its answer.
    Intent { id: u64, at: i64, event: String },
}

/// Appends the frame of record `r` (which settles intent `settles`, or 0) to `out`.
pub fn frame(r: &Record, settles: u64, out: &mut Vec<u8>) {
    put(out, r.seq, r.at, &r.prev, &r.hash, settles, &r.event);
}

/// Appends the frame of intent `id` to `out`.
pub fn frame_intent(id: u64, at: i64, event: &str, out: &mut Vec<u8>) {
    put(out, 0, at, &[0; 32], &[0; 32], id, event);
}

fn put(
    out: &mut Vec<u8>,
    seq: u64,
    at: i64,
    prev: &[u8; 32],
    hash: &[u8; 32],
    intent: u64,
    event: &str,
) {
    out.extend_from_slice(&((FIXED + event.len()) as u32).to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&at.to_le_bytes());
    out.extend_from_slice(prev);
    out.extend_from_slice(hash);
    out.extend_from_slice(&intent.to_le_bytes());
    out.extend_from_slice(event.as_bytes());
}

/// The whole frames at the start of `bytes`, and how many bytes they take (a frame cut
/// short by a crash, or anything unreadable, ends them).
pub fn frames(bytes: &[u8]) -> (Vec<Entry>, usize) {
    let mut entries = Vec::new();
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
        let word = |i: usize| u64::from_le_bytes(field(i, 8).try_into().expect("8 bytes"));
        let (seq, time, intent) = (word(0), word(8) as i64, word(80));
        entries.push(match seq {
            0 => Entry::Intent {
                id: intent,
                at: time,
                event: event.to_owned(),
            },
            _ => Entry::Record {
                record: Record {
                    seq,
                    at: time,
                    prev: field(16, 32).try_into().expect("32 bytes"),
                    hash: field(48, 32).try_into().expect("32 bytes"),
                    event: event.to_owned(),
                },
                settles: intent,
            },
        });
        at += 4 + len;
    }
    (entries, at)
}

/// The chained records among `entries`, in order.
pub fn records(entries: Vec<Entry>) -> Vec<Record> {
    entries
        .into_iter()
        .filter_map(|e| match e {
            Entry::Record { record, .. } => Some(record),
            Entry::Intent { .. } => None,
        })
        .collect()
}

/// The journal appended to.
const NAME: &str = "audit.journal";
/// A full journal set aside until its records are in `audit.db`.
const RETIRED: &str = "audit.journal.old";

/// The whole frames in `dir`'s journals, oldest first (what a running Airlock has not
/// committed to `audit.db` yet, or what a crash left), read without changing anything.
pub fn read(dir: &Path) -> Vec<Entry> {
    let mut entries = Vec::new();
    for name in [RETIRED, NAME] {
        if let Ok(bytes) = std::fs::read(dir.join(name)) {
            entries.extend(frames(&bytes).0);
        }
    }
    entries
}

pub struct Journal {
    dir: PathBuf,
    file: File,
    len: u64,
    /// Whether a full journal is set aside ([`RETIRED`]).
    retired: bool,
}

impl Journal {
    /// Opens (creating if needed) the journal in `dir`; returns it and what it holds, after
    /// what a journal set aside before it holds.
    pub fn open(dir: &Path) -> std::io::Result<(Journal, Vec<Entry>)> {
        let retired = dir.join(RETIRED);
        let mut entries = match std::fs::read(&retired) {
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
        entries.extend(current);
        let journal = Journal {
            dir: dir.to_owned(),
            file,
            len: used as u64,
            retired: retired.exists(),
        };
        Ok((journal, entries))
    }

    /// Appends `bytes` (whole frames) in one write.
    pub fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.file.write_all(bytes)?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Once the journal is larger than `max`, sets it aside and goes on in a new one that
    /// starts with `carried` (whole frames: the intents still open, which must outlive the
    /// journal set aside); [`Journal::drop_retired`] removes that once its records are in
    /// `audit.db`. Only one is set aside at a time.
    pub fn rotate(&mut self, max: u64, carried: &[u8]) -> std::io::Result<()> {
        if !self.due(max) {
            return Ok(());
        }
        let (current, retired) = (self.dir.join(NAME), self.dir.join(RETIRED));
        std::fs::rename(&current, &retired)?;
        let fresh = OpenOptions::new()
            .append(true)
            .create(true)
            .open(&current)
            .and_then(|mut file| file.write_all(carried).map(|()| file));
        match fresh {
            Ok(file) => {
                self.file = file;
                self.len = carried.len() as u64;
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

    /// Whether [`Journal::rotate`] would set the journal aside.
    pub fn due(&self, max: u64) -> bool {
        !self.retired && self.len > max
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
        frame(&a, 0, &mut bytes);
        frame_intent(7, 3, "{\"c\":3}", &mut bytes);
        frame(&b, 7, &mut bytes);
        let whole = bytes.len();
        bytes.extend_from_slice(&[40, 0, 0, 0, 1, 2, 3]);
        let (entries, used) = frames(&bytes);
        assert_eq!(
            entries,
            vec![
                Entry::Record {
                    record: a,
                    settles: 0
                },
                Entry::Intent {
                    id: 7,
                    at: 3,
                    event: "{\"c\":3}".into()
                },
                Entry::Record {
                    record: b,
                    settles: 7
                },
            ]
        );
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
            head = r.head();
            let mut bytes = Vec::new();
            frame(&r, 0, &mut bytes);
            j.append(&bytes).unwrap();
        };
        let (mut j, _) = Journal::open(dir.path()).unwrap();
        let mut open = Vec::new();
        frame_intent(9, 0, "{}", &mut open);
        j.append(&open).unwrap();
        next(&mut j);
        next(&mut j);
        // The intent still open is carried into the new journal.
        j.rotate(1, &open).unwrap();
        next(&mut j);
        // Only one journal is set aside at a time.
        j.rotate(1, &open).unwrap();
        next(&mut j);
        // Records by number, intents as 0.
        let seqs = |entries: Vec<Entry>| {
            entries
                .iter()
                .map(|e| match e {
                    Entry::Record { record, .. } => record.seq,
                    Entry::Intent { .. } => 0,
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(seqs(read(dir.path())), [0, 1, 2, 0, 3, 4]);
        assert_eq!(
            seqs(Journal::open(dir.path()).unwrap().1),
            [0, 1, 2, 0, 3, 4]
        );
        j.drop_retired().unwrap();
        assert_eq!(seqs(read(dir.path())), [0, 3, 4]);
        j.clear().unwrap();
        assert!(read(dir.path()).is_empty());
        assert!(Journal::open(dir.path()).unwrap().0.is_empty());
    }
}
