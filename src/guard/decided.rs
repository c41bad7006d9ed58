//! The decisions a worker thread's sessions remember, by scope (a listener's guard and one
//! identity: see `Guard::scope_of`) and the cache key of the statements they were made for.
//!
//! One table for the thread's sessions rather than one each: every session of an identity
//! finds the decisions the others made, and the table's lines, touched by every statement
//! the thread judges, stay in the cache where a session's own would not (between two
//! statements of a session the database, the kernel and the other sessions run).
//!
//! A small two-way set-associative table rather than a general hash map: a key's hash names
//! one set of two slots, and each slot holds the hash, the scope, the decision and (up to
//! [`INLINE`] bytes, as long as any of pgbench's and most applications' shapes) the key in
//! its own three lines. So a lookup waits once, for lines whose addresses it knows from the
//! hash (a general map, or a key of its own allocation, waits for one line, then the next).
//!
//! Bounded: at most [`MAX_ENTRIES`] decisions, and keys of [`MAX_BYTES`] in all. A key is only
//! ever found by comparing its scope and the key whole, so a hash collision costs a miss,
//! never a wrong decision.

use std::hash::BuildHasher;
use std::sync::Arc;

use super::Judged;
use crate::inspect::Verdict;

/// Sets a thread's table grows to, at most (384 KiB).
const MAX_SETS: usize = 1024;
/// Decisions a thread remembers, at most.
#[cfg(test)]
pub const MAX_ENTRIES: usize = 2 * MAX_SETS;
/// Bytes of keys a thread remembers, at most. A statement whose key is longer than a
/// sixteenth of it (64 KiB) is not remembered.
pub const MAX_BYTES: u32 = 1 << 20;
/// Sets a table starts with, when it remembers its first decision.
const FIRST_SETS: usize = 16;

/// Keys up to this long are held in their slot (a slot is then three cache lines).
const INLINE: usize = 144;

#[repr(C, align(64))]
struct Slot {
    hash: u64,
    scope: u64,
    judged: Arc<Judged>,
    /// A key longer than [`INLINE`] bytes; without one the key is `inline[..len]`.
    long: Option<Box<[u8]>>,
    len: u32,
    /// The decision lets the statements through: known without reading the decision.
    forwards: bool,
    inline: [u8; INLINE],
}

impl Slot {
    fn key(&self) -> &[u8] {
        match &self.long {
            Some(key) => key,
            None => self.inline.get(..self.len as usize).unwrap_or_default(),
        }
    }
}

#[derive(Default)]
struct Set([Option<Slot>; 2]);

/// A decision found in the table.
pub struct Remembered<'a> {
    pub judged: &'a Arc<Judged>,
    /// The decision lets the statements through: known without reading it.
    pub forwards: bool,
}

/// A thread's remembered decisions.
pub struct Decided {
    sets: Vec<Set>,
    hasher: foldhash::fast::RandomState,
    /// Bytes of the keys held, and at most.
    bytes: u32,
    max_bytes: u32,
}

impl Default for Decided {
    fn default() -> Decided {
        Decided::new(MAX_BYTES)
    }
}

impl Decided {
    /// An empty table whose keys may take `max_bytes` in all.
    pub fn new(max_bytes: u32) -> Decided {
        Decided {
            sets: Vec::new(),
            hasher: foldhash::fast::RandomState::default(),
            bytes: 0,
            max_bytes,
        }
    }

    /// The decision remembered in `scope` for `key`.
    #[inline]
    pub fn get(&self, scope: u64, key: &[u8]) -> Option<Remembered<'_>> {
        if self.sets.is_empty() {
            return None;
        }
        let hash = self.hasher.hash_one((scope, key));
        let set = &self.sets[hash as usize & (self.sets.len() - 1)];
        let slot = set
            .0
            .iter()
            .flatten()
            .find(|s| s.hash == hash && s.scope == scope && same(s.key(), key))?;
        Some(Remembered {
            judged: &slot.judged,
            forwards: slot.forwards,
        })
    }

    /// Remembers `judged` in `scope` for `key`. A key longer than a sixteenth of the byte
    /// budget is not remembered; when the budget would be exceeded, everything is forgotten
    /// first.
    pub fn insert(&mut self, scope: u64, key: &[u8], judged: Arc<Judged>) {
        // At most a sixteenth of the budget (64 KiB), so that the sums below stay in a u32.
        let len = key.len() as u32;
        if key.len() > (self.max_bytes / 16) as usize {
            return;
        }
        if self.bytes + len > self.max_bytes {
            self.clear();
        }
        if self.sets.is_empty() {
            self.sets.resize_with(FIRST_SETS, Set::default);
        }
        let hash = self.hasher.hash_one((scope, key));
        while self.full_set(hash) && self.sets.len() < MAX_SETS {
            self.grow();
        }
        let mask = self.sets.len() - 1;
        let [first, second] = &mut self.sets[hash as usize & mask].0;
        // The newest first; what the second slot held is forgotten.
        let mut inline = [0; INLINE];
        let long = match inline.get_mut(..key.len()) {
            Some(short) => {
                short.copy_from_slice(key);
                None
            }
            None => Some(Box::from(key)),
        };
        let slot = Slot {
            hash,
            scope,
            forwards: matches!(judged.verdict, Verdict::Forward),
            judged,
            long,
            len,
            inline,
        };
        let old = std::mem::replace(second, first.replace(slot));
        self.bytes += len;
        if let Some(old) = old {
            self.bytes -= old.len;
        }
    }

    /// Forgets every decision.
    pub fn clear(&mut self) {
        self.sets.iter_mut().for_each(|set| *set = Set::default());
        self.bytes = 0;
    }

    /// Decisions held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.sets.iter().map(|s| s.0.iter().flatten().count()).sum()
    }

    /// Decisions held in `scope`.
    #[cfg(test)]
    pub fn count(&self, scope: u64) -> usize {
        let slots = self.sets.iter().flat_map(|s| s.0.iter().flatten());
        slots.filter(|s| s.scope == scope).count()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of the keys held.
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.bytes as usize
    }

    fn full_set(&self, hash: u64) -> bool {
        let set = &self.sets[hash as usize & (self.sets.len() - 1)];
        set.0.iter().all(Option::is_some)
    }

    /// Twice the lines, each decision moved to its line in the larger table.
    fn grow(&mut self) {
        let mut sets = Vec::new();
        sets.resize_with(self.sets.len() * 2, Set::default);
        let mask = sets.len() - 1;
        for slot in self.sets.drain(..).flat_map(|set| set.0).flatten() {
            // Each line of the old table splits into two lines of the new one, so no line
            // receives more than the two slots of the line it came from.
            let [first, second] = &mut sets[slot.hash as usize & mask].0;
            match first {
                None => *first = Some(slot),
                Some(_) => *second = Some(slot),
            }
        }
        self.sets = sets;
    }
}

/// `a == b`, compared here eight bytes at a time rather than in the C library's `bcmp`: a
/// key is short, and the library's code is one more thing to fetch from far away.
#[inline]
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tails = a8.remainder().iter().eq(b8.remainder());
    let word = |c: &[u8]| u64::from_ne_bytes(c.try_into().unwrap_or_default());
    tails && a8.zip(b8).all(|(x, y)| word(x) == word(y))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::{Denial, Verdict};

    fn judged() -> Arc<Judged> {
        Arc::new(Judged {
            statements: Arc::new([]),
            verdict: Verdict::Forward,
            severity: 0,
            rule: None,
            dynamic: None,
        })
    }

    fn denied() -> Arc<Judged> {
        Arc::new(Judged {
            verdict: Verdict::Deny(Denial {
                message: "no".into(),
                detail: None,
                hint: None,
            }),
            severity: 2,
            ..(*judged()).clone()
        })
    }

    #[test]
    fn says_which_decisions_let_statements_through() {
        let mut d = Decided::new(1 << 16);
        d.insert(1, b"SELECT ?", judged());
        d.insert(1, b"DROP TABLE t", denied());
        let forwards = |key: &[u8]| d.get(1, key).is_some_and(|r| r.forwards);
        assert!(forwards(b"SELECT ?"));
        assert!(!forwards(b"DROP TABLE t"));
        assert!(d.get(1, b"DROP TABLE t").is_some());
        assert!(!forwards(b"SELECT ?, ?"));
    }

    #[test]
    fn finds_a_decision_only_in_its_own_scope() {
        let mut d = Decided::new(1 << 16);
        d.insert(1, b"SELECT ?", judged());
        d.insert(2, b"DROP TABLE t", denied());
        assert!(d.get(1, b"SELECT ?").is_some());
        assert!(d.get(2, b"SELECT ?").is_none());
        assert!(d.get(1, b"DROP TABLE t").is_none());
        assert!(d.get(2, b"DROP TABLE t").is_some());
    }

    #[test]
    fn finds_what_it_holds_by_the_whole_key() {
        let mut d = Decided::new(1 << 16);
        assert!(d.get(1, b"SELECT ?").is_none());
        let j = judged();
        d.insert(1, b"SELECT ?", j.clone());
        assert!(Arc::ptr_eq(d.get(1, b"SELECT ?").unwrap().judged, &j));
        assert!(d.get(1, b"SELECT ?x").is_none());
        assert!(d.get(1, b"SELECT").is_none());
        // Keys of one length that differ in a whole word, or in the bytes after the last.
        d.insert(1, b"SELECT a FROM t1 x", j.clone());
        assert!(d.get(1, b"SELECT a FROM t1 x").is_some());
        assert!(d.get(1, b"SELECT b FROM t1 x").is_none());
        assert!(d.get(1, b"SELECT a FROM t1 y").is_none());
        assert!(d.get(1, b"SELECT a FROM t2 x").is_none());
        // Keys held in their slot and beyond it.
        for (fill, len) in (b'a'..).zip([INLINE - 1, INLINE, INLINE + 1, 3 * INLINE]) {
            let key = vec![fill; len];
            d.insert(1, &key, j.clone());
            assert!(d.get(1, &key).is_some(), "{len}");
            let mut other = key.clone();
            other[len - 1] = b'x';
            assert!(d.get(1, &other).is_none(), "{len}");
            assert!(d.get(1, &key[..len - 1]).is_none(), "{len}");
        }
        assert_eq!(std::mem::size_of::<Slot>(), 192, "three cache lines");
        d.clear();
        d.insert(1, b"SELECT ?", j.clone());
        assert_eq!((d.len(), d.bytes()), (1, 8));
        d.clear();
        assert!(d.get(1, b"SELECT ?").is_none());
        assert_eq!((d.len(), d.bytes()), (0, 0));
    }

    #[test]
    fn grows_to_its_bound_and_keeps_the_newest() {
        let mut d = Decided::new(1 << 20);
        let keys: Vec<String> = (0..5000).map(|i| format!("SELECT c{i} FROM t")).collect();
        for key in &keys {
            d.insert(1, key.as_bytes(), judged());
            // The newest is always found.
            assert!(d.get(1, key.as_bytes()).is_some());
            assert!(d.len() <= 2 * MAX_SETS);
            assert!(d.sets.len() <= MAX_SETS);
        }
        let held = keys
            .iter()
            .filter(|k| d.get(1, k.as_bytes()).is_some())
            .count();
        assert_eq!(held, d.len());
        assert!(d.len() > MAX_SETS, "{}", d.len());
        let bytes: usize = keys
            .iter()
            .filter(|k| d.get(1, k.as_bytes()).is_some())
            .map(|k| k.len())
            .sum();
        assert_eq!(bytes, d.bytes());
    }

    #[test]
    fn grows_rather_than_forget_while_it_can() {
        // A few statements stay remembered: a key whose line is full grows the
        // table, and only a table at its bound forgets.
        for _ in 0..50 {
            let mut d = Decided::new(1 << 16);
            for i in 0..12 {
                d.insert(1, format!("UPDATE t{i} SET a = ?").as_bytes(), judged());
                assert!(d.len() == i + 1 || d.sets.len() == MAX_SETS);
            }
        }
    }

    #[test]
    fn stays_within_its_byte_budget() {
        let mut d = Decided::new(1000);
        d.insert(1, "x".repeat(63).as_bytes(), judged());
        assert!(
            d.is_empty(),
            "a key over a sixteenth of the budget is not kept"
        );
        for i in 0..100 {
            d.insert(1, format!("{i:>60}").as_bytes(), judged());
            assert!(d.bytes() <= 1000);
        }
        assert!(!d.is_empty());
    }
}
