//! The audit journal: `audit.journal` next to `audit.db`. With `audit = "required"` what is
//! appended here is durable: it is copied into the file's memory mapping, whose pages the
//! kernel keeps and writes back through a crash of Airlock, as it does a committed SQLite
//! transaction's (power loss may lose either); no system call sits in a statement's path.
//! The records reach `audit.db` in batches a few milliseconds later, and whatever a crash
//! left only here is moved into `audit.db` when the trail is next opened. A journal grown
//! past its size is set aside (`audit.journal.old`) for a new one, and once its records
//! are in `audit.db` it is emptied and kept (`audit.journal.spare`) to be the next.
//!
//! The files are preallocated: past the frames there are zeros, or an emptied journal's
//! old frames behind a zero length. Readers stop at the first zero length, and a batch of
//! frames is written so that its first length is the last thing written.
//!
//! A statement's record is made once its answer is known; until then the journal holds
//! its *intent*: the statement's event without an outcome, written before the statement is
//! forwarded. The record that completes it names the intent it settles; an intent that no
//! record settles (Airlock stopped first) becomes a record with no outcome at recovery.
//!
//! A record is journaled unsealed: its number and time but not its hashes, which the flusher
//! computes as it commits and recovery as it replays. A statement's record carries only its
//! outcome (the JSON that completes the intent's text, see [`splice_outcome`]): the
//! statement itself is in the journal already. Journals written before records were unsealed
//! hold them sealed, whole and with their hashes; both are read.
//!
//! A frame: its length (u32, little-endian, of what follows), the record's number (u64; 0
//! for an intent), time (i64), previous hash and hash (32 bytes each; zero for an intent and
//! for an unsealed record), the intent it settles or is (u64; 0 for none), and its text: the
//! event, or for an unsealed record that settles an intent, the outcome.

use std::collections::{BTreeMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};

use super::record::{Head, Record, Verifier, splice_outcome};
use super::segment::Segment;

/// What a new journal file is given: room for a journal past [`Journal::due`]'s size
/// until the flusher sets it aside. A batch that does not fit grows it.
const SEGMENT: usize = 8 << 20;

const FIXED: usize = 8 + 8 + 32 + 32 + 8;

/// What the journal holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A chained record, completing the intent `settles` (0: none).
    Record { record: Record, settles: u64 },
    /// A record not sealed yet: its number, time, and its event, or, when it settles an
    /// intent, the statement's outcome.
    Unsealed {
        seq: u64,
        at: i64,
        settles: u64,
        text: String,
    },
    /// A statement whose record waits for its answer.
    Intent { id: u64, at: i64, event: String },
}

/// Appends the frame of record `r` (which settles intent `settles`, or 0) to `out`, sealed
/// and whole, as journals written before records were unsealed hold them (what the tests of
/// reading those journals write).
#[cfg(test)]
pub fn frame(r: &Record, settles: u64, out: &mut Vec<u8>) {
    put(out, r.seq, r.at, &r.prev, &r.hash, settles, &r.event);
}

/// Appends the frame of unsealed record `seq`: with `settles` 0 its event, otherwise the
/// outcome that completes the text of intent `settles`.
pub fn frame_unsealed(seq: u64, at: i64, settles: u64, text: &str, out: &mut Vec<u8>) {
    put(out, seq, at, &[0; 32], &[0; 32], settles, text);
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

/// The whole frame at `at` in `bytes`, with its length; `None` where there is none (a zero
/// length ends the frames, as does a frame cut short).
fn frame_at(bytes: &[u8], at: usize) -> Option<&[u8]> {
    let len = u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().expect("4 bytes")) as usize;
    let frame = bytes.get(at..at + 4 + len)?;
    (len >= FIXED).then_some(frame)
}

/// The whole frames at the start of `bytes`, and how many bytes they take (a frame cut
/// short by a crash, or anything unreadable, ends them).
pub fn frames(bytes: &[u8]) -> (Vec<Entry>, usize) {
    let mut entries = Vec::new();
    let mut at = 0;
    while let Some(frame) = frame_at(bytes, at) {
        let body = &frame[4..];
        let Ok(event) = std::str::from_utf8(&body[FIXED..]) else {
            break;
        };
        let field = |i: usize, n: usize| &body[i..i + n];
        let word = |i: usize| u64::from_le_bytes(field(i, 8).try_into().expect("8 bytes"));
        let (seq, time, intent) = (word(0), word(8) as i64, word(80));
        let hash: [u8; 32] = field(48, 32).try_into().expect("32 bytes");
        entries.push(match seq {
            0 => Entry::Intent {
                id: intent,
                at: time,
                event: event.to_owned(),
            },
            _ if hash == [0; 32] => Entry::Unsealed {
                seq,
                at: time,
                settles: intent,
                text: event.to_owned(),
            },
            _ => Entry::Record {
                record: Record {
                    seq,
                    at: time,
                    prev: field(16, 32).try_into().expect("32 bytes"),
                    hash,
                    event: event.to_owned(),
                },
                settles: intent,
            },
        });
        at += frame.len();
    }
    (entries, at)
}

/// What a journal's entries amount to beyond a chain head.
#[derive(Debug, Default)]
pub struct Replayed {
    /// The records that follow the head without a gap, sealed, in order, each with the
    /// intent it settles (0: none).
    pub records: Vec<(Record, u64)>,
    /// Every intent, by number: its time and event (without an outcome).
    pub intents: BTreeMap<u64, (i64, String)>,
    /// The intents that a record at or before the head, or among `records`, settles.
    pub settled: HashSet<u64>,
}

/// Replays `entries` (oldest first) after the chain head `after`: records at or before it
/// are in `audit.db` already; those after it are taken while they follow it, unsealed ones
/// sealed here. A gap, a record that does not follow, or an outcome with no intent to
/// complete ends them.
pub fn replay(entries: Vec<Entry>, after: Head) -> Replayed {
    let mut out = Replayed::default();
    let mut v = Verifier { head: after };
    let mut following = true;
    for entry in entries {
        let (seq, settles) = match &entry {
            Entry::Intent { .. } => (0, 0),
            Entry::Record { record, settles } => (record.seq, *settles),
            Entry::Unsealed { seq, settles, .. } => (*seq, *settles),
        };
        let kept = match entry {
            Entry::Intent { id, at, event } => {
                // An intent carried into a new journal is there twice.
                out.intents.entry(id).or_insert((at, event));
                continue;
            }
            _ if seq <= after.seq => true,
            _ if !following => false,
            Entry::Record { record, .. } => match v.check(&record) {
                Ok(()) => {
                    out.records.push((record, settles));
                    true
                }
                Err(_) => false,
            },
            Entry::Unsealed { at, text, .. } => {
                let event = match settles {
                    0 => Some(text),
                    id => out
                        .intents
                        .get(&id)
                        .and_then(|(_, statement)| splice_outcome(statement, &text)),
                };
                match event {
                    Some(event) if seq == v.head.seq + 1 => {
                        let record = v.head.next(at, event);
                        v.head = record.head();
                        out.records.push((record, settles));
                        true
                    }
                    _ => false,
                }
            }
        };
        following &= kept;
        if kept && settles != 0 {
            out.settled.insert(settles);
        }
    }
    out
}

/// The journal appended to.
const NAME: &str = "audit.journal";
/// A full journal set aside until its records are in `audit.db`.
const RETIRED: &str = "audit.journal.old";
/// A journal set aside and emptied, kept to be the next one.
const SPARE: &str = "audit.journal.spare";

/// Whether `dir` holds a journal (a best-effort trail, or one never opened, has none).
pub fn exists(dir: &Path) -> bool {
    dir.join(NAME).exists() || dir.join(RETIRED).exists()
}

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

/// A new journal file at `path`, locked and mapped.
fn create(path: &Path) -> std::io::Result<Segment> {
    Segment::map(open_locked(path, true)?, SEGMENT)
}

/// The journal file at `path` (made if missing, emptied if `truncate`), locked.
fn open_locked(path: &Path, truncate: bool) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(truncate)
        .open(path)?;
    lock(&file, path)?;
    Ok(file)
}

/// Locks a journal file for this process alone while it is mapped. A lock still held is
/// tried again for a moment before it is taken to be another Airlock's: a process this one
/// has just started holds a copy of its open files, and their locks, until it runs its own
/// program.
fn lock(file: &File, path: &Path) -> std::io::Result<()> {
    let mut attempts = 1;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(()),
            Err(std::fs::TryLockError::WouldBlock) if attempts < LOCK_TRIES => {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(std::io::Error::other(format!(
                    "{} is in use by another Airlock: give each its own [state] dir",
                    path.display()
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(std::io::Error::other(format!(
                    "cannot lock {} ({e}): the state directory must be on a file system with flock",
                    path.display()
                )));
            }
        }
    }
}

/// Attempts, 10 ms apart, to lock a journal file before it is taken to be in use.
const LOCK_TRIES: u32 = 20;

/// The journal appended to: frames are copied into its mapping (no system call; the page
/// cache keeps them through a crash of Airlock). A journal set aside and emptied is kept,
/// mapped, to be the next one, so that its memory is reused rather than faulted in anew.
pub struct Journal {
    dir: PathBuf,
    current: Segment,
    /// The length of its frames.
    len: usize,
    /// Whether a full journal is set aside ([`RETIRED`]), and its mapping unless it was
    /// found at start.
    retired: bool,
    set_aside: Option<Segment>,
    /// A journal emptied, to be the next one ([`SPARE`]).
    spare: Option<Segment>,
}

impl Journal {
    /// Opens (creating if needed) the journal in `dir`, locked against another Airlock
    /// using the same state directory (each journal file is locked while it is mapped);
    /// returns it and what it holds, after what a journal set aside before it holds.
    pub fn open(dir: &Path) -> std::io::Result<(Journal, Vec<Entry>)> {
        let retired = dir.join(RETIRED);
        let mut entries = match std::fs::read(&retired) {
            Ok(bytes) => frames(&bytes).0,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let mut file = open_locked(&dir.join(NAME), false)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let (current, used) = frames(&bytes);
        // Drops a frame cut short (its statement was never forwarded) and whatever stale
        // frames lie past the end; zeros follow.
        file.set_len(used as u64)?;
        let current_map = Segment::map(file, SEGMENT.max(used + SEGMENT / 2))?;
        entries.extend(current);
        match std::fs::remove_file(dir.join(SPARE)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let journal = Journal {
            dir: dir.to_owned(),
            current: current_map,
            len: used,
            retired: retired.exists(),
            set_aside: None,
            spare: None,
        };
        Ok((journal, entries))
    }

    /// Appends `bytes` (whole frames), all or nothing.
    pub fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.current.put(self.len, bytes)?;
        self.len += bytes.len();
        Ok(())
    }

    /// Where the next frame goes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Appends to `out` the whole frame at `at` (where [`Journal::len`] said it went).
    pub fn copy_frame(&mut self, at: usize, out: &mut Vec<u8>) -> std::io::Result<()> {
        let copied = self.current.read(self.len, |bytes| {
            frame_at(bytes, at).map(|frame| out.extend_from_slice(frame))
        })?;
        copied.ok_or_else(|| std::io::Error::other(format!("no whole frame at {at}")))
    }

    /// Once the journal is larger than `max`, sets it aside and goes on in a new one that
    /// starts with `carried` (whole frames: the intents still open, which must outlive the
    /// journal set aside); [`Journal::recycle_retired`] empties that once its records are in
    /// `audit.db`. Only one is set aside at a time.
    pub fn rotate(&mut self, max: u64, carried: &[u8]) -> std::io::Result<()> {
        if !self.due(max) {
            return Ok(());
        }
        let (current, retired) = (self.dir.join(NAME), self.dir.join(RETIRED));
        std::fs::rename(&current, &retired)?;
        let fresh = match self.spare.take() {
            Some(spare) => std::fs::rename(self.dir.join(SPARE), &current).map(|()| spare),
            None => create(&current),
        };
        let fresh = fresh.and_then(|mut fresh| {
            if !carried.is_empty() {
                fresh.put(0, carried)?;
            }
            Ok(fresh)
        });
        match fresh {
            Ok(fresh) => {
                self.set_aside = Some(std::mem::replace(&mut self.current, fresh));
                self.len = carried.len();
                self.retired = true;
                Ok(())
            }
            Err(e) => {
                // Go on appending to the full journal, under its own name again, so that
                // nothing newer lands in a file about to be emptied.
                let _ = std::fs::rename(&retired, &current);
                Err(e)
            }
        }
    }

    /// Whether [`Journal::rotate`] would set the journal aside.
    pub fn due(&self, max: u64) -> bool {
        !self.retired && self.len as u64 > max
    }

    /// Empties the journal set aside by [`Journal::rotate`] (its records are in `audit.db`)
    /// and keeps it to be the next one.
    pub fn recycle_retired(&mut self) -> std::io::Result<()> {
        if !self.retired {
            return Ok(());
        }
        let Some(mut set_aside) = self.set_aside.take() else {
            return self.remove_retired();
        };
        std::fs::rename(self.dir.join(RETIRED), self.dir.join(SPARE))?;
        set_aside.empty()?;
        self.spare = Some(set_aside);
        self.retired = false;
        Ok(())
    }

    fn remove_retired(&mut self) -> std::io::Result<()> {
        match std::fs::remove_file(self.dir.join(RETIRED)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => {
                self.set_aside = None;
                self.retired = false;
                Ok(())
            }
        }
    }

    /// Empties the journal and removes one set aside (everything is in `audit.db`).
    pub fn clear(&mut self) -> std::io::Result<()> {
        self.remove_retired()?;
        self.current.empty()?;
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
        frame_unsealed(3, 4, 7, "{\"d\":4}", &mut bytes);
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
                Entry::Unsealed {
                    seq: 3,
                    at: 4,
                    settles: 7,
                    text: "{\"d\":4}".into()
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
        let mut seq = 0;
        let mut next = |j: &mut Journal| {
            seq += 1;
            let mut bytes = Vec::new();
            frame_unsealed(seq, 0, 0, &format!("{{\"n\":{seq}}}"), &mut bytes);
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
                    Entry::Unsealed { seq, .. } => *seq,
                    Entry::Intent { .. } => 0,
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(seqs(read(dir.path())), [0, 1, 2, 0, 3, 4]);
        // A second Airlock on the same state directory cannot open it.
        let err = Journal::open(dir.path()).err().unwrap().to_string();
        assert!(err.contains("in use by another Airlock"), "{err}");
        j.recycle_retired().unwrap();
        assert_eq!(seqs(read(dir.path())), [0, 3, 4]);
        // The journal emptied becomes the next one: none of its old frames are read.
        j.rotate(1, &open).unwrap();
        next(&mut j);
        assert_eq!(seqs(read(dir.path())), [0, 3, 4, 0, 5]);
        // What a crash leaves (the mapping's pages stay with the file) is recovered.
        drop(j);
        let (mut j, entries) = Journal::open(dir.path()).unwrap();
        assert_eq!(seqs(entries), [0, 3, 4, 0, 5]);
        next(&mut j);
        assert_eq!(seqs(read(dir.path())), [0, 3, 4, 0, 5, 6]);
        j.clear().unwrap();
        assert!(read(dir.path()).is_empty());
        drop(j);
        assert!(Journal::open(dir.path()).unwrap().0.is_empty());
    }

    /// A batch larger than the room left grows the journal; frames written before it stay.
    #[test]
    fn a_large_batch_grows_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(dir.path()).unwrap();
        let big = "x".repeat(SEGMENT + 1000);
        let mut bytes = Vec::new();
        frame_unsealed(1, 0, 0, "{}", &mut bytes);
        j.append(&bytes).unwrap();
        bytes.clear();
        frame_unsealed(2, 0, 0, &big, &mut bytes);
        frame_unsealed(3, 0, 0, "{}", &mut bytes);
        j.append(&bytes).unwrap();
        let texts: Vec<usize> = read(dir.path())
            .iter()
            .map(|e| match e {
                Entry::Unsealed { text, .. } => text.len(),
                _ => 0,
            })
            .collect();
        assert_eq!(texts, [2, big.len(), 2]);
    }

    /// Replaying seals what follows the head: records journaled sealed (as before records
    /// were unsealed) as they are, unsealed ones hashed here, each statement's outcome
    /// completing its intent; a gap, or an outcome with no intent, ends them.
    #[test]
    fn replay_seals_what_follows_the_head_and_stops_at_a_gap() {
        let statement = r#"{"type":"statement","text":"select 1","outcome":null}"#;
        let outcome = r#"{"duration_us":1,"ran":true,"rows":1,"error":null}"#;
        let sealed = Head::EMPTY.next(1, "{\"a\":1}".into());
        let mut bytes = Vec::new();
        frame(&sealed, 0, &mut bytes);
        frame_intent(7, 2, statement, &mut bytes);
        frame_intent(8, 2, statement, &mut bytes);
        frame_unsealed(2, 3, 7, outcome, &mut bytes);
        frame_unsealed(3, 4, 0, "{\"d\":4}", &mut bytes);
        // Record 4 is missing.
        frame_unsealed(5, 5, 8, outcome, &mut bytes);
        let (entries, _) = frames(&bytes);
        let replayed = replay(entries.clone(), Head::EMPTY);
        let seqs: Vec<u64> = replayed.records.iter().map(|(r, _)| r.seq).collect();
        assert_eq!(seqs, [1, 2, 3]);
        assert_eq!(
            replayed.records[1].0.event,
            format!(r#"{{"type":"statement","text":"select 1","outcome":{outcome}}}"#)
        );
        let mut v = Verifier::new();
        for (r, _) in &replayed.records {
            v.check(r).unwrap();
        }
        assert_eq!(replayed.settled, HashSet::from([7]));
        assert_eq!(replayed.intents.len(), 2);
        // After a head that holds record 2: only record 3 follows, and intent 7 is settled.
        let after = replayed.records[1].0.head();
        let replayed = replay(entries, after);
        let seqs: Vec<u64> = replayed.records.iter().map(|(r, _)| r.seq).collect();
        assert_eq!(seqs, [3]);
        assert_eq!(replayed.settled, HashSet::from([7]));
        // An outcome whose intent is not in the journal cannot be completed: it ends them.
        let mut bytes = Vec::new();
        frame_unsealed(1, 1, 9, outcome, &mut bytes);
        frame_unsealed(2, 2, 0, "{}", &mut bytes);
        let replayed = replay(frames(&bytes).0, Head::EMPTY);
        assert!(replayed.records.is_empty());
        assert!(replayed.settled.is_empty());
    }
}
