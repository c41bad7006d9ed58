//! Policy files: `[defaults]` and `[[rule]]` tables, unknown keys refused, checked as a whole.

use serde::Deserialize;

use crate::sql::classify::Kind;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("policy file {file}: {message}")]
    Parse { file: String, message: String },
    #[error("policy file {file}, rule {rule:?}: {problem}; {fix}")]
    Invalid {
        file: String,
        rule: String,
        problem: String,
        fix: String,
    },
    #[error(
        "no policy file: add at least one .toml file to the policy directory (see policies/default.toml)"
    )]
    Empty,
}

/// What to do with a statement.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum Action {
    Allow,
    Deny,
    /// Hold for approval by one of `approvers`; on timeout deny, or escalate once.
    Review,
}

/// One rule. Every condition given must hold; a condition left out holds for anything.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub name: String,
    pub action: Action,
    /// Shown to the client when the rule denies, and to approvers when it holds.
    pub message: Option<String>,
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub listeners: Vec<String>,
    #[serde(default)]
    pub databases: Vec<String>,
    #[serde(default)]
    pub kinds: Vec<Kind>,
    /// Any of these finding codes.
    #[serde(default)]
    pub findings: Vec<String>,
    /// Matches when the statement has any finding at all (`true`) or none (`false`).
    pub any_finding: Option<bool>,
    /// Glob patterns (`*`, `?`); any table the statement names matching any pattern.
    #[serde(default)]
    pub tables: Vec<String>,
    /// Matches statements of a migration run (`true`), or of the named tools.
    pub migration: Option<MigrationMatch>,
    /// For `review`: who may approve.
    #[serde(default)]
    pub approvers: Vec<String>,
    /// For `review`: seconds before the timeout action.
    pub timeout_secs: Option<u64>,
    /// For `review`: what happens on timeout.
    pub on_timeout: Option<OnTimeout>,
    /// For `review`: how many distinct approvers must approve (default 1).
    pub approvals: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum MigrationMatch {
    Any(bool),
    Tools(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum OnTimeout {
    Deny,
    /// Escalate to another group with its own timeout, then deny.
    Escalate {
        approvers: Vec<String>,
        timeout_secs: u64,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    defaults: Option<Defaults>,
    mask: Option<super::mask::MaskPolicy>,
    audit: Option<AuditPolicy>,
    #[serde(default, rename = "rule")]
    rules: Vec<Rule>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Defaults {
    action: Action,
    message: Option<String>,
    #[serde(default)]
    approvers: Vec<String>,
    timeout_secs: Option<u64>,
    on_timeout: Option<OnTimeout>,
    approvals: Option<u32>,
}

/// The whole policy: rules in order and the default for statements no rule matches.
#[derive(Debug, Clone)]
pub struct Policy {
    pub rules: Vec<Rule>,
    pub default: Rule,
    /// Who has values masked, and how (the `[mask]` table; masking everyone without one).
    pub mask: super::mask::MaskPolicy,
    /// What the audit trail keeps beyond statements (the `[audit]` table).
    pub audit: AuditPolicy,
}

/// The `[audit]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditPolicy {
    /// The first this many rows of each statement's result are kept, masked, with its
    /// outcome in the audit trail (0: none), for replay.
    #[serde(default)]
    pub sample_rows: usize,
}

const DEFAULT_REVIEW_TIMEOUT_SECS: u64 = 15 * 60;

impl Policy {
    /// Parses policy files given as (file name, text), in name order.
    pub fn parse(files: &[(String, String)]) -> Result<Policy, PolicyError> {
        if files.is_empty() {
            return Err(PolicyError::Empty);
        }
        let mut sorted: Vec<&(String, String)> = files.iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        let mut rules = Vec::new();
        let mut default = None;
        let mut mask: Option<super::mask::MaskPolicy> = None;
        let mut audit: Option<AuditPolicy> = None;
        for (name, text) in sorted {
            let file: File = toml::from_str(text).map_err(|e| PolicyError::Parse {
                file: name.clone(),
                message: e.to_string(),
            })?;
            for rule in file.rules {
                check_rule(name, &rule)?;
                rules.push(rule);
            }
            if let Some(m) = file.mask {
                if mask.is_some() {
                    return Err(invalid(
                        name,
                        "mask",
                        "a second [mask] table",
                        "keep [mask] in one file",
                    ));
                }
                if let Some((problem, fix)) = m.problem() {
                    return Err(invalid(name, "mask", &problem, fix));
                }
                mask = Some(m);
            }
            if let Some(a) = file.audit {
                if audit.is_some() {
                    return Err(invalid(
                        name,
                        "audit",
                        "a second [audit] table",
                        "keep [audit] in one file",
                    ));
                }
                if a.sample_rows > 1000 {
                    return Err(invalid(
                        name,
                        "audit",
                        "sample_rows above 1000",
                        "keep a sample: a few rows per statement",
                    ));
                }
                audit = Some(a);
            }
            if let Some(d) = file.defaults {
                if default.is_some() {
                    return Err(invalid(
                        name,
                        "defaults",
                        "a second [defaults] table",
                        "keep [defaults] in one file",
                    ));
                }
                let rule = Rule {
                    name: "default".into(),
                    action: d.action,
                    message: d.message,
                    approvers: d.approvers,
                    timeout_secs: d.timeout_secs,
                    on_timeout: d.on_timeout,
                    approvals: d.approvals,
                    ..Rule::empty()
                };
                check_rule(name, &rule)?;
                default = Some(rule);
            }
        }
        // Without [defaults], what no rule names is held: never waved through.
        let default = default.unwrap_or_else(|| Rule {
            name: "default".into(),
            action: Action::Deny,
            message: Some("no policy rule allows this statement".into()),
            ..Rule::empty()
        });
        Ok(Policy {
            rules,
            default,
            mask: mask.unwrap_or_default(),
            audit: audit.unwrap_or_default(),
        })
    }
}

impl Rule {
    fn empty() -> Rule {
        Rule {
            name: String::new(),
            action: Action::Deny,
            message: None,
            users: vec![],
            groups: vec![],
            listeners: vec![],
            databases: vec![],
            kinds: vec![],
            findings: vec![],
            any_finding: None,
            tables: vec![],
            migration: None,
            approvers: vec![],
            timeout_secs: None,
            on_timeout: None,
            approvals: None,
        }
    }

    pub fn review_timeout_secs(&self) -> u64 {
        self.timeout_secs.unwrap_or(DEFAULT_REVIEW_TIMEOUT_SECS)
    }
}

fn invalid(file: &str, rule: &str, problem: &str, fix: &str) -> PolicyError {
    PolicyError::Invalid {
        file: file.into(),
        rule: rule.into(),
        problem: problem.into(),
        fix: fix.into(),
    }
}

fn check_rule(file: &str, rule: &Rule) -> Result<(), PolicyError> {
    if rule.name.is_empty() {
        return Err(invalid(
            file,
            "",
            "a rule has no name",
            "give every [[rule]] a name",
        ));
    }
    match rule.action {
        Action::Review if rule.approvers.is_empty() => Err(invalid(
            file,
            &rule.name,
            "review without approvers",
            "set approvers = [\"dba\"] (groups that may approve)",
        )),
        Action::Allow | Action::Deny if !rule.approvers.is_empty() || rule.on_timeout.is_some() => {
            Err(invalid(
                file,
                &rule.name,
                "approvers or on_timeout on a rule that does not review",
                "use action = \"review\" or remove them",
            ))
        }
        Action::Allow | Action::Deny if rule.approvals.is_some() => Err(invalid(
            file,
            &rule.name,
            "approvals on a rule that does not review",
            "use action = \"review\" or remove approvals",
        )),
        _ if rule.approvals == Some(0) => Err(invalid(
            file,
            &rule.name,
            "approvals = 0 would run held statements with nobody's approval",
            "use 1 or more, or action = \"allow\"",
        )),
        _ if rule.timeout_secs == Some(0) => Err(invalid(
            file,
            &rule.name,
            "timeout_secs = 0",
            "use a positive number of seconds",
        )),
        _ => Ok(()),
    }
}
