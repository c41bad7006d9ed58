//! The `[mask]` table of the policy files: who has credential-looking values masked in what
//! they read, which columns are masked whole, and the detectors beyond the built-in ones.
//! Plain data, checked as it is parsed; [`crate::mask`] compiles it.

use serde::Deserialize;

use super::check::glob as glob_match;

/// The `[mask]` table. Without one, every session on every listener is masked by the
/// built-in detectors: masking is never off by omission.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaskPolicy {
    /// Masking applies to these users, members of these groups, on these listeners; a list
    /// left empty holds for anyone (or anywhere).
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub listeners: Vec<String>,
    /// Members of these groups see values unmasked; their sessions say so in the log.
    #[serde(default)]
    pub exempt_groups: Vec<String>,
    /// Whether the built-in detectors run (default true).
    #[serde(default = "yes")]
    pub built_in: bool,
    /// Columns masked whole, by name (`password`, `*_token`) or as `table.column`; globs with
    /// `*` and `?`, compared without case.
    #[serde(default)]
    pub columns: Vec<String>,
    /// Values never masked, exactly as written (documentation examples, published test keys).
    #[serde(default)]
    pub allow: Vec<String>,
    /// The environment variable holding a key: placeholders then carry a short keyed hash of
    /// the value, so equal secrets can be matched without being shown.
    pub hash_key_env: Option<String>,
    /// Detectors of the organisation's own secrets.
    #[serde(default, rename = "detector")]
    pub detectors: Vec<CustomDetector>,
}

/// A detector from a policy file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomDetector {
    /// What the placeholder says: `[masked:NAME]`.
    pub name: String,
    /// A regular expression; with a capture group, only the group is masked.
    pub pattern: String,
    /// Literal text every match contains: the prefilter looks for these (as written, and in
    /// lower, upper and title case), and only a value holding one is searched with `pattern`.
    pub anchors: Vec<String>,
}

fn yes() -> bool {
    true
}

impl Default for MaskPolicy {
    fn default() -> Self {
        MaskPolicy {
            users: vec![],
            groups: vec![],
            listeners: vec![],
            exempt_groups: vec![],
            built_in: true,
            columns: vec![],
            allow: vec![],
            hash_key_env: None,
            detectors: vec![],
        }
    }
}

/// What masking means for one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applies {
    /// Values are masked.
    Masked,
    /// The session belongs to an exempt group: it sees values as stored.
    Exempt,
    /// The `[mask]` table's users, groups or listeners leave this session out.
    NotCovered,
}

impl MaskPolicy {
    /// Whether `user` (in `groups`) on `listener` has values masked.
    pub fn applies(&self, user: &str, groups: &[String], listener: &str) -> Applies {
        if groups.iter().any(|g| self.exempt_groups.contains(g)) {
            return Applies::Exempt;
        }
        let covered = (self.users.is_empty() || self.users.iter().any(|u| u == user))
            && (self.groups.is_empty() || groups.iter().any(|g| self.groups.contains(g)))
            && (self.listeners.is_empty() || self.listeners.iter().any(|l| l == listener));
        if covered {
            Applies::Masked
        } else {
            Applies::NotCovered
        }
    }

    /// A problem with the table, in words for whoever wrote it: what is wrong and the fix.
    pub fn problem(&self) -> Option<(String, &'static str)> {
        for d in &self.detectors {
            if d.name.is_empty()
                || !d
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_')
            {
                return Some((
                    format!("detector name {:?}", d.name),
                    "use letters, digits and _ (it is shown in the placeholder)",
                ));
            }
            if d.anchors.is_empty() || d.anchors.iter().any(|a| a.is_empty() || !a.is_ascii()) {
                return Some((
                    format!("detector {:?} has no usable anchors", d.name),
                    "list the literal ASCII text every match contains, e.g. anchors = [\"acme_\"]",
                ));
            }
            if let Err(e) = regex::bytes::RegexBuilder::new(&d.pattern)
                .unicode(false)
                .build()
            {
                return Some((
                    format!("detector {:?}: pattern does not compile: {e}", d.name),
                    "fix the regular expression (Rust regex syntax)",
                ));
            }
        }
        if let Some(c) = self
            .columns
            .iter()
            .find(|c| c.is_empty() || c.matches('.').count() > 2)
        {
            return Some((
                format!("column pattern {c:?}"),
                "write column, table.column or schema.table.column",
            ));
        }
        None
    }
}

/// Column patterns, split once into table and column parts.
#[derive(Debug, Clone, Default)]
pub struct ColumnRules {
    rules: Vec<(Option<String>, String)>,
}

impl ColumnRules {
    pub fn new(patterns: &[String]) -> ColumnRules {
        let rules = patterns
            .iter()
            .map(|p| {
                let p = p.to_ascii_lowercase();
                match p.rsplit_once('.') {
                    Some((table, column)) => (Some(table.to_owned()), column.to_owned()),
                    None => (None, p),
                }
            })
            .collect();
        ColumnRules { rules }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether a result column named `column`, from one of `tables` (as the result says, or
    /// the tables the statement reads), is masked whole.
    pub fn matches<'a>(&self, column: &str, tables: impl Iterator<Item = &'a str> + Clone) -> bool {
        let column = column.to_ascii_lowercase();
        self.rules.iter().any(|(table, pattern)| {
            glob_match(pattern, &column, true)
                && match table {
                    None => true,
                    Some(t) => tables.clone().any(|name| table_matches(t, name)),
                }
        })
    }
}

/// A `table` or `schema.table` pattern against a table name, qualified or not: an
/// unqualified pattern matches the name's last part.
fn table_matches(pattern: &str, name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    let name = name.trim_matches('"');
    if pattern.contains('.') {
        glob_match(pattern, name, true)
    } else {
        let last = name.rsplit('.').next().unwrap_or(name);
        glob_match(pattern, last.trim_matches('"'), true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups(g: &[&str]) -> Vec<String> {
        g.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn exempt_groups_win_and_scopes_narrow() {
        let p = MaskPolicy {
            groups: groups(&["contractors"]),
            listeners: groups(&["postgres"]),
            exempt_groups: groups(&["security"]),
            ..MaskPolicy::default()
        };
        assert_eq!(
            p.applies("a", &groups(&["contractors"]), "postgres"),
            Applies::Masked
        );
        assert_eq!(
            p.applies("a", &groups(&["contractors"]), "mysql"),
            Applies::NotCovered
        );
        assert_eq!(
            p.applies("a", &groups(&["staff"]), "postgres"),
            Applies::NotCovered
        );
        assert_eq!(
            p.applies("a", &groups(&["contractors", "security"]), "postgres"),
            Applies::Exempt
        );
        assert_eq!(
            MaskPolicy::default().applies("x", &[], "mysql"),
            Applies::Masked
        );
    }

    #[test]
    fn column_rules_by_name_and_by_table() {
        let rules = ColumnRules::new(&groups(&[
            "*password*",
            "users.api_token",
            "billing.cards.number",
        ]));
        assert!(rules.matches("Password_Hash", [].into_iter()));
        assert!(rules.matches("api_token", ["public.users"].into_iter()));
        assert!(rules.matches("api_token", ["users"].into_iter()));
        assert!(!rules.matches("api_token", ["accounts"].into_iter()));
        assert!(rules.matches("number", ["billing.cards"].into_iter()));
        assert!(!rules.matches("number", ["cards"].into_iter()));
    }

    #[test]
    fn bad_detectors_are_named() {
        let mut p = MaskPolicy::default();
        p.detectors.push(CustomDetector {
            name: "acme".into(),
            pattern: "acme_[".into(),
            anchors: vec!["acme_".into()],
        });
        assert!(p.problem().unwrap().0.contains("does not compile"));
        p.detectors[0].pattern = "acme_[a-z]{8}".into();
        p.detectors[0].anchors.clear();
        assert!(p.problem().unwrap().0.contains("anchors"));
        p.detectors[0].anchors.push("acme_".into());
        assert_eq!(p.problem(), None);
    }
}
