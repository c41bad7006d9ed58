//! What each prepared-statement and portal name of a PostgreSQL session may hold.
//!
//! The client names statements (Parse, SQL-level PREPARE) and portals (Bind), and later runs
//! them by name. PostgreSQL applies those messages asynchronously and skips everything after
//! an error until the next Sync, so at the moment a Bind or Execute passes, Airlock cannot be
//! sure which earlier Parse or Close took effect. Rather than guess, a name holds every
//! statement it may hold (its candidates), and a statement run by name is judged as the most
//! restrictive of them.
//!
//! Within one pipeline segment (the messages up to a Sync) the latest change to a name is
//! exact: PostgreSQL skips everything after an error until Sync, so a Bind or Execute that
//! runs at all runs after every earlier change of its segment took effect.
//!
//! Changes made since the session was last quiet sit in a window. When the database has
//! answered every sync point and the client has nothing unsynced, the window is settled: if
//! no error came back, every change took effect, in order, and is applied exactly; if an error
//! came back, which changes took effect is unknown, so each name keeps its old candidates and
//! gains the new ones (removals are ignored). Either way the candidates always include what
//! the database really holds, so nothing runs under a milder judgement than its own.

use std::collections::HashMap;
use std::sync::Arc;

use smallvec::SmallVec;

use crate::protocol::pg::Name;

/// Most names remembered per session; a statement or portal past it is not remembered, so
/// running it is judged as unknown.
const MAX_NAMES: usize = 10_000;
/// Most changes kept for an exact settle; past it the window settles as if an error came back.
const MAX_WINDOW: usize = 100_000;

/// Statements and portals are separate namespaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Space {
    Statement,
    Portal,
}

type Key = (Space, Name);

/// What a name may hold: nearly always one statement, kept inline.
pub type Candidates<T> = SmallVec<[Arc<T>; 1]>;

/// Keyed by client-chosen names: seeded per map, and fast on short keys.
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

enum Change<T> {
    /// The name now holds exactly these (a Parse, a Bind, a PREPARE run by a Query).
    Set(Key, Candidates<T>),
    Remove(Key),
    Clear(Space),
}

/// A session's names. `T` is whatever the caller judges a statement by.
///
/// `repr(C)`, counters and flags first: a simple Query touches only those (one cache line of
/// the session's memory instead of one for each map it would otherwise look at).
#[repr(C)]
pub struct Names<T> {
    sent: u64,
    answered: u64,
    /// Changes were made since the last sync point (`segment` and `cleared` may hold some).
    unsynced: bool,
    /// Changes were made since the last settle (`window` and `pending` may hold some).
    unsettled: bool,
    /// A settle may have left portals in `settled`.
    portals_settled: bool,
    errored: bool,
    overflowed: bool,
    /// What the latest change to each name in the current segment left (empty: removed).
    segment: Map<Key, Candidates<T>>,
    /// Spaces cleared in the current segment.
    cleared: Vec<Space>,
    /// The window's changes in order, for an exact settle.
    window: Vec<Change<T>>,
    /// Every candidate the window gives each name, for lookups while it is open.
    pending: Map<Key, Candidates<T>>,
    /// What each name holds as far as the answers settled it: statements and portals apart,
    /// so that forgetting every portal does not walk the statements.
    settled: Settled<T>,
    /// What each name may come to hold at any time: a PREPARE inside a statement that may
    /// run now, later or never. Never forgotten.
    sticky: Map<Key, Candidates<T>>,
}

/// Bytes at the start of [`Names`] that a simple Query reads and writes: the counters and
/// flags before the first map.
pub const HOT_BYTES: usize = std::mem::offset_of!(Names<()>, segment);

impl<T> Default for Names<T> {
    fn default() -> Self {
        Names {
            sent: 0,
            answered: 0,
            unsynced: false,
            unsettled: false,
            portals_settled: false,
            errored: false,
            overflowed: false,
            segment: Map::default(),
            cleared: Vec::new(),
            window: Vec::new(),
            pending: Map::default(),
            settled: Settled::default(),
            sticky: Map::default(),
        }
    }
}

impl<T> Names<T> {
    /// Every candidate `name` may hold; empty if the session never named it.
    pub fn lookup(&self, space: Space, name: &[u8]) -> Candidates<T> {
        let key: Key = (space, name.into());
        let mut out = match self.segment.get(&key) {
            Some(latest) => latest.clone(),
            None if self.cleared.contains(&space) => Candidates::new(),
            None => {
                let mut out = self.settled.get(&key).cloned().unwrap_or_default();
                for c in self.pending.get(&key).into_iter().flatten() {
                    push_unique(&mut out, c.clone());
                }
                out
            }
        };
        for c in self.sticky.get(&key).into_iter().flatten() {
            push_unique(&mut out, c.clone());
        }
        out
    }

    /// `name` now holds exactly `candidates`, once the database applies the change.
    pub fn set(&mut self, space: Space, name: &[u8], candidates: impl Into<Candidates<T>>) {
        let candidates = candidates.into();
        let key: Key = (space, name.into());
        if !self.room_for(&key) {
            return;
        }
        let slot = self.pending.entry(key.clone()).or_default();
        for c in &candidates {
            push_unique(slot, c.clone());
        }
        self.segment.insert(key.clone(), candidates.clone());
        self.log(Change::Set(key, candidates));
    }

    /// `name` may hold `candidate` from now on, at any time.
    pub fn add(&mut self, space: Space, name: &[u8], candidate: Arc<T>) {
        let key: Key = (space, name.into());
        if self.sticky.len() < MAX_NAMES || self.sticky.contains_key(&key) {
            push_unique(self.sticky.entry(key).or_default(), candidate);
        }
    }

    /// `name` is gone, once the database applies the change.
    pub fn remove(&mut self, space: Space, name: &[u8]) {
        let key: Key = (space, name.into());
        if self.segment.len() < MAX_NAMES || self.segment.contains_key(&key) {
            self.segment.insert(key.clone(), Candidates::new());
        }
        self.log(Change::Remove(key));
    }

    /// Every name in `space` is gone, once the database applies the change.
    pub fn clear(&mut self, space: Space) {
        self.segment.retain(|(s, _), _| *s != space);
        self.cleared.push(space);
        self.log(Change::Clear(space));
    }

    /// The database says no transaction block is open: every portal it held is gone (named
    /// ones end with their transaction), so their names hold nothing any more. Changes the
    /// client sent after that sync point are still pending and stay.
    pub fn portals_gone(&mut self) {
        if std::mem::take(&mut self.portals_settled) {
            self.settled.space(Space::Portal).clear();
        }
    }

    /// The client sent a sync point (Query, Sync, FunctionCall).
    pub fn sync_point(&mut self) {
        self.sent += 1;
        if std::mem::take(&mut self.unsynced) {
            self.segment.clear();
            self.cleared.clear();
        }
    }

    /// The database sent an ErrorResponse.
    pub fn error(&mut self) {
        self.errored = true;
    }

    /// The database sent ReadyForQuery.
    pub fn ready(&mut self) {
        self.answered += 1;
        if self.answered == self.sent && !self.unsynced {
            if !self.unsettled {
                // Nothing changed since the last settle (simple queries without PREPARE).
                self.errored = false;
                self.overflowed = false;
            } else {
                self.settle();
            }
        }
    }

    fn room_for(&self, key: &Key) -> bool {
        self.settled.len() + self.pending.len() < MAX_NAMES
            || self.settled.get(key).is_some()
            || self.pending.contains_key(key)
    }

    fn log(&mut self, change: Change<T>) {
        self.unsynced = true;
        self.unsettled = true;
        if self.window.len() < MAX_WINDOW {
            self.window.push(change);
        } else {
            self.overflowed = true;
        }
    }

    #[inline(never)]
    fn settle(&mut self) {
        self.unsettled = false;
        self.portals_settled = true;
        let exact = !self.errored && !self.overflowed;
        if exact {
            for change in self.window.drain(..) {
                match change {
                    Change::Set(key, candidates) => {
                        self.settled.space(key.0).insert(key.1, candidates);
                    }
                    Change::Remove(key) => {
                        self.settled.space(key.0).remove(&key.1);
                    }
                    Change::Clear(space) => self.settled.space(space).clear(),
                }
            }
        } else {
            self.window.clear();
            for (key, candidates) in self.pending.drain() {
                let slot = self.settled.space(key.0).entry(key.1).or_default();
                for c in candidates {
                    push_unique(slot, c);
                }
            }
        }
        self.pending.clear();
        self.overflowed = false;
        self.errored = false;
    }
}

/// Settled names, one map per space.
struct Settled<T> {
    statements: Map<Name, Candidates<T>>,
    portals: Map<Name, Candidates<T>>,
}

impl<T> Default for Settled<T> {
    fn default() -> Self {
        Settled {
            statements: Map::default(),
            portals: Map::default(),
        }
    }
}

impl<T> Settled<T> {
    fn space(&mut self, space: Space) -> &mut Map<Name, Candidates<T>> {
        match space {
            Space::Statement => &mut self.statements,
            Space::Portal => &mut self.portals,
        }
    }

    fn get(&self, key: &Key) -> Option<&Candidates<T>> {
        match key.0 {
            Space::Statement => self.statements.get(&key.1),
            Space::Portal => self.portals.get(&key.1),
        }
    }

    fn len(&self) -> usize {
        self.statements.len() + self.portals.len()
    }
}

fn push_unique<T>(list: &mut Candidates<T>, item: Arc<T>) {
    if !list.iter().any(|x| Arc::ptr_eq(x, &item)) {
        list.push(item);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(names: &Names<&'static str>, space: Space, name: &str) -> Vec<&'static str> {
        let mut v: Vec<_> = names
            .lookup(space, name.as_bytes())
            .iter()
            .map(|a| **a)
            .collect();
        v.sort();
        v
    }

    const S: Space = Space::Statement;

    #[test]
    fn a_clean_round_trip_settles_exactly() {
        let mut n = Names::default();
        n.set(S, b"s1", vec![Arc::new("delete")]);
        n.sync_point();
        assert_eq!(held(&n, S, "s1"), ["delete"]);
        n.ready();
        // Close and re-Parse under the same name: exactly the new statement once settled.
        n.remove(S, b"s1");
        n.set(S, b"s1", vec![Arc::new("select")]);
        n.sync_point();
        assert_eq!(
            held(&n, S, "s1"),
            ["delete", "select"],
            "unsure until answered"
        );
        n.ready();
        assert_eq!(held(&n, S, "s1"), ["select"]);
        n.remove(S, b"s1");
        n.sync_point();
        n.ready();
        assert!(held(&n, S, "s1").is_empty());
    }

    #[test]
    fn after_an_error_a_name_keeps_every_statement_it_may_hold() {
        let mut n = Names::default();
        n.set(S, b"", vec![Arc::new("delete")]);
        n.sync_point();
        n.ready();
        // Parse "" skipped after an error: the database still holds the DELETE.
        n.set(S, b"", vec![Arc::new("select")]);
        n.remove(S, b"other");
        n.sync_point();
        n.error();
        n.ready();
        assert_eq!(held(&n, S, ""), ["delete", "select"]);
        // The next clean Parse settles it again.
        n.set(S, b"", vec![Arc::new("insert")]);
        n.sync_point();
        n.ready();
        assert_eq!(held(&n, S, ""), ["insert"]);
    }

    #[test]
    fn nothing_settles_while_the_client_is_ahead_of_the_answers() {
        let mut n = Names::default();
        n.set(S, b"a", vec![Arc::new("select")]);
        n.sync_point();
        n.remove(S, b"a");
        n.sync_point();
        n.ready(); // answers the first sync point only
        assert_eq!(
            held(&n, S, "a"),
            ["select"],
            "the Close may not have run yet"
        );
        n.set(S, b"b", vec![Arc::new("update")]); // Parse without Sync yet
        n.ready();
        assert_eq!(held(&n, S, "b"), ["update"], "pending, not lost");
        n.sync_point();
        n.ready();
        assert_eq!(held(&n, S, "a"), Vec::<&str>::new());
        assert_eq!(held(&n, S, "b"), ["update"]);
    }

    #[test]
    fn within_a_segment_the_latest_change_is_exact() {
        let mut n = Names::default();
        let p = Space::Portal;
        n.set(p, b"", vec![Arc::new("delete")]);
        n.sync_point();
        n.error();
        n.ready();
        assert_eq!(held(&n, p, ""), ["delete"]);
        // Bind then Execute in one segment: if the Bind did not take effect, neither does the
        // Execute, so the Execute is judged by the Bind alone.
        n.set(p, b"", vec![Arc::new("select")]);
        assert_eq!(held(&n, p, ""), ["select"]);
        n.remove(p, b"");
        assert!(held(&n, p, "").is_empty());
        n.sync_point();
        assert_eq!(
            held(&n, p, ""),
            ["delete", "select"],
            "next segment: unsure again"
        );
        n.clear(p);
        assert!(held(&n, p, "").is_empty());
    }

    #[test]
    fn an_added_candidate_is_never_taken_as_certain() {
        let mut n = Names::default();
        n.set(S, b"x", vec![Arc::new("select")]);
        n.add(S, b"x", Arc::new("drop"));
        assert_eq!(held(&n, S, "x"), ["drop", "select"]);
        n.set(S, b"x", vec![Arc::new("select")]);
        assert_eq!(held(&n, S, "x"), ["drop", "select"], "it may run later");
        n.sync_point();
        n.ready();
        assert_eq!(held(&n, S, "x"), ["drop", "select"]);
    }

    #[test]
    fn portals_end_with_their_transaction() {
        let mut n = Names::default();
        n.set(Space::Portal, b"c1", vec![Arc::new("select")]);
        n.set(S, b"s1", vec![Arc::new("select")]);
        n.sync_point();
        n.ready();
        n.portals_gone();
        assert!(held(&n, Space::Portal, "c1").is_empty());
        assert_eq!(
            held(&n, S, "s1"),
            ["select"],
            "statements outlive transactions"
        );
    }

    #[test]
    fn quiet_rounds_between_changes_lose_nothing() {
        let mut n = Names::default();
        n.set(S, b"s1", vec![Arc::new("delete")]);
        n.sync_point();
        n.ready();
        for _ in 0..3 {
            // Simple queries: no change, nothing to settle, no portal.
            n.sync_point();
            n.ready();
            n.portals_gone();
        }
        assert_eq!(held(&n, S, "s1"), ["delete"]);
        n.set(Space::Portal, b"p", vec![Arc::new("delete")]);
        n.sync_point();
        n.ready();
        assert_eq!(held(&n, Space::Portal, "p"), ["delete"]);
        n.portals_gone();
        assert!(held(&n, Space::Portal, "p").is_empty());
        // A change in a segment is exact only within it.
        n.set(S, b"s1", vec![Arc::new("select")]);
        assert_eq!(held(&n, S, "s1"), ["select"]);
        n.sync_point();
        assert_eq!(held(&n, S, "s1"), ["delete", "select"]);
        n.error();
        n.ready();
        assert_eq!(held(&n, S, "s1"), ["delete", "select"]);
    }

    #[test]
    fn clear_empties_one_space() {
        let mut n = Names::default();
        n.set(S, b"x", vec![Arc::new("select")]);
        n.set(Space::Portal, b"", vec![Arc::new("select")]);
        n.clear(S);
        n.sync_point();
        n.ready();
        assert!(held(&n, S, "x").is_empty());
        assert_eq!(held(&n, Space::Portal, ""), ["select"]);
    }
}
