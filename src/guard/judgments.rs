//! Decisions a listener's sessions share: what the policy decided for one cached
//! classification and one identity (user, groups, database). A session remembers its own
//! decisions, but a new session starts with none; with these, its first statement of a
//! shape the listener has seen costs a lookup instead of the policy's rules (a client that
//! connects for every transaction sends nothing but first statements).
//!
//! Keyed by the classification itself (the cache's shared copy, by address) and compared on
//! the identity in full. Each entry holds its decision, which holds the classification, so
//! an address in the table always names the classification it was made for.

use std::collections::HashMap;
use std::sync::Arc;

use smallvec::SmallVec;

use super::{Judged, Who};
use crate::sql::classify::Classified;

/// Decisions held, at most; past it, everything is forgotten.
const MAX_ENTRIES: usize = 10_000;
/// Identities a classification keeps decisions for, at most; the oldest goes first.
const PER_CLASSIFICATION: usize = 4;

struct Entry {
    user: Box<str>,
    groups: Arc<[String]>,
    database: Box<str>,
    judged: Arc<Judged>,
}

impl Entry {
    fn is_for(&self, who: &Who) -> bool {
        *self.user == *who.user && *self.database == *who.database && *self.groups == *who.groups
    }
}

/// A listener's shared decisions.
#[derive(Default)]
pub struct Judgments {
    by_classification: HashMap<usize, SmallVec<[Entry; 1]>, foldhash::fast::RandomState>,
    len: usize,
}

fn address(statements: &Arc<[Classified]>) -> usize {
    Arc::as_ptr(statements).cast::<Classified>() as usize
}

impl Judgments {
    /// The decision made for `statements` (as the cache gave them) and `who`.
    pub fn get(&self, statements: &Arc<[Classified]>, who: &Who) -> Option<Arc<Judged>> {
        let entries = self.by_classification.get(&address(statements))?;
        let entry = entries.iter().find(|e| e.is_for(who))?;
        Arc::ptr_eq(&entry.judged.statements, statements).then(|| entry.judged.clone())
    }

    /// Keeps `judged`, made for `who`, for the classification it holds.
    pub fn insert(&mut self, who: &Who, judged: &Arc<Judged>) {
        if self.len >= MAX_ENTRIES {
            self.by_classification.clear();
            self.len = 0;
        }
        let entries = self
            .by_classification
            .entry(address(&judged.statements))
            .or_default();
        if let Some(i) = entries.iter().position(|e| e.is_for(who)) {
            entries[i].judged = judged.clone();
            return;
        }
        if entries.len() >= PER_CLASSIFICATION {
            entries.remove(0);
            self.len -= 1;
        }
        entries.push(Entry {
            user: who.user.as_str().into(),
            groups: who.groups.clone(),
            database: who.database.as_str().into(),
            judged: judged.clone(),
        });
        self.len += 1;
    }

    /// Decisions held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::tests::{guard, who};

    fn judged_for(statements: &Arc<[Classified]>, who: &Who) -> Arc<Judged> {
        Arc::new(crate::guard::judge(&guard(), who, statements.clone(), None))
    }

    #[test]
    fn a_decision_is_shared_only_with_the_same_identity() {
        let select: Arc<[Classified]> =
            crate::sql::classify::classify("SELECT 1", crate::sql::Dialect::Postgres).into();
        let app = who();
        let mut j = Judgments::default();
        assert!(j.get(&select, &app).is_none());
        j.insert(&app, &judged_for(&select, &app));
        assert!(j.get(&select, &app).is_some());
        // Another user, another group, another database: none of them is the same identity.
        let others = [
            Who {
                user: "admin".into(),
                ..who()
            },
            Who {
                groups: Arc::new(["dba".into()]),
                ..who()
            },
            Who {
                database: "postgres".into(),
                ..who()
            },
        ];
        for other in &others {
            assert!(j.get(&select, other).is_none(), "{other:?}");
        }
        // The same text classified again is another classification.
        let again: Arc<[Classified]> =
            crate::sql::classify::classify("SELECT 1", crate::sql::Dialect::Postgres).into();
        assert!(j.get(&again, &app).is_none());
    }

    #[test]
    fn stays_within_its_bounds() {
        let select: Arc<[Classified]> =
            crate::sql::classify::classify("SELECT 1", crate::sql::Dialect::Postgres).into();
        let mut j = Judgments::default();
        for i in 0..10 {
            let who = Who {
                user: format!("user{i}"),
                ..who()
            };
            j.insert(&who, &judged_for(&select, &who));
            assert!(j.len() <= PER_CLASSIFICATION);
        }
        // The newest identities are kept.
        let newest = Who {
            user: "user9".into(),
            ..who()
        };
        assert!(j.get(&select, &newest).is_some());
        let oldest = Who {
            user: "user0".into(),
            ..who()
        };
        assert!(j.get(&select, &oldest).is_none());
    }
}
