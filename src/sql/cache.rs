//! Classification cached by statement shape (the text with literal values abstracted, see
//! [`super::shape`]) or, for text without one, by exact text, so a statement an application
//! repeats, with the same or other values, costs a lookup. Bounded in entries and in bytes of text; when full, the oldest entries go first.
//! Only text whose meaning depends on neither the session (PREPARE, EXECUTE, DEALLOCATE) nor
//! a literal value is cached.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use super::Dialect;
use super::classify::{Classified, Kind, classify};
use super::shape::{shape, shape_into};

/// One dialect's cache (a listener speaks one dialect).
pub struct Cache {
    dialect: Dialect,
    map: HashMap<Box<[u8]>, Arc<[Classified]>, foldhash::fast::RandomState>,
    order: VecDeque<Box<[u8]>>,
    bytes: usize,
    max_entries: usize,
    max_bytes: usize,
}

impl Cache {
    pub fn new(dialect: Dialect, max_entries: usize, max_bytes: usize) -> Cache {
        Cache {
            dialect,
            map: HashMap::default(),
            order: VecDeque::new(),
            bytes: 0,
            max_entries: max_entries.max(1),
            max_bytes,
        }
    }

    /// The classification of `sql`, from the cache or computed and remembered.
    pub fn classify(&mut self, sql: &str) -> Arc<[Classified]> {
        if let Some(hit) = self.get(sql) {
            return hit;
        }
        let classified: Arc<[Classified]> = classify(sql, self.dialect).into();
        self.put(sql, &classified);
        classified
    }

    /// The cached classification of `sql`: of the same text, or of a statement of the same
    /// shape (differing only in literal values), given `sql`'s own text.
    pub fn get(&self, sql: &str) -> Option<Arc<[Classified]>> {
        match shape(sql) {
            Some((key, text)) => {
                let template = self.map.get(key.as_slice())?;
                let [one] = &template[..] else {
                    return None;
                };
                Some(Arc::new([Classified {
                    text: text.to_owned(),
                    ..one.clone()
                }]))
            }
            None => self.map.get(sql.as_bytes()).cloned(),
        }
    }

    /// The classification cached under `key` ([`cache_key`] of a statement), without
    /// copying: a statement of the same shape comes back as it was cached, its `text` that of
    /// the first statement of that shape. For deciding, where only the classification
    /// matters.
    pub fn get_keyed(&self, key: &[u8]) -> Option<Arc<[Classified]>> {
        self.map.get(key).cloned()
    }

    /// Remembers `classified` for `sql` (by its shape if it has one), unless the text is too
    /// large, its meaning depends on the session (PREPARE, EXECUTE, DEALLOCATE, DISCARD) or
    /// on a literal value (`EXPLAIN (ANALYZE 1)`, an SQL function body in a string), it
    /// switches databases (a `USE` names its database, which a shape could stand in for), or
    /// it is a session statement: what a SET does may hang on the value a shape stands in
    /// for (`SET client_encoding = 'SJIS'`, `SET sql_mode = 'ANSI_QUOTES'`).
    pub fn put(&mut self, sql: &str, classified: &Arc<[Classified]>) {
        if sql.len() > self.max_bytes / 4
            || classified.iter().any(|c| {
                c.session_names || c.reads_values || c.database.is_some() || c.kind == Kind::Session
            })
        {
            return;
        }
        let key = match shape(sql) {
            Some((key, _)) if classified.len() == 1 => key,
            Some(_) => return,
            None => sql.as_bytes().to_vec(),
        };
        if !self.map.contains_key(key.as_slice()) {
            self.insert(key.into_boxed_slice(), classified.clone());
        }
    }

    fn insert(&mut self, key: Box<[u8]>, value: Arc<[Classified]>) {
        let size = cost(&key, &value);
        while !self.order.is_empty()
            && (self.map.len() >= self.max_entries || self.bytes + size > self.max_bytes)
        {
            if let Some(old) = self.order.pop_front()
                && let Some(v) = self.map.remove(&old)
            {
                self.bytes -= cost(&old, &v);
            }
        }
        self.bytes += size;
        self.order.push_back(key.clone());
        self.map.insert(key, value);
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// The key `sql` is cached under: its shape (written into `buf`) or, if it has none, the
/// text itself.
pub fn cache_key<'a>(sql: &'a str, buf: &'a mut Vec<u8>) -> &'a [u8] {
    match shape_into(sql.as_bytes(), buf) {
        Some(_) => buf,
        None => sql.as_bytes(),
    }
}

/// Roughly what an entry holds: its key and each statement's text and fingerprint.
fn cost(key: &[u8], value: &[Classified]) -> usize {
    key.len()
        + value
            .iter()
            .map(|c| c.text.len() + c.fingerprint.len() + 64)
            .sum::<usize>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_use_is_never_cached() {
        let mut cache = Cache::new(Dialect::MySql, 10, 1 << 20);
        for sql in ["USE prod", "USE 'prod'", "USE test"] {
            let classified = cache.classify(sql);
            assert!(classified[0].database.is_some(), "{sql}");
        }
        assert_eq!(
            cache.len(),
            0,
            "a shape must not stand in for the database's name"
        );
    }

    /// A SET's value decides its findings: a shape must not stand in for it.
    #[test]
    fn a_set_is_never_cached() {
        let mut pg = Cache::new(Dialect::Postgres, 10, 1 << 20);
        pg.classify("SET client_encoding = 'UTF8'");
        assert!(pg.classify("SET client_encoding = 'SJIS'")[0].has("client_encoding"));
        pg.classify("SET standard_conforming_strings = 'on'");
        let off = pg.classify("SET standard_conforming_strings = 'off'");
        assert!(off[0].has("string_syntax_change"));
        let mut my = Cache::new(Dialect::MySql, 10, 1 << 20);
        my.classify("SET sql_mode = 'STRICT_TRANS_TABLES'");
        assert!(my.classify("SET sql_mode = 'ANSI_QUOTES'")[0].has("string_syntax_change"));
        my.classify("SET NAMES 'utf8mb4'");
        assert!(my.classify("SET NAMES 'gbk'")[0].has("client_encoding"));
        my.classify("SET CHARACTER SET 'utf8mb4'");
        assert!(my.classify("SET CHARACTER SET 'gbk'")[0].has("client_encoding"));
        assert!(pg.is_empty() && my.is_empty());
    }

    #[test]
    fn repeats_are_served_from_the_cache() {
        let mut cache = Cache::new(Dialect::Postgres, 10, 1 << 20);
        let a = cache.classify("select $1::int");
        let b = cache.classify("select $1::int");
        assert!(Arc::ptr_eq(&a, &b), "text without a shape: by exact text");
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn statements_differing_in_literals_share_an_entry_and_keep_their_text() {
        let mut cache = Cache::new(Dialect::Postgres, 10, 1 << 20);
        let a = cache.classify("delete from t where id = 1");
        let b = cache.classify("delete from t where id = 2;");
        assert_eq!(cache.len(), 1);
        assert_eq!(b[0].text, "delete from t where id = 2");
        assert_eq!((a[0].kind, &a[0].tables), (b[0].kind, &b[0].tables));
        let c = cache.classify("delete from t");
        assert_eq!(cache.len(), 2, "another shape");
        assert!(c[0].has("delete_without_where"));
        assert!(!b[0].has("delete_without_where"));
    }

    #[test]
    fn stays_within_its_bounds() {
        let mut cache = Cache::new(Dialect::Postgres, 100, 4096);
        for i in 0..1000 {
            cache.classify(&format!(
                "select x from t{i} where x = 'padding padding padding'"
            ));
            assert!(
                cache.len() <= 100 && cache.bytes() <= 4096,
                "{} entries, {} bytes",
                cache.len(),
                cache.bytes()
            );
        }
        assert!(cache.len() > 1);
    }

    #[test]
    fn session_dependent_text_is_not_cached() {
        let mut cache = Cache::new(Dialect::Postgres, 10, 1 << 20);
        cache.classify("execute wipe");
        cache.classify("prepare wipe as delete from t");
        cache.classify("select 1; execute wipe");
        assert!(cache.is_empty());
        cache.classify("select 1;");
        assert_eq!(cache.len(), 1, "a trailing semicolon is fine");
    }

    /// The cache stands in for a statement only with what classifying it would give:
    /// statements of one shape, differing only in literal values, where a value decides what
    /// the statement does. Each pair is sent in turn, the first twice so that it is cached.
    #[test]
    fn a_shape_never_stands_in_for_what_a_value_decides() {
        let pairs = [
            (
                Dialect::Postgres,
                "EXPLAIN (ANALYZE 0) DELETE FROM t",
                "EXPLAIN (ANALYZE 1) DELETE FROM t",
            ),
            (
                Dialect::Postgres,
                "EXPLAIN (ANALYZE 'off') DELETE FROM t",
                "EXPLAIN (ANALYZE 'on') DELETE FROM t",
            ),
            (
                Dialect::Postgres,
                "DELETE FROM t WHERE id + 1 = id + 2",
                "DELETE FROM t WHERE id + 1 = id + 1",
            ),
            (
                Dialect::Postgres,
                "UPDATE t SET a = 1 WHERE a || 'x' = a || 'y'",
                "UPDATE t SET a = 1 WHERE a || 'x' = a || 'x'",
            ),
            (
                Dialect::Postgres,
                "CREATE FUNCTION f() RETURNS void AS 'SELECT 1' LANGUAGE sql",
                "CREATE FUNCTION f() RETURNS void AS 'DELETE FROM t' LANGUAGE sql",
            ),
            (
                Dialect::MySql,
                "SET GLOBAL sql_mode = 'STRICT_TRANS_TABLES'",
                "SET GLOBAL sql_mode = 'ANSI_QUOTES'",
            ),
            (
                Dialect::MySql,
                "DELETE FROM t WHERE id + 1 = id + 2",
                "DELETE FROM t WHERE id + 1 = id + 1",
            ),
        ];
        let judged = |c: &[Classified]| -> Vec<(Kind, Vec<&'static str>)> {
            c.iter()
                .map(|c| (c.kind, c.findings.iter().map(|f| f.code).collect()))
                .collect()
        };
        for (dialect, first, second) in pairs {
            let mut cache = Cache::new(dialect, 10, 1 << 20);
            cache.classify(first);
            cache.classify(first);
            let fresh = classify(second, dialect);
            let served = cache.classify(second);
            assert_eq!(judged(&served), judged(&fresh), "{second} after {first}");
        }
    }
}
