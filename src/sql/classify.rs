//! Statement classification: statement text and dialect in, for each statement its kind, the
//! tables it names, and named risk findings out. Pure.
//!
//! Fail closed: text that cannot be split or parsed, or whose split and parse disagree on the
//! number of statements, is `Unknown` with a finding that says why. Statements hidden inside
//! statements (a DELETE in a WITH clause, the statement under EXPLAIN ANALYZE) count: the kind
//! is the most restrictive of all of them.
//!
//! Migration runs: a statement that touches a migration tool's bookkeeping table is tagged
//! with the tool, and so is every statement of a string that holds one (a migration file sent
//! as one Query is one run). Sessions carry the tag further (see `guard`).

use std::ops::ControlFlow;

use sqlparser::ast::{
    AlterColumnOperation, AlterTableOperation, ColumnDef, ColumnOption, CopyTarget, Expr,
    LockTableMode, ObjectType, Set, SetExpr, Statement, TableConstraint, TableFactor, Visit,
    Visitor,
};
use sqlparser::dialect::{MySqlDialect, PostgreSqlDialect};
use sqlparser::keywords::Keyword;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, TokenWithSpan};

use super::Dialect;
use super::condition::limits_rows;
use super::functions::{is_builtin_side_effect_free, is_side_effect_free};
use super::split::{Piece, split_tokens};

/// Longest statement text classified; longer text is unknown (fail closed, bounded work).
const MAX_TEXT: usize = 16 << 20;

/// Deepest nesting sqlparser may recurse into before the statement counts as unknown.
const RECURSION_LIMIT: usize = 50;

/// What a statement does, ordered from least to most restrictive: a string of statements is
/// judged by its most restrictive one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Read,
    Transaction,
    Session,
    Utility,
    Write,
    Ddl,
    Admin,
    Privilege,
    Unknown,
}

impl Kind {
    /// The name policy files use.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Read => "read",
            Kind::Transaction => "transaction",
            Kind::Session => "session",
            Kind::Utility => "utility",
            Kind::Write => "write",
            Kind::Ddl => "ddl",
            Kind::Admin => "admin",
            Kind::Privilege => "privilege",
            Kind::Unknown => "unknown",
        }
    }
}

/// A named risk, with a one-line reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub code: &'static str,
    pub reason: String,
}

/// One statement, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    pub text: String,
    pub kind: Kind,
    /// Every table, view or other relation the statement names, as the database resolves
    /// the name (quotes removed, PostgreSQL's unquoted names in lower case).
    pub tables: Vec<String>,
    /// MySQL: the databases its tables are qualified with (`prod.t` names `prod`). A
    /// PostgreSQL statement cannot reach into another database.
    pub databases: Vec<String>,
    pub findings: Vec<Finding>,
    /// The statement with every literal replaced by `?`, for grouping.
    pub fingerprint: String,
    /// The migration tool whose run this statement is part of: it touches the tool's
    /// bookkeeping table, or shares a string or a session with a statement that does.
    pub migration: Option<&'static str>,
    /// The database a `USE` makes the session's default (MySQL), as the server names it.
    pub database: Option<String>,
    /// The statement names a prepared statement of the session's (a PREPARE, EXECUTE,
    /// DEALLOCATE or DISCARD anywhere in it, in a comment MySQL runs too): what it does
    /// depends on what the session prepared, so it is classified afresh each time.
    pub session_names: bool,
    /// A literal value decides what the statement does (EXPLAIN's ANALYZE option given as
    /// `0` or `'on'`, a setting's value, an SQL function body in a string): a shape, which
    /// leaves values out, cannot stand in for it, so it is never cached.
    pub reads_values: bool,
}

impl Classified {
    /// A statement Airlock cannot judge by its text, with the reason.
    pub fn unknown(text: &str, code: &'static str, reason: String) -> Classified {
        Classified {
            text: text.to_owned(),
            kind: Kind::Unknown,
            tables: Vec::new(),
            databases: Vec::new(),
            findings: vec![Finding { code, reason }],
            fingerprint: String::new(),
            migration: None,
            database: None,
            session_names: false,
            reads_values: false,
        }
    }

    pub fn has(&self, code: &str) -> bool {
        self.findings.iter().any(|f| f.code == code)
    }
}

/// Classifies every statement in `sql`.
pub fn classify(sql: &str, dialect: Dialect) -> Vec<Classified> {
    classify_in_session(sql, dialect, &mut Prepared::default())
}

/// Classifies every statement in `sql` for a session that has `prepared` statements: a
/// `PREPARE` is told to the session, an `EXECUTE` is judged as what it runs (as each of the
/// statements the name may hold, if the session is unsure), `DEALLOCATE` and `DISCARD ALL` are
/// told to the session.
pub fn classify_in_session(
    sql: &str,
    dialect: Dialect,
    prepared: &mut dyn PreparedStatements,
) -> Vec<Classified> {
    if sql.len() > MAX_TEXT {
        let reason = format!(
            "{} bytes is more than Airlock classifies ({MAX_TEXT}); send it in smaller statements",
            sql.len()
        );
        return vec![Classified::unknown("", "too_large", reason)];
    }
    if dialect == Dialect::MySql && sql.contains("/*M!") {
        // MariaDB executes these; the MySQL lexer would skip them as comments. Read the text
        // as MariaDB runs it (whatever its version: the comment counts as executed).
        return match mariadb_executed(sql) {
            Some(text) => classify_text(&text, dialect, prepared),
            None => vec![Classified::unknown(
                sql,
                "unparseable",
                "Airlock cannot read this text's /*M! ... */ comments".to_owned(),
            )],
        };
    }
    classify_text(sql, dialect, prepared)
}

/// Classifies text as the server reads it, statement by statement.
fn classify_text(
    sql: &str,
    dialect: Dialect,
    prepared: &mut dyn PreparedStatements,
) -> Vec<Classified> {
    let pieces = match split_tokens(sql, dialect) {
        Ok(p) => p,
        Err(e) => return vec![Classified::unknown(sql, "unparseable", e.to_string())],
    };
    let mut out = Vec::with_capacity(pieces.len());
    for piece in pieces {
        classify_one(piece, dialect, prepared, &mut out);
    }
    if let Some(tool) = out.iter().find_map(|c| c.migration) {
        for c in &mut out {
            c.migration = Some(tool);
        }
    }
    out
}

/// MySQL text with each MariaDB executable comment (`/*M!NNNNNN ... */`) replaced by what it
/// holds, as MariaDB runs it; `None` if the text does not lex.
fn mariadb_executed(sql: &str) -> Option<String> {
    use sqlparser::tokenizer::{Tokenizer, Whitespace};
    let tokens = Tokenizer::new(&MySqlDialect {}, sql).tokenize().ok()?;
    let mut out = String::with_capacity(sql.len());
    for token in tokens {
        match token {
            Token::Whitespace(Whitespace::MultiLineComment(c)) if c.starts_with("M!") => {
                let inner = c[2..].trim_start_matches(|ch: char| ch.is_ascii_digit());
                out.push(' ');
                out.push_str(inner);
                out.push(' ');
            }
            Token::EOF => {}
            other => out.push_str(&other.to_string()),
        }
    }
    Some(out)
}

/// What classification needs from a session: the statements it prepared by name, with
/// SQL-level `PREPARE` (and in PostgreSQL with the protocol's Parse: they share one namespace).
pub trait PreparedStatements {
    /// Every statement `name` may hold: usually one, none if the session knows no such name.
    fn lookup(&self, name: &str) -> Vec<Classified>;
    /// A `PREPARE name AS statement` was seen.
    fn prepare(&mut self, name: String, statement: Classified);
    /// A `DEALLOCATE name` (`None`: `DEALLOCATE ALL` or `DISCARD ALL`) was seen.
    fn deallocate(&mut self, name: Option<&str>);
}

/// A plain map of SQL-level prepared statements, for classifying a script on its own (the
/// proxies keep their own, protocol-aware namespace). Bounded: past [`Prepared::MAX`] names a
/// new PREPARE is not remembered and its EXECUTE is unknown.
#[derive(Debug, Default, Clone)]
pub struct Prepared {
    statements: std::collections::HashMap<String, Classified>,
}

impl Prepared {
    pub const MAX: usize = 1000;
}

impl PreparedStatements for Prepared {
    fn lookup(&self, name: &str) -> Vec<Classified> {
        self.statements.get(name).cloned().into_iter().collect()
    }

    fn prepare(&mut self, name: String, statement: Classified) {
        if self.statements.len() < Prepared::MAX || self.statements.contains_key(&name) {
            self.statements.insert(name, statement);
        }
    }

    fn deallocate(&mut self, name: Option<&str>) {
        match name {
            Some(name) => {
                self.statements.remove(name);
            }
            None => self.statements.clear(),
        }
    }
}

/// Whether `tokens` name a prepared statement of the session's: any unquoted PREPARE,
/// EXECUTE, DEALLOCATE or DISCARD (MySQL's DROP PREPARE included), wherever it stands. Some
/// are not about prepared statements at all (GRANT EXECUTE): they are only classified afresh.
fn names_prepared_statements(tokens: &[TokenWithSpan]) -> bool {
    tokens.iter().any(|t| {
        matches!(&t.token, Token::Word(w) if w.quote_style.is_none()
            && matches!(w.keyword, Keyword::PREPARE | Keyword::EXECUTE | Keyword::DEALLOCATE | Keyword::DISCARD))
    })
}

/// An identifier as PostgreSQL folds it: unquoted names are lower-cased.
fn folded(ident: &sqlparser::ast::Ident) -> String {
    match ident.quote_style {
        Some(_) => ident.value.clone(),
        None => ident.value.to_lowercase(),
    }
}

/// A prepared statement's name as the server knows it: MySQL's are not case-sensitive,
/// quoted or not.
fn statement_name(ident: &sqlparser::ast::Ident, dialect: Dialect) -> String {
    match dialect {
        Dialect::Postgres => folded(ident),
        Dialect::MySql => ident.value.to_lowercase(),
    }
}

fn classify_one(
    piece: Piece<'_>,
    dialect: Dialect,
    prepared: &mut dyn PreparedStatements,
    out: &mut Vec<Classified>,
) {
    let text = piece.text;
    let print = fingerprint(&piece.tokens);
    // INTO OUTFILE/DUMPFILE and LOAD DATA are MySQL's.
    let from_tokens = match dialect {
        Dialect::MySql => token_findings(&piece.tokens),
        Dialect::Postgres => Vec::new(),
    };
    let session_names = names_prepared_statements(&piece.tokens);
    let start = out.len();
    classify_parsed(piece, text, print, dialect, prepared, out);
    for c in &mut out[start..] {
        c.session_names |= session_names;
        for f in &from_tokens {
            if !c.has(f.code) {
                c.findings.push(f.clone());
            }
        }
    }
}

/// Findings read off the tokens, so that they hold even when the parser cannot read the
/// statement: MySQL's INTO OUTFILE/DUMPFILE and LOAD DATA.
fn token_findings(tokens: &[TokenWithSpan]) -> Vec<Finding> {
    let mut out = Vec::new();
    // The two previous significant tokens, where they were unquoted words.
    let mut before: Option<&str> = None;
    let mut previous: Option<&str> = None;
    let is = |x: &str, y: &str| x.eq_ignore_ascii_case(y);
    for t in tokens {
        let word = match &t.token {
            Token::Whitespace(_) => continue,
            Token::Word(w) if w.quote_style.is_none() => Some(w.value.as_str()),
            _ => None,
        };
        if let (Some(a), Some(b), Some(c)) = (before, previous, word)
            && is(a, "load")
            && (is(b, "data") || is(b, "xml"))
            && is(c, "local")
        {
            out.push(finding(
                "local_infile",
                "LOAD DATA LOCAL sends a file from the client's machine to the database",
            ));
        }
        if let (Some(a), Some(b)) = (previous, word) {
            if is(a, "into") && (is(b, "outfile") || is(b, "dumpfile")) {
                out.push(finding(
                    "into_outfile",
                    "SELECT ... INTO OUTFILE/DUMPFILE writes a file on the database server",
                ));
            } else if is(a, "load") && (is(b, "data") || is(b, "xml")) {
                out.push(finding(
                    "load_data",
                    "LOAD DATA reads a file (on the server, or the client's with LOCAL) into a table",
                ));
            }
        }
        before = previous;
        previous = word;
    }
    out
}

/// MySQL reads `||` as OR (unless sql_mode has PIPES_AS_CONCAT, which a SET turning it on
/// is held for), where sqlparser reads string concatenation: `WHERE id = 5 || 1 = 1` removes
/// every row. The parser is given OR.
fn mysql_pipes_as_or(mut tokens: Vec<TokenWithSpan>) -> Vec<TokenWithSpan> {
    for t in &mut tokens {
        if t.token == Token::StringConcat {
            t.token = Token::make_keyword("OR");
        }
    }
    tokens
}

fn classify_parsed(
    piece: Piece<'_>,
    text: &str,
    print: String,
    dialect: Dialect,
    prepared: &mut dyn PreparedStatements,
    out: &mut Vec<Classified>,
) {
    if dialect == Dialect::MySql {
        if let Some(prepare) = super::mysql_prepare::prepare_from(&piece.tokens) {
            out.push(mysql_prepare(text, print, prepare, prepared));
            return;
        }
        if let Some(name) = super::mysql_prepare::drop_prepare(&piece.tokens) {
            prepared.deallocate(Some(&name));
            out.push(session_statement(text, print));
            return;
        }
        if let Some(target) = super::settings::mysql_character_set(&piece.tokens) {
            let mut c = session_statement(text, print);
            c.findings
                .extend(super::settings::encoding_finding(target.as_deref()));
            out.push(c);
            return;
        }
    }
    // The parser takes the splitter's tokens: the text is tokenized once.
    let parsed = match dialect {
        Dialect::Postgres => Parser::new(&PostgreSqlDialect {})
            .with_recursion_limit(RECURSION_LIMIT)
            .with_tokens_with_locations(piece.tokens)
            .parse_statements(),
        Dialect::MySql => Parser::new(&MySqlDialect {})
            .with_recursion_limit(RECURSION_LIMIT)
            .with_tokens_with_locations(mysql_pipes_as_or(piece.tokens))
            .parse_statements(),
    };
    let statement = match parsed {
        Ok(mut statements) if statements.len() == 1 => statements.remove(0),
        Ok(statements) => {
            let reason = format!(
                "the lexer found one statement, the parser {}",
                statements.len()
            );
            out.push(Classified::unknown(
                text,
                "statement_count_mismatch",
                reason,
            ));
            return;
        }
        Err(e) => {
            let reason = format!("Airlock cannot parse it: {e}");
            out.push(Classified::unknown(text, "unparseable", reason));
            return;
        }
    };
    match &statement {
        Statement::Prepare {
            name,
            statement: inner,
            ..
        } => {
            let inner_text = inner.to_string();
            let inner_print = split_tokens(&inner_text, dialect)
                .ok()
                .and_then(|mut p| (p.len() == 1).then(|| fingerprint(&p.remove(0).tokens)))
                .unwrap_or_default();
            prepared.prepare(
                statement_name(name, dialect),
                from_statement(&inner_text, inner, inner_print, dialect),
            );
            let mut c = from_statement(text, &statement, print, dialect);
            c.kind = Kind::Session;
            c.findings.clear();
            out.push(c);
        }
        Statement::Execute {
            name: Some(name),
            immediate: false,
            ..
        } => {
            let candidates = match name.0.as_slice() {
                [part] => part
                    .as_ident()
                    .map(|i| prepared.lookup(&statement_name(i, dialect)))
                    .unwrap_or_default(),
                _ => Vec::new(),
            };
            if candidates.is_empty() {
                out.push(Classified::unknown(
                    text,
                    "unknown_prepared_statement",
                    format!("EXECUTE {name}: Airlock did not see this session PREPARE it"),
                ));
            }
            for p in candidates {
                out.push(Classified {
                    text: text.to_owned(),
                    ..p
                });
            }
        }
        Statement::Deallocate { name, .. } => {
            if name.value.eq_ignore_ascii_case("all") && name.quote_style.is_none() {
                prepared.deallocate(None);
            } else {
                prepared.deallocate(Some(&statement_name(name, dialect)));
            }
            out.push(from_statement(text, &statement, print, dialect));
        }
        Statement::Discard {
            object_type: sqlparser::ast::DiscardObject::ALL,
        } => {
            prepared.deallocate(None);
            out.push(from_statement(text, &statement, print, dialect));
        }
        _ => {
            let mut c = from_statement(text, &statement, print, dialect);
            if dialect == Dialect::MySql {
                mysql_findings(&statement, &mut c.findings);
            }
            out.push(c);
        }
    }
}

/// MySQL's `PREPARE name FROM ...`: the name now holds the statement in the string (one
/// statement Airlock can read, or else an unknown one), judged at each EXECUTE; the PREPARE
/// itself runs nothing. From a variable, neither it nor the name can be read.
fn mysql_prepare(
    text: &str,
    print: String,
    prepare: super::mysql_prepare::PrepareFrom,
    prepared: &mut dyn PreparedStatements,
) -> Classified {
    let Some(inner) = prepare.text else {
        let reason = "PREPARE ... FROM a variable or expression: Airlock cannot read the \
                      statement it prepares, so it cannot judge it"
            .to_owned();
        prepared.prepare(
            prepare.name,
            Classified::unknown("", "dynamic_prepare", reason.clone()),
        );
        return Classified::unknown(text, "dynamic_prepare", reason);
    };
    let mut held = classify_in_session(&inner, Dialect::MySql, &mut Prepared::default());
    let held = match held.len() {
        1 => held.remove(0),
        _ => Classified::unknown(
            &inner,
            "unparseable",
            "PREPARE ... FROM a string that is not one statement Airlock can read".to_owned(),
        ),
    };
    prepared.prepare(prepare.name, held);
    session_statement(text, print)
}

/// A statement that only changes the session's prepared names (read off its tokens).
fn session_statement(text: &str, print: String) -> Classified {
    let mut c = Classified::unknown(text, "", String::new());
    c.kind = Kind::Session;
    c.findings.clear();
    c.fingerprint = print;
    c
}

/// Findings only MySQL and MariaDB need: an ALTER TABLE that does not ask for an online
/// algorithm may copy the whole table while blocking writes.
fn mysql_findings(statement: &Statement, out: &mut Vec<Finding>) {
    use sqlparser::ast::AlterTableAlgorithm as Algo;
    if let Statement::AlterTable(alter) = statement {
        let online = alter.operations.iter().any(|op| {
            matches!(
                op,
                AlterTableOperation::Algorithm {
                    algorithm: Algo::Instant | Algo::Inplace,
                    ..
                }
            )
        });
        if !online {
            out.push(finding(
                "alter_without_algorithm",
                "ALTER TABLE without ALGORITHM=INSTANT or INPLACE may copy the whole table while \
                 blocking writes",
            ));
        }
    }
}

/// Classifies one parsed statement.
fn from_statement(
    text: &str,
    statement: &Statement,
    fingerprint: String,
    dialect: Dialect,
) -> Classified {
    let Walk {
        mut kind,
        mut findings,
        tables,
        databases,
        ..
    } = walk(statement, dialect);
    if let Statement::Explain {
        statement: inner, ..
    } = statement
    {
        if explains_by_running(statement) {
            if walk(inner, dialect).kind >= Kind::Write {
                findings.push(finding(
                    "explain_analyze_write",
                    "EXPLAIN ANALYZE runs the statement it explains",
                ));
            }
        } else {
            // Plain EXPLAIN plans the statement without running it.
            kind = Kind::Read;
            findings.clear();
        }
    }
    if kind == Kind::Unknown && findings.is_empty() {
        findings.push(finding(
            "unclassified",
            "Airlock does not know what this kind of statement does",
        ));
    }
    if let Statement::CreateFunction(f) = statement {
        function_body_findings(f, &mut findings);
    }
    if turns_off_standard_strings(statement) {
        findings.push(finding(
            "string_syntax_change",
            "turning standard_conforming_strings off changes where string literals end; \
             Airlock reads them as PostgreSQL does with it on",
        ));
    }
    let database = used_database(statement);
    if matches!(statement, Statement::Use(_)) && database.is_none() {
        findings.push(finding(
            "unreadable_use",
            "Airlock cannot tell which database this USE switches to, so it could not judge \
             later statements for it; name one database, as USE name",
        ));
    }
    for table in &tables {
        if super::relations::holds_credentials(table, dialect) {
            findings.push(Finding {
                code: "credential_catalog",
                reason: format!("{table} holds the database's password hashes"),
            });
        }
    }
    let migration = tables.iter().find_map(|t| migration_tool(t));
    Classified {
        text: text.to_owned(),
        kind,
        fingerprint,
        tables,
        databases,
        findings,
        migration,
        database,
        // Set from the tokens by the caller.
        session_names: false,
        reads_values: reads_values(statement),
    }
}

/// Whether a literal value in `statement` decides what it does (see
/// [`Classified::reads_values`]).
fn reads_values(statement: &Statement) -> bool {
    let literal = |e: &Expr| matches!(e, Expr::Value(_));
    match statement {
        Statement::Set(_) => true,
        Statement::Explain { options, .. } => options
            .iter()
            .flatten()
            .any(|o| o.arg.as_ref().is_some_and(literal)),
        Statement::CreateFunction(f) => matches!(
            &f.function_body,
            Some(
                sqlparser::ast::CreateFunctionBody::AsBeforeOptions { body, .. }
                    | sqlparser::ast::CreateFunctionBody::AsAfterOptions(body)
            ) if literal(body)
        ),
        _ => false,
    }
}

/// The database `USE name` switches to (MySQL: identifiers are taken as written, without
/// their quotes).
fn used_database(statement: &Statement) -> Option<String> {
    use sqlparser::ast::Use;
    let Statement::Use(Use::Object(name) | Use::Database(name) | Use::Schema(name)) = statement
    else {
        return None;
    };
    match name.0.as_slice() {
        [one] => one.as_ident().map(|i| i.value.clone()),
        _ => None,
    }
}

thread_local! {
    /// How deep classification is inside function bodies (a body may create a function).
    static BODY_DEPTH: std::cell::Cell<u8> = const { std::cell::Cell::new(0) };
}

/// The deepest function body inside a function body that is read.
const MAX_BODY_DEPTH: u8 = 4;

/// What a function's body does: an SQL body quoted as a string is classified, and its
/// findings become the CREATE's; a body in any other language runs statements Airlock cannot
/// read, which is a finding of its own.
fn function_body_findings(f: &sqlparser::ast::CreateFunction, out: &mut Vec<Finding>) {
    use sqlparser::ast::{CreateFunctionBody as Body, Value};
    let text = match &f.function_body {
        Some(Body::AsBeforeOptions { body, .. } | Body::AsAfterOptions(body)) => match body {
            Expr::Value(v) => match &v.value {
                Value::DollarQuotedString(d) => Some(d.value.clone()),
                Value::SingleQuotedString(s) => Some(s.clone()),
                _ => None,
            },
            _ => None,
        },
        // RETURN expressions and BEGIN ATOMIC bodies are parsed with the statement.
        _ => return,
    };
    let language = f
        .language
        .as_ref()
        .map(|l| l.value.to_ascii_lowercase())
        .unwrap_or_else(|| "sql".to_owned());
    let Some(text) = text.filter(|_| language == "sql") else {
        out.push(Finding {
            code: "opaque_body",
            reason: format!(
                "the function's body is in {language}, whose statements Airlock cannot read"
            ),
        });
        return;
    };
    let depth = BODY_DEPTH.with(|d| d.get());
    if depth >= MAX_BODY_DEPTH {
        out.push(finding(
            "opaque_body",
            "function bodies nested this deep are not read",
        ));
        return;
    }
    BODY_DEPTH.with(|d| d.set(depth + 1));
    let inner = classify(&text, Dialect::Postgres);
    BODY_DEPTH.with(|d| d.set(depth));
    for c in inner {
        if c.kind == Kind::Unknown && !c.has("opaque_body") {
            out.push(finding(
                "opaque_body",
                "the function's body holds a statement Airlock cannot read",
            ));
        }
        for f in c.findings {
            if !out.iter().any(|o| o.code == f.code) {
                out.push(f);
            }
        }
    }
}

/// `SET standard_conforming_strings` to anything but on: backslashes would then escape quotes
/// in plain string literals, and text Airlock reads as one statement could be several.
fn turns_off_standard_strings(statement: &Statement) -> bool {
    let Statement::Set(Set::SingleAssignment {
        variable, values, ..
    }) = statement
    else {
        return false;
    };
    if !setting_is(variable, "standard_conforming_strings") {
        return false;
    }
    let on = |v: &Expr| {
        let v = v.to_string().trim_matches('\'').to_ascii_lowercase();
        matches!(v.as_str(), "on" | "true" | "1" | "yes")
    };
    !matches!(values.as_slice(), [v] if on(v))
}

fn walk(statement: &Statement, dialect: Dialect) -> Walk {
    let mut walk = Walk {
        kind: Kind::Read,
        findings: Vec::new(),
        tables: Vec::new(),
        databases: Vec::new(),
        dialect,
    };
    let _ = statement.visit(&mut walk);
    walk
}

/// EXPLAIN ANALYZE, or EXPLAIN (ANALYZE [true|on|1]): runs what it explains.
fn explains_by_running(statement: &Statement) -> bool {
    let Statement::Explain {
        analyze, options, ..
    } = statement
    else {
        return false;
    };
    *analyze
        || options.iter().flatten().any(|o| {
            o.name.value.eq_ignore_ascii_case("analyze")
                && o.arg.as_ref().is_none_or(|a| {
                    let v = a.to_string().trim_matches('\'').to_ascii_lowercase();
                    !matches!(v.as_str(), "false" | "off" | "0" | "no")
                })
        })
}

/// Whether a query body changes data (a CTE's INSERT/UPDATE/DELETE/MERGE).
fn body_writes(body: &SetExpr) -> bool {
    match body {
        SetExpr::Insert(_) | SetExpr::Update(_) | SetExpr::Delete(_) | SetExpr::Merge(_) => true,
        SetExpr::Query(q) => body_writes(&q.body),
        SetExpr::SetOperation { left, right, .. } => body_writes(left) || body_writes(right),
        _ => false,
    }
}

/// One pass over a statement's tree: the kinds and findings of every statement in it
/// (statements inside statements included), every function it calls (in expressions and as
/// table functions in FROM), and every relation it names.
struct Walk {
    kind: Kind,
    findings: Vec<Finding>,
    tables: Vec<String>,
    databases: Vec<String>,
    dialect: Dialect,
}

impl Walk {
    fn call_named(&mut self, name: &sqlparser::ast::ObjectName) {
        let parts: Option<Vec<sqlparser::ast::Ident>> =
            name.0.iter().map(|p| p.as_ident().cloned()).collect();
        let free = parts.is_some_and(|p| is_builtin_side_effect_free(&p));
        if !free {
            self.findings.push(Finding {
                code: "function_call",
                reason: format!(
                    "calls {name}, which is not on the list of side-effect-free functions"
                ),
            });
        }
    }

    fn relation(&mut self, relation: &sqlparser::ast::ObjectName) {
        let name = super::relations::name(relation, self.dialect);
        if !self.tables.contains(&name) {
            self.tables.push(name);
        }
        if let Some(db) = super::relations::database(relation, self.dialect)
            && !self.databases.contains(&db)
        {
            self.databases.push(db);
        }
    }

    fn call(&mut self, name: String) {
        if !is_side_effect_free(&name) {
            self.findings.push(Finding {
                code: "function_call",
                reason: format!(
                    "calls {name}, which is not on the list of side-effect-free functions"
                ),
            });
        }
    }
}

impl Visitor for Walk {
    type Break = ();

    fn pre_visit_statement(&mut self, s: &Statement) -> ControlFlow<()> {
        let k = match (s, self.dialect) {
            // MySQL's RESET is of the server: MASTER (deletes the binary logs), REPLICA,
            // QUERY CACHE, PERSIST.
            (Statement::Reset(_), Dialect::MySql) => Kind::Admin,
            _ => kind_of(s),
        };
        self.kind = self.kind.max(k);
        findings_of(s, &mut self.findings);
        let mut names = Vec::new();
        super::relations::unreported(s, self.dialect, &mut names);
        for name in &names {
            self.relation(name);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        if let Expr::Function(f) = expr {
            self.call_named(&f.name);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, query: &sqlparser::ast::Query) -> ControlFlow<()> {
        let writes = query
            .with
            .iter()
            .flat_map(|w| &w.cte_tables)
            .any(|cte| body_writes(&cte.query.body));
        if writes {
            self.findings
                .push(finding("data_modifying_cte", "a WITH clause changes data"));
        }
        if let SetExpr::Select(select) = &*query.body
            && !query.locks.is_empty()
            && !select.selection.as_ref().is_some_and(limits_rows)
        {
            self.findings.push(finding(
                "lock_whole_table",
                "SELECT ... FOR UPDATE/SHARE without a WHERE on any column locks every row",
            ));
        }
        // MySQL's SELECT ... INTO @variable assigns a session variable.
        if let SetExpr::Select(select) = &*query.body
            && let Some(into) = &select.into
            && !(self.dialect == Dialect::MySql
                && !into.targets.is_empty()
                && into.targets.iter().all(|t| t.to_string().starts_with('@')))
        {
            self.kind = self.kind.max(Kind::Ddl);
            self.findings.push(finding(
                "create_table_as",
                "SELECT ... INTO copies the result of a query into a new table",
            ));
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
        match factor {
            TableFactor::Table {
                name,
                args: Some(_),
                ..
            }
            | TableFactor::Function { name, .. } => {
                self.call_named(name);
            }
            TableFactor::TableFunction { .. } => self.call("a table function".into()),
            _ => {}
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, relation: &sqlparser::ast::ObjectName) -> ControlFlow<()> {
        self.relation(relation);
        ControlFlow::Continue(())
    }
}

/// Bookkeeping tables of migration tools, by tool.
const MIGRATION_TABLES: &[(&str, &str)] = &[
    ("flyway_schema_history", "flyway"),
    ("alembic_version", "alembic"),
    ("schema_migrations", "rails/golang-migrate"),
    ("_sqlx_migrations", "sqlx"),
    ("databasechangelog", "liquibase"),
    ("databasechangeloglock", "liquibase"),
    ("__efmigrationshistory", "entity-framework"),
];

fn migration_tool(table: &str) -> Option<&'static str> {
    let lower = table.to_ascii_lowercase();
    let base = lower.rsplit('.').next().unwrap_or(&lower).trim_matches('"');
    MIGRATION_TABLES
        .iter()
        .find(|(t, _)| *t == base)
        .map(|(_, tool)| *tool)
}

/// The statement's tokens with literals replaced by `?`, unquoted words lower-cased (as
/// PostgreSQL folds them), comments dropped and white space collapsed.
fn fingerprint(tokens: &[TokenWithSpan]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(tokens.len() * 4);
    let mut space = false;
    for TokenWithSpan { token, .. } in tokens {
        let literal = matches!(
            token,
            Token::Number(..)
                | Token::SingleQuotedString(_)
                // MySQL's "..." is a string, as are the byte and raw strings of other
                // dialects: a fingerprint keeps none of them.
                | Token::DoubleQuotedString(_)
                | Token::TripleSingleQuotedString(_)
                | Token::TripleDoubleQuotedString(_)
                | Token::SingleQuotedByteStringLiteral(_)
                | Token::DoubleQuotedByteStringLiteral(_)
                | Token::TripleSingleQuotedByteStringLiteral(_)
                | Token::TripleDoubleQuotedByteStringLiteral(_)
                | Token::SingleQuotedRawStringLiteral(_)
                | Token::DoubleQuotedRawStringLiteral(_)
                | Token::TripleSingleQuotedRawStringLiteral(_)
                | Token::TripleDoubleQuotedRawStringLiteral(_)
                | Token::NationalStringLiteral(_)
                | Token::EscapedStringLiteral(_)
                | Token::UnicodeStringLiteral(_)
                | Token::HexStringLiteral(_)
                | Token::DollarQuotedString(_)
        );
        match token {
            Token::Whitespace(_) => {
                space = !out.is_empty();
                continue;
            }
            _ if space => out.push(' '),
            _ => {}
        }
        space = false;
        match token {
            _ if literal => out.push('?'),
            Token::Word(w) if w.quote_style.is_none() => {
                // As PostgreSQL folds unquoted names: ASCII letters only.
                let start = out.len();
                out.push_str(&w.value);
                out[start..].make_ascii_lowercase();
            }
            other => {
                let _ = write!(out, "{other}");
            }
        }
    }
    out
}

fn finding(code: &'static str, reason: &str) -> Finding {
    Finding {
        code,
        reason: reason.to_owned(),
    }
}

/// The kind of one statement, not counting the statements inside it.
fn kind_of(s: &Statement) -> Kind {
    use Statement as S;
    match s {
        S::Query(_)
        | S::ExplainTable { .. }
        | S::ShowVariable { .. }
        | S::ShowVariables { .. }
        | S::ShowFunctions { .. }
        | S::ShowStatus { .. }
        | S::ShowCreate { .. }
        | S::ShowColumns { .. }
        | S::ShowDatabases { .. }
        | S::ShowSchemas { .. }
        | S::ShowCharset(_)
        | S::ShowTables { .. }
        | S::ShowViews { .. }
        | S::ShowCollation { .. }
        | S::ShowProcessList { .. } => Kind::Read,
        S::Use(_) => Kind::Session,
        S::Explain { .. } => Kind::Read,
        S::Insert(_) | S::Update(_) | S::Delete(_) | S::Merge(_) | S::Truncate(_) => Kind::Write,
        S::Drop {
            object_type: ObjectType::Role | ObjectType::User,
            ..
        } => Kind::Privilege,
        S::AlterTable(a)
            if a.operations
                .iter()
                .any(|op| matches!(op, AlterTableOperation::OwnerTo { .. })) =>
        {
            Kind::Privilege
        }
        S::Copy {
            to: true,
            target: CopyTarget::Stdout,
            ..
        } => Kind::Read,
        S::Copy {
            to: false,
            target: CopyTarget::Stdin,
            ..
        } => Kind::Write,
        S::Copy { .. } => Kind::Admin,
        S::StartTransaction { .. }
        | S::Commit { .. }
        | S::Rollback { .. }
        | S::Savepoint { .. }
        | S::ReleaseSavepoint { .. } => Kind::Transaction,
        S::Set(Set::SetRole { .. } | Set::SetSessionAuthorization(_)) => Kind::Privilege,
        S::Set(set) if super::settings::privileged(set) => Kind::Privilege,
        S::Set(set) if super::settings::administers(set) => Kind::Admin,
        S::Set(_) | S::Reset(_) | S::Discard { .. } | S::Deallocate { .. } => Kind::Session,
        S::LISTEN { .. }
        | S::UNLISTEN { .. }
        | S::NOTIFY { .. }
        | S::Fetch { .. }
        | S::Close { .. } => Kind::Utility,
        S::Declare { .. } => Kind::Read,
        S::Grant(_)
        | S::Revoke(_)
        | S::GrantRole(_)
        | S::RevokeRole(_)
        | S::CreateRole(_)
        | S::AlterRole { .. }
        | S::CreateUser(_)
        | S::AlterUser(_)
        | S::AlterDefaultPrivileges(_) => Kind::Privilege,
        S::Kill { .. } | S::Vacuum(_) | S::Lock(_) | S::LockTables { .. } | S::Analyze(_) => {
            Kind::Admin
        }
        S::CreateTable(_)
        | S::CreateView(_)
        | S::CreateIndex(_)
        | S::CreateSchema { .. }
        | S::CreateDatabase { .. }
        | S::CreateSequence { .. }
        | S::CreateType { .. }
        | S::CreateDomain(_)
        | S::CreateExtension(_)
        | S::CreateFunction(_)
        | S::CreateTrigger(_)
        | S::CreatePolicy(_)
        | S::AlterTable(_)
        | S::AlterIndex { .. }
        | S::AlterView(_)
        | S::AlterSchema(_)
        | S::AlterType(_)
        | S::AlterPolicy(_)
        | S::Drop { .. }
        | S::DropFunction(_)
        | S::DropTrigger(_)
        | S::DropExtension(_)
        | S::DropPolicy(_)
        | S::Comment { .. }
        | S::RefreshMaterializedView(_) => Kind::Ddl,
        // PREPARE/EXECUTE, procedure calls and anything else: what they do is not visible here.
        _ => Kind::Unknown,
    }
}

/// Whether a SET names `setting` (setting names compare without case, quoted or not).
fn setting_is(variable: &sqlparser::ast::ObjectName, setting: &str) -> bool {
    match variable.0.as_slice() {
        [part] => part
            .as_ident()
            .is_some_and(|i| i.value.eq_ignore_ascii_case(setting)),
        _ => false,
    }
}

/// The risk findings of one statement, not counting the statements inside it.
fn findings_of(s: &Statement, out: &mut Vec<Finding>) {
    use Statement as S;
    match s {
        S::Set(set) => {
            super::settings::findings(set, out);
            super::settings::encoding_findings(set, out);
            super::settings::sql_mode_findings(set, out);
            super::settings::search_path_findings(set, out);
        }
        S::Update(u) if !u.selection.as_ref().is_some_and(limits_rows) => {
            out.push(finding(
                "update_without_where",
                "UPDATE without a WHERE that limits the rows (none, none on a column, or one \
                 true for every row such as OR 1=1) changes every row",
            ));
        }
        S::Delete(d) if !d.selection.as_ref().is_some_and(limits_rows) => {
            out.push(finding(
                "delete_without_where",
                "DELETE without a WHERE that limits the rows (none, none on a column, or one \
                 true for every row such as OR 1=1) removes every row",
            ));
        }
        S::Merge(m) if !limits_rows(&m.on) => {
            out.push(finding(
                "delete_without_where",
                "MERGE whose ON condition is true for every row (on no column, or such as \
                 OR 1=1) matches every row",
            ));
        }
        S::DropFunction(_) | S::DropTrigger(_) | S::DropExtension(_) | S::DropPolicy(_) => {
            out.push(finding(
                "drop",
                "DROP removes a function, trigger, extension or policy (with CASCADE, more)",
            ));
        }
        S::Truncate(_) => out.push(finding("truncate", "TRUNCATE removes every row at once")),
        S::Drop { object_type, .. } => {
            let what = match object_type {
                ObjectType::Table => "a table",
                ObjectType::Schema => "a schema",
                ObjectType::Database => "a database",
                ObjectType::Index => "an index",
                ObjectType::View | ObjectType::MaterializedView => "a view",
                _ => "an object",
            };
            out.push(Finding {
                code: "drop",
                reason: format!("DROP removes {what}"),
            });
            if *object_type == ObjectType::Index {
                out.push(finding(
                    "index_without_concurrently",
                    "DROP INDEX without CONCURRENTLY blocks the table while it runs",
                ));
            }
        }
        S::Grant(_) | S::Revoke(_) | S::GrantRole(_) | S::RevokeRole(_) => {
            out.push(finding(
                "privilege_change",
                "GRANT/REVOKE changes who may do what",
            ));
        }
        S::Copy {
            target: CopyTarget::File { .. } | CopyTarget::Program { .. },
            ..
        } => out.push(finding(
            "copy_file_or_program",
            "COPY reads or writes a server file or runs a program",
        )),
        S::Call(f) => out.push(Finding {
            code: "function_call",
            reason: format!("CALL runs procedure {}, which may do anything", f.name),
        }),
        S::AlterTable(alter) => alter.operations.iter().for_each(|op| alter_findings(op, out)),
        S::CreateIndex(index) if !index.concurrently => out.push(finding(
            "index_without_concurrently",
            "CREATE INDEX without CONCURRENTLY blocks writes to the table while it builds",
        )),
        S::CreateView(v) if v.materialized => out.push(finding(
            "create_table_as",
            "CREATE MATERIALIZED VIEW copies the result of a query into a new relation",
        )),
        S::CreateTable(create) if create.query.is_some() => out.push(finding(
            "create_table_as",
            "CREATE TABLE AS copies the result of a query into a new table",
        )),
        S::Lock(lock) if matches!(lock.lock_mode, None | Some(LockTableMode::AccessExclusive)) => {
            out.push(finding(
                "lock_access_exclusive",
                "LOCK ... ACCESS EXCLUSIVE (the default mode) blocks every other session, readers included",
            ))
        }
        _ => {}
    }
}

/// Findings of one ALTER TABLE operation: the changes migration linters flag.
fn alter_findings(op: &AlterTableOperation, out: &mut Vec<Finding>) {
    use AlterTableOperation as A;
    match op {
        A::DropColumn { .. } => {
            out.push(finding("drop", "DROP COLUMN removes a column and its data"))
        }
        A::RenameColumn { .. } | A::RenameTable { .. } => out.push(finding(
            "rename",
            "renaming breaks every client that still uses the old name",
        )),
        A::AlterColumn {
            op: AlterColumnOperation::SetDataType { .. },
            ..
        } => out.push(finding(
            "column_type_change",
            "changing a column's type may rewrite the table under an exclusive lock",
        )),
        A::AlterColumn {
            op: AlterColumnOperation::SetNotNull,
            ..
        } => out.push(finding(
            "not_null_added",
            "SET NOT NULL scans the whole table under an exclusive lock",
        )),
        A::AddColumn { column_def, .. } => column_findings(column_def, out),
        A::OwnerTo { .. } => out.push(finding(
            "privilege_change",
            "a new owner gets every right on the table, GRANT included",
        )),
        A::AddConstraint {
            constraint,
            not_valid,
        } => {
            if matches!(
                constraint,
                TableConstraint::Unique(_) | TableConstraint::PrimaryKey(_)
            ) && !constraint
                .to_string()
                .to_ascii_uppercase()
                .contains("USING INDEX")
            {
                out.push(finding(
                    "index_without_concurrently",
                    "adding a UNIQUE or PRIMARY KEY constraint builds its index under an exclusive lock; \
                     build it CONCURRENTLY first and add the constraint USING INDEX",
                ));
            }
            let checks_rows = matches!(
                constraint,
                TableConstraint::ForeignKey(_) | TableConstraint::Check(_)
            );
            if checks_rows && !not_valid {
                out.push(finding(
                    "constraint_without_not_valid",
                    "adding a CHECK or FOREIGN KEY without NOT VALID checks every row under a lock",
                ));
            }
        }
        _ => {}
    }
}

/// Functions whose value differs per row: as a column default they force a table rewrite.
const VOLATILE_DEFAULTS: &[&str] = &[
    "random",
    "clock_timestamp",
    "gen_random_uuid",
    "uuid_generate_v4",
    "nextval",
    "timeofday",
];

fn column_findings(column: &ColumnDef, out: &mut Vec<Finding>) {
    let default = column.options.iter().find_map(|o| match &o.option {
        ColumnOption::Default(e) => Some(e),
        _ => None,
    });
    let not_null = column
        .options
        .iter()
        .any(|o| matches!(o.option, ColumnOption::NotNull));
    if not_null && default.is_none() {
        out.push(finding(
            "not_null_without_default",
            "a NOT NULL column without a default fails on a table that has rows",
        ));
    }
    let volatile_default = default.is_some_and(|e| {
        sqlparser::ast::visit_expressions(e, |x| match x {
            Expr::Function(f) => {
                let name = f.name.to_string().to_ascii_lowercase();
                let base = name.rsplit('.').next().unwrap_or(&name).to_owned();
                if VOLATILE_DEFAULTS.contains(&base.as_str()) {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            }
            _ => ControlFlow::Continue(()),
        })
        .is_break()
    });
    let serial = matches!(
        column.data_type.to_string().to_ascii_lowercase().as_str(),
        "serial" | "bigserial" | "smallserial" | "serial2" | "serial4" | "serial8"
    );
    let generated = column.options.iter().any(|o| {
        matches!(
            o.option,
            ColumnOption::Generated { .. } | ColumnOption::Identity(_)
        )
    });
    if volatile_default || serial || generated {
        out.push(finding(
            "volatile_default",
            "a column added with a per-row default (volatile function, serial, identity or \
             stored generated) rewrites the whole table",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(sql: &str) -> Classified {
        let mut all = classify(sql, Dialect::Postgres);
        assert_eq!(all.len(), 1, "{sql:?}");
        all.remove(0)
    }

    #[test]
    fn a_use_names_the_database_it_switches_to() {
        for (sql, database) in [
            ("USE prod", Some("prod")),
            ("/* app */ use `Prod`", Some("Prod")),
            ("use test; select 1", Some("test")),
            ("select 1", None),
            ("set names utf8mb4", None),
            ("use a.b", None),
        ] {
            let first = classify(sql, Dialect::MySql).remove(0);
            assert_eq!(first.database.as_deref(), database, "{sql}");
            if first.text.to_lowercase().starts_with("use") {
                assert_eq!(first.kind, Kind::Session, "{sql}");
                assert_eq!(first.has("unreadable_use"), database.is_none(), "{sql}");
            }
        }
    }

    #[test]
    fn kinds_of_ordinary_statements() {
        for (sql, kind) in [
            ("select * from accounts where id = 1", Kind::Read),
            ("insert into accounts (id) values (1)", Kind::Write),
            ("update accounts set balance = 0 where id = 1", Kind::Write),
            ("delete from accounts where id = 1", Kind::Write),
            ("create table t (id int)", Kind::Ddl),
            ("alter table t add column x int", Kind::Ddl),
            ("drop table t", Kind::Ddl),
            ("grant select on t to app", Kind::Privilege),
            ("set role admin", Kind::Privilege),
            ("set session authorization admin", Kind::Privilege),
            ("set search_path = public", Kind::Session),
            ("begin", Kind::Transaction),
            ("commit", Kind::Transaction),
            ("lock table t in access exclusive mode", Kind::Admin),
            ("copy t to stdout", Kind::Read),
            ("copy t from stdin", Kind::Write),
            ("copy t from '/etc/passwd'", Kind::Admin),
            ("listen channel", Kind::Utility),
        ] {
            assert_eq!(one(sql).kind, kind, "{sql}");
        }
    }

    #[test]
    fn risky_statements_carry_findings() {
        assert!(one("update accounts set balance = 0").has("update_without_where"));
        assert!(!one("update accounts set balance = 0 where id = 1").has("update_without_where"));
        assert!(one("delete from accounts").has("delete_without_where"));
        // A trailing comment cannot hide a missing WHERE: the comment is not a WHERE.
        assert!(one("delete from accounts -- where id = 1").has("delete_without_where"));
        assert!(one("truncate accounts").has("truncate"));
        assert!(one("drop schema s cascade").has("drop"));
        assert!(one("revoke all on t from app").has("privilege_change"));
        assert!(one("copy t to program 'curl example.com'").has("copy_file_or_program"));
    }

    #[test]
    fn migration_hazards_are_named() {
        for (sql, code) in [
            ("alter table t rename column a to b", "rename"),
            ("alter table t rename to u", "rename"),
            ("alter table t drop column a", "drop"),
            (
                "alter table t alter column a type bigint",
                "column_type_change",
            ),
            (
                "alter table t alter column a set not null",
                "not_null_added",
            ),
            (
                "alter table t add column a int not null",
                "not_null_without_default",
            ),
            (
                "alter table t add column a uuid default gen_random_uuid()",
                "volatile_default",
            ),
            (
                "alter table t add constraint c check (a > 0)",
                "constraint_without_not_valid",
            ),
            (
                "alter table t add constraint f foreign key (a) references u (id)",
                "constraint_without_not_valid",
            ),
            ("create index i on t (a)", "index_without_concurrently"),
            ("create table t2 as select * from t", "create_table_as"),
            ("lock table t", "lock_access_exclusive"),
            (
                "lock table t in access exclusive mode",
                "lock_access_exclusive",
            ),
        ] {
            assert!(
                one(sql).has(code),
                "{sql} should have {code}: {:?}",
                one(sql).findings
            );
        }
        for sql in [
            "alter table t add column a int not null default 0",
            "alter table t add column a timestamptz default now()",
            "alter table t add constraint c check (a > 0) not valid",
            "create index concurrently i on t (a)",
            "lock table t in share mode",
            "alter table t add column a int",
        ] {
            assert!(
                one(sql).findings.is_empty(),
                "{sql}: {:?}",
                one(sql).findings
            );
        }
    }

    #[test]
    fn statements_inside_statements_count() {
        let c = one("with gone as (delete from accounts returning *) select count(*) from gone");
        assert_eq!(c.kind, Kind::Write);
        assert!(c.has("data_modifying_cte"));
        assert!(c.has("delete_without_where"));
        let c = one("explain analyze delete from accounts where id = 1");
        assert_eq!(c.kind, Kind::Write);
        assert!(c.has("explain_analyze_write"));
        assert_eq!(one("explain select 1").kind, Kind::Read);
    }

    #[test]
    fn function_calls_off_the_allow_list_are_findings() {
        for sql in [
            "select pg_terminate_backend(pid) from pg_stat_activity",
            "select lo_unlink(16385)",
            "select set_config('role', 'admin', false)",
            "select setval('s', 1)",
            "select * from query_to_xml('select lo_unlink(1)', true, true, '')",
            "select dblink_exec('dbname=x', 'drop table t')",
        ] {
            let c = one(sql);
            assert!(c.has("function_call"), "{sql}: {:?}", c.findings);
        }
        for sql in [
            "select count(*), max(id), coalesce(name, '') from users group by name",
            "select pg_catalog.format_type(a.atttypid, a.atttypmod) from pg_catalog.pg_attribute a",
            "select now(), date_trunc('day', created_at) from events",
        ] {
            assert!(
                !one(sql).has("function_call"),
                "{sql}: {:?}",
                one(sql).findings
            );
        }
    }

    #[test]
    fn fingerprints_group_statements_that_differ_only_in_literals() {
        let a = one("select * from t where id = 1 and name = 'alice'");
        let b = one("SELECT * FROM t WHERE id = 42 AND name = 'bob'");
        assert_eq!(a.fingerprint, b.fingerprint);
        assert_eq!(a.fingerprint, "select * from t where id = ? and name = ?");
        let c = one("select * from t  where id = 7 -- comment\n and name = $$x$$");
        assert_eq!(
            c.fingerprint, a.fingerprint,
            "comments, spacing and quoting style do not matter"
        );
        assert!(!a.fingerprint.contains("alice"), "no literal survives");
        let my = classify("SELECT * FROM t WHERE k = \"s3cret\"", Dialect::MySql);
        assert_eq!(
            my[0].fingerprint, "select * from t where k = ?",
            "MySQL's \"...\" is a string"
        );
        assert_ne!(
            a.fingerprint,
            one("select * from u where id = 1").fingerprint
        );
    }

    #[test]
    fn holes_a_corpus_review_found_are_closed() {
        let cases: &[(&str, Kind, &[&str])] = &[
            (
                "SELECT * INTO users_backup FROM users",
                Kind::Ddl,
                &["create_table_as"],
            ),
            (
                "EXPLAIN (ANALYZE) DELETE FROM orders WHERE id = 1",
                Kind::Write,
                &["explain_analyze_write"],
            ),
            (
                "EXPLAIN (ANALYZE true, FORMAT JSON) UPDATE users SET is_admin = true",
                Kind::Write,
                &["update_without_where", "explain_analyze_write"],
            ),
            (
                "EXPLAIN ANALYZE WITH d AS (DELETE FROM orders WHERE id = 1 RETURNING 1) SELECT * FROM d",
                Kind::Write,
                &["data_modifying_cte", "explain_analyze_write"],
            ),
            (
                "EXPLAIN (FORMAT JSON) UPDATE orders SET status = 'x' WHERE id = 1",
                Kind::Read,
                &[],
            ),
            ("SELECT public.lower('x')", Kind::Read, &["function_call"]),
            ("SELECT \"LOWER\"('x')", Kind::Read, &["function_call"]),
            ("SELECT \"evil.count\"()", Kind::Read, &["function_call"]),
            (
                "SELECT pg_catalog.lower('x'), lower('y'), \"lower\"('z')",
                Kind::Read,
                &[],
            ),
            ("SET \"role\" TO postgres", Kind::Privilege, &[]),
            (
                "SET \"session_authorization\" = 'postgres'",
                Kind::Privilege,
                &[],
            ),
            (
                "SET \"standard_conforming_strings\" = off",
                Kind::Session,
                &["string_syntax_change"],
            ),
            (
                "DELETE FROM users WHERE 1=1",
                Kind::Write,
                &["delete_without_where"],
            ),
            (
                "UPDATE users SET is_admin = true WHERE true",
                Kind::Write,
                &["update_without_where"],
            ),
            (
                "MERGE INTO users u USING (SELECT 1 AS one) s ON true WHEN MATCHED THEN DELETE",
                Kind::Write,
                &["delete_without_where"],
            ),
            ("DROP ROLE app", Kind::Privilege, &["drop"]),
            (
                "ALTER TABLE users OWNER TO mallory",
                Kind::Privilege,
                &["privilege_change"],
            ),
            (
                "DROP FUNCTION IF EXISTS audit_trigger() CASCADE",
                Kind::Ddl,
                &["drop"],
            ),
            ("DROP EXTENSION postgis CASCADE", Kind::Ddl, &["drop"]),
            ("DROP TRIGGER audit ON users", Kind::Ddl, &["drop"]),
            (
                "DROP POLICY tenant_isolation ON orders",
                Kind::Ddl,
                &["drop"],
            ),
            (
                "ALTER TABLE events ADD COLUMN jitter float8 DEFAULT random() * 10",
                Kind::Ddl,
                &["volatile_default"],
            ),
            (
                "ALTER TABLE events ADD COLUMN seq bigserial",
                Kind::Ddl,
                &["volatile_default"],
            ),
            (
                "ALTER TABLE orders ADD COLUMN id2 bigint GENERATED ALWAYS AS IDENTITY",
                Kind::Ddl,
                &["volatile_default"],
            ),
            (
                "ALTER TABLE users ADD CONSTRAINT users_email_key UNIQUE (email)",
                Kind::Ddl,
                &["index_without_concurrently"],
            ),
            (
                "ALTER TABLE users ADD PRIMARY KEY (id)",
                Kind::Ddl,
                &["index_without_concurrently"],
            ),
            (
                "ALTER TABLE users ADD CONSTRAINT users_email_key UNIQUE USING INDEX users_email_idx",
                Kind::Ddl,
                &[],
            ),
            (
                "CREATE MATERIALIZED VIEW users_snapshot AS SELECT * FROM users",
                Kind::Ddl,
                &["create_table_as"],
            ),
            (
                "WITH src AS (SELECT id FROM staging WHERE ok) INSERT INTO target (id) SELECT id FROM src",
                Kind::Write,
                &[],
            ),
            (
                "WITH stale AS (SELECT id FROM sessions WHERE expires < now()) DELETE FROM sessions WHERE id IN (SELECT id FROM stale)",
                Kind::Write,
                &[],
            ),
        ];
        for (sql, kind, findings) in cases {
            let c = one(sql);
            let mut got: Vec<&str> = c.findings.iter().map(|f| f.code).collect();
            got.sort();
            let mut want = findings.to_vec();
            want.sort();
            assert_eq!((c.kind, got), (*kind, want), "{sql}");
        }
    }

    #[test]
    fn function_bodies_are_read() {
        let sql =
            one("CREATE FUNCTION wipe() RETURNS void LANGUAGE sql AS $$ DELETE FROM users $$");
        assert_eq!(sql.kind, Kind::Ddl);
        assert!(sql.has("delete_without_where"), "{sql:?}");
        let plpgsql = one(
            "CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$ BEGIN DELETE FROM users; END $$",
        );
        assert!(plpgsql.has("opaque_body"));
        let harmless = one("CREATE FUNCTION one() RETURNS int LANGUAGE sql AS 'SELECT 1'");
        assert!(harmless.findings.is_empty(), "{harmless:?}");
        let mut nested = "SELECT 1".to_owned();
        for i in 0..10 {
            nested = format!(
                "CREATE FUNCTION f{i}() RETURNS void LANGUAGE sql AS $f{i}$ {nested} $f{i}$"
            );
        }
        assert!(one(&nested).has("opaque_body"), "depth is bounded");
    }

    #[test]
    fn text_past_the_size_limit_is_unknown_without_reading_it() {
        let huge = format!("select '{}'", "x".repeat(MAX_TEXT));
        let c = classify(&huge, Dialect::Postgres);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].kind, Kind::Unknown);
        assert!(c[0].has("too_large"));
    }

    #[test]
    fn turning_standard_strings_off_is_a_finding() {
        for sql in [
            "set standard_conforming_strings = off",
            "SET SESSION standard_conforming_strings TO 'off'",
            "set standard_conforming_strings = default",
        ] {
            assert!(one(sql).has("string_syntax_change"), "{sql}");
        }
        assert!(!one("set standard_conforming_strings = on").has("string_syntax_change"));
        assert!(
            one("select set_config('standard_conforming_strings', 'off', false)")
                .has("function_call")
        );
    }

    #[test]
    fn migration_tools_are_recognised_by_their_tables() {
        assert_eq!(
            one("insert into flyway_schema_history values (1)").migration,
            Some("flyway")
        );
        assert_eq!(
            one("update alembic_version set version_num = 'abc'").migration,
            Some("alembic")
        );
        assert_eq!(
            one(r#"select * from "__EFMigrationsHistory""#).migration,
            Some("entity-framework")
        );
        assert_eq!(
            one("select * from public._sqlx_migrations").migration,
            Some("sqlx")
        );
        assert_eq!(one("select * from accounts").migration, None);
        let file = classify(
            "alter table users add column nickname text; \
             insert into schema_migrations (version) values ('20261125')",
            Dialect::Postgres,
        );
        assert!(
            file.iter()
                .all(|c| c.migration == Some("rails/golang-migrate")),
            "a migration file sent as one string is one run"
        );
    }

    #[test]
    fn tables_are_named() {
        let c = one("select * from a join s.b on a.id = b.id where exists (select 1 from c)");
        assert_eq!(c.tables, ["a", "s.b", "c"]);
        assert_eq!(one("insert into t select * from u").tables, ["t", "u"]);
    }

    #[test]
    fn what_cannot_be_understood_is_unknown() {
        for sql in [
            "selec 1",
            "do $$ begin perform 1; end $$",
            "alter system set work_mem = '1GB'",
            "select 'open",
        ] {
            let c = &classify(sql, Dialect::Postgres)[0];
            assert_eq!(c.kind, Kind::Unknown, "{sql}");
            assert!(!c.findings.is_empty(), "{sql}: a reason is given");
        }
        assert_eq!(one("execute never_prepared").kind, Kind::Unknown);
        let deep = format!("select {}1{}", "(".repeat(200), ")".repeat(200));
        assert_eq!(one(&deep).kind, Kind::Unknown, "recursion is bounded");
    }

    #[test]
    fn sql_level_prepare_is_remembered_and_execute_judged_as_what_it_runs() {
        let mut session = Prepared::default();
        let prepare = classify_in_session(
            "PREPARE Wipe AS delete from accounts",
            Dialect::Postgres,
            &mut session,
        );
        assert_eq!(prepare[0].kind, Kind::Session, "preparing runs nothing");
        let run = classify_in_session("execute wipe", Dialect::Postgres, &mut session);
        assert_eq!(run[0].kind, Kind::Write);
        assert!(run[0].has("delete_without_where"));
        assert_eq!(run[0].text, "execute wipe");
        classify_in_session("deallocate wipe", Dialect::Postgres, &mut session);
        assert_eq!(
            classify_in_session("execute wipe", Dialect::Postgres, &mut session)[0].kind,
            Kind::Unknown
        );
        // Within one string too.
        let both = classify("prepare q as select 1; execute q", Dialect::Postgres);
        assert_eq!(both[1].kind, Kind::Read);
    }

    /// Random text from SQL-ish fragments never panics, and whatever is unknown says why.
    #[test]
    fn random_text_never_panics_and_unknowns_carry_a_reason() {
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};
        let fragments = [
            "select",
            "delete",
            "from",
            "t",
            "where",
            "(",
            ")",
            "'x'",
            "$$",
            ";",
            "with",
            "as",
            "update",
            "set",
            "=",
            "1",
            "prepare",
            "execute",
            "explain",
            "analyze",
            "drop",
            "table",
            "--",
            "/*",
            "*/",
            "\n",
            "\"",
            ",",
            "begin",
            "atomic",
            "end",
            "case",
            "into",
            "copy",
            "grant",
            "lo_unlink",
        ];
        let mut rng = StdRng::seed_from_u64(5);
        for _ in 0..3000 {
            let n = rng.random_range(0..14);
            let sql: Vec<&str> = (0..n)
                .map(|_| fragments[rng.random_range(0..fragments.len())])
                .collect();
            let sql = sql.join(" ");
            for c in classify(&sql, Dialect::Postgres) {
                if c.kind == Kind::Unknown {
                    assert!(!c.findings.is_empty(), "{sql:?}");
                }
            }
        }
    }

    #[test]
    fn each_statement_of_a_string_is_classified() {
        let all = classify("select 1; drop table t; begin", Dialect::Postgres);
        let kinds: Vec<Kind> = all.iter().map(|c| c.kind).collect();
        assert_eq!(kinds, [Kind::Read, Kind::Ddl, Kind::Transaction]);
        assert_eq!(
            kinds.iter().max(),
            Some(&Kind::Ddl),
            "the most restrictive decides"
        );
    }
}
