//! Masking PostgreSQL results as they stream, one DataRow at a time.
//!
//! How a value is masked depends on its type and its format, and the extended protocol
//! spreads those over several messages: a Describe of a statement says the types (always
//! with text formats), a Bind says the formats of the portal's results, and the rows of an
//! Execute arrive with no RowDescription at all. So the client's messages are noted in order
//! ([`PgResults::frontend`]) and matched with the database's answers, which come in the same
//! order ([`PgResults::backend`]): a ParseComplete, BindComplete, RowDescription or NoData,
//! CommandComplete or CloseComplete answers the oldest message still owed one; after an
//! error the database skips to the next Sync, and so does the queue.
//!
//! Values are masked in text format whatever their type (a number never looks like a
//! secret), and in binary format for text-like types. A binary value of another type is
//! passed as it is unless a detector finds a secret in it, which fails closed.
//! Pure: no I/O.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use super::Masking;
use super::value::{Masked, Treat, mask_text, may_hide};
use crate::protocol::pg::Name;
use crate::protocol::pg::backend::tag as be;
use crate::protocol::pg::frontend::FrontendMessage;

/// Type OIDs masked in binary format as text.
const TEXT_LIKE: &[u32] = &[
    18,  // char
    19,  // name
    25,  // text
    142, // xml
    705, // unknown
    1042, 1043, // bpchar, varchar
    17,   // bytea: raw bytes in binary
];
const JSON: u32 = 114;
const JSONB: u32 = 3802;
const BYTEA: u32 = 17;

/// A result value Airlock must not pass and cannot mask: the session ends with this reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unmaskable {
    pub reason: String,
}

/// A Bind's result format codes: libpq sends one, other drivers one per column.
type Formats = smallvec::SmallVec<[i16; 4]>;

/// A result column as a RowDescription gives it.
#[derive(Debug)]
struct Column {
    name: Box<str>,
    type_oid: u32,
}

#[derive(Debug)]
struct Portal {
    columns: Option<Arc<[Column]>>,
    /// The Bind's result format codes: none (all text), one for all, or one per column.
    formats: Formats,
}

/// A client message that the database will answer.
#[derive(Debug)]
enum Expect {
    Parse(Name),
    Bind {
        portal: Name,
        statement: Name,
        formats: Formats,
    },
    Describe {
        portal: bool,
        name: Name,
    },
    Execute {
        portal: Name,
        tables: Vec<String>,
    },
    Close {
        portal: bool,
        name: Name,
    },
    /// A simple Query: its answers end with ReadyForQuery.
    Query {
        tables: Vec<String>,
    },
    /// Sync or FunctionCall: answered with ReadyForQuery.
    Sync,
}

/// The client messages still owed an answer, oldest first.
///
/// Simple queries whose masking needs no tables (nearly every statement of a simple-protocol
/// client) are only counted while nothing else is owed before them, so that a session that
/// waits for each answer never touches the queue's buffer, which goes cold between two of
/// its statements.
#[derive(Debug, Default)]
struct Owed {
    /// Simple queries owed, with no tables, before everything in `queue`.
    queries: u64,
    queue: VecDeque<Expect>,
}

/// What [`Owed`] counts rather than queues.
static BARE_QUERY: Expect = Expect::Query { tables: Vec::new() };

impl Owed {
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.queries == 0 && self.queue.is_empty()
    }

    fn front(&self) -> Option<&Expect> {
        match self.queries {
            0 => self.queue.front(),
            _ => Some(&BARE_QUERY),
        }
    }

    fn pop_front(&mut self) -> Option<Expect> {
        match self.pop_query() {
            true => Some(Expect::Query { tables: Vec::new() }),
            false => self.queue.pop_front(),
        }
    }

    /// A simple Query with no tables: counted, unless something else is owed before it.
    #[inline]
    fn push_query(&mut self) {
        match self.queue.is_empty() {
            true => self.queries += 1,
            false => self.queue.push_back(Expect::Query { tables: Vec::new() }),
        }
    }

    /// Takes a counted simple Query off the front, if one is there.
    #[inline]
    fn pop_query(&mut self) -> bool {
        let counted = self.queries > 0;
        self.queries -= u64::from(counted);
        counted
    }

    fn push_back(&mut self, expect: Expect) {
        if matches!(&expect, Expect::Query { tables } if tables.is_empty()) {
            self.push_query();
        } else if !self.queue.is_empty() {
            self.queue.push_back(expect);
        } else {
            // Back to the start of the buffer, whose first slot the last message used: the
            // queue of a session that waits for each answer stays in one place in memory.
            self.queue.clear();
            self.queue.push_back(expect);
        }
    }
}

/// One session's result masking.
///
/// `repr(C)`, small, and what every statement's answers touch first: it leads the session
/// guard's hot fields (see `guard::pg::PgGuard`). What only the extended protocol needs is
/// kept apart, made when first needed.
#[repr(C)]
pub struct PgResults {
    expected: Owed,
    /// How the values of the rows arriving now are masked, while `current` says so (the
    /// vector is kept for its capacity).
    treats: Vec<Treat>,
    named: Option<Box<Named>>,
    masking: Arc<Masking>,
    current: bool,
    /// A COPY TO STDOUT is under way: `Some(true)` in text format.
    copy_text: Option<bool>,
}

/// The columns of the session's prepared statements and portals.
#[derive(Default)]
struct Named {
    statements: HashMap<Name, Arc<[Column]>, foldhash::fast::RandomState>,
    portals: HashMap<Name, Portal, foldhash::fast::RandomState>,
    /// The last RowDescription that answered a Describe, and its columns.
    last_described: Option<Described>,
}

/// Drops what a message owed an answer held: out of line, so that a Query's answers do
/// not run the code that drops every other kind.
#[inline(never)]
fn drop_expected(expect: Expect) {
    drop(expect);
}

/// A RowDescription as it arrived, and the columns read from it.
struct Described {
    body: Box<[u8]>,
    columns: Arc<[Column]>,
}

impl PgResults {
    pub fn new(masking: Arc<Masking>) -> PgResults {
        PgResults {
            expected: Owed::default(),
            treats: Vec::new(),
            named: None,
            masking,
            current: false,
            copy_text: None,
        }
    }

    /// The session's named statements and portals, made when first needed.
    fn named(&mut self) -> &mut Named {
        self.named.get_or_insert_default()
    }

    /// Whether column rules name tables, so that the tables a statement reads matter.
    pub fn wants_tables(&self) -> bool {
        !self.masking.columns.is_empty()
    }

    /// A message on its way to the database; `tables` are those the statement of a Query or
    /// Execute reads (empty unless [`PgResults::wants_tables`]).
    pub fn frontend(&mut self, message: &FrontendMessage<'_>, tables: Vec<String>) {
        let expect = match message {
            FrontendMessage::Query { .. } => Expect::Query { tables },
            FrontendMessage::Parse(p) => Expect::Parse(p.statement.into()),
            FrontendMessage::Bind(b) => Expect::Bind {
                portal: b.portal.into(),
                statement: b.statement.into(),
                formats: (0..b.result_format_count())
                    .map(|i| b.result_format(i))
                    .collect(),
            },
            FrontendMessage::Describe { target, name } => Expect::Describe {
                portal: *target == b'P',
                name: Name::from(*name),
            },
            FrontendMessage::Execute { portal, .. } => Expect::Execute {
                portal: Name::from(*portal),
                tables,
            },
            FrontendMessage::Close { target, name } => Expect::Close {
                portal: *target == b'P',
                name: Name::from(*name),
            },
            FrontendMessage::Sync | FrontendMessage::FunctionCall(_) => Expect::Sync,
            FrontendMessage::Other { .. } => return,
        };
        self.expected.push_back(expect);
    }

    /// A simple Query on its way to the database (as [`PgResults::frontend`] for one).
    pub fn query(&mut self, tables: Vec<String>) {
        match tables.is_empty() {
            true => self.expected.push_query(),
            false => self.expected.push_back(Expect::Query { tables }),
        }
    }

    /// A message from the database: the body to send the client in its place, if masking
    /// changed it.
    pub fn backend(&mut self, tag: u8, body: &[u8]) -> Result<Option<Vec<u8>>, Unmaskable> {
        // The messages every statement brings; the rest out of line, so that this stays small.
        match tag {
            be::DATA_ROW => return self.row(body),
            be::ROW_DESCRIPTION => self.described(body),
            be::COMMAND_COMPLETE | EMPTY_QUERY | PORTAL_SUSPENDED => {
                self.current = false;
                self.copy_text = None;
                if matches!(self.expected.front(), Some(Expect::Execute { .. })) {
                    self.expected.pop_front();
                }
            }
            be::READY_FOR_QUERY => {
                self.current = false;
                self.copy_text = None;
                // What the answers since the last Sync or Query were for is done with (most
                // often a counted Query: nothing to drop).
                while !self.expected.pop_query() {
                    match self.expected.pop_front() {
                        None | Some(Expect::Sync) => break,
                        Some(Expect::Query { tables }) => {
                            drop(tables);
                            break;
                        }
                        Some(other) => drop_expected(other),
                    }
                }
                // Outside a transaction block no portal survives.
                if body.first() == Some(&b'I')
                    && let Some(named) = &mut self.named
                {
                    named.portals.clear();
                }
            }
            _ => return self.other_message(tag, body),
        }
        Ok(None)
    }

    /// [`PgResults::backend`] for the messages that not every statement brings.
    #[inline(never)]
    fn other_message(&mut self, tag: u8, body: &[u8]) -> Result<Option<Vec<u8>>, Unmaskable> {
        match tag {
            PARSE_COMPLETE => {
                if let Some(Expect::Parse(name)) = self.pop_if(|e| matches!(e, Expect::Parse(_))) {
                    self.named().statements.remove(&name);
                }
            }
            BIND_COMPLETE => {
                if let Some(Expect::Bind {
                    portal,
                    statement,
                    formats,
                }) = self.pop_if(|e| matches!(e, Expect::Bind { .. }))
                {
                    let named = self.named();
                    let columns = named.statements.get(&statement).cloned();
                    named.portals.insert(portal, Portal { columns, formats });
                }
            }
            NO_DATA => {
                if let Some(Expect::Describe { portal, name }) =
                    self.pop_if(|e| matches!(e, Expect::Describe { .. }))
                {
                    let named = self.named();
                    if portal {
                        if let Some(p) = named.portals.get_mut(&name) {
                            p.columns = None;
                        }
                    } else {
                        named.statements.remove(&name);
                    }
                }
            }
            CLOSE_COMPLETE => {
                if let Some(Expect::Close { portal, name }) =
                    self.pop_if(|e| matches!(e, Expect::Close { .. }))
                {
                    let named = self.named();
                    if portal {
                        named.portals.remove(&name);
                    } else {
                        named.statements.remove(&name);
                    }
                }
            }
            be::ERROR_RESPONSE => {
                self.current = false;
                self.copy_text = None;
                // The database skips what is left of the pipeline up to the next Sync.
                while self
                    .expected
                    .front()
                    .is_some_and(|e| !matches!(e, Expect::Sync | Expect::Query { .. }))
                {
                    self.expected.pop_front();
                }
                return Ok(self.notice(body));
            }
            be::NOTICE_RESPONSE => return Ok(self.notice(body)),
            be::COPY_OUT_RESPONSE | be::COPY_BOTH_RESPONSE => {
                if !self.masking.columns.is_empty() {
                    // COPY data names no columns: a column rule could not be kept.
                    return Err(unmaskable(
                        "COPY TO STDOUT cannot be masked column by column (the policy masks \
                         columns by name); read the rows with SELECT instead"
                            .into(),
                    ));
                }
                self.copy_text = Some(body.first() == Some(&0));
            }
            be::COPY_DATA => return self.copy_data(body),
            be::COPY_DONE => self.copy_text = None,
            FUNCTION_CALL_RESPONSE => return self.function_result(body),
            _ => {}
        }
        Ok(None)
    }

    /// Pops the oldest message owed an answer if it is what `answers` says this answer is for.
    fn pop_if(&mut self, answers: impl Fn(&Expect) -> bool) -> Option<Expect> {
        if self.expected.front().is_some_and(answers) {
            self.expected.pop_front()
        } else {
            None
        }
    }

    fn described(&mut self, body: &[u8]) {
        match self.expected.front() {
            Some(Expect::Describe { .. }) => {
                let columns = self.description(body);
                if let Some(Expect::Describe { portal, name }) = self.expected.pop_front() {
                    let named = self.named();
                    if portal {
                        if let Some(p) = named.portals.get_mut(&name) {
                            p.columns = columns;
                        }
                    } else if let Some(columns) = columns {
                        named.statements.insert(name, columns);
                    } else {
                        named.statements.remove(&name);
                    }
                }
            }
            // A Query's statements (or EXECUTE, FETCH of a cursor) say their own formats:
            // the treatments straight from the description, nothing kept of it.
            front => {
                let tables = match front {
                    Some(Expect::Query { tables }) => tables.as_slice(),
                    _ => &[],
                };
                let mut treats = std::mem::take(&mut self.treats);
                treats.clear();
                let read = each_column(body, |name, oid, format| {
                    treats.push(self.treat(&name, oid, format, tables));
                });
                self.treats = treats;
                self.current = read.is_some();
            }
        }
    }

    /// The columns a RowDescription answering a Describe gives: those of the last one, when
    /// the database describes the same again (a driver that describes a statement's portal
    /// each time it runs it).
    fn description(&mut self, body: &[u8]) -> Option<Arc<[Column]>> {
        let named = self.named();
        if let Some(last) = &named.last_described
            && *last.body == *body
        {
            return Some(last.columns.clone());
        }
        let columns: Arc<[Column]> = row_description(body)?.into();
        named.last_described = Some(Described {
            body: body.into(),
            columns: columns.clone(),
        });
        Some(columns)
    }

    /// How values of `column` in `format` are masked.
    fn treat(&self, name: &str, oid: u32, format: i16, tables: &[String]) -> Treat {
        let whole = !self.masking.columns.is_empty()
            && self
                .masking
                .columns
                .matches(name, tables.iter().map(String::as_str));
        match (format, whole) {
            (0, false) if oid == BYTEA => Treat::ByteaHex,
            (0, false) if oid == JSON || oid == JSONB => Treat::Json,
            (0, false) => Treat::Text,
            (0, true) if oid == JSON || oid == JSONB => Treat::WholeJson,
            (0, true) if TEXT_LIKE.contains(&oid) => Treat::WholeText,
            (_, false) if oid == JSON => Treat::Json,
            (_, false) if oid == JSONB => Treat::JsonbBinary,
            (_, false) if TEXT_LIKE.contains(&oid) => Treat::Text,
            (_, false) => Treat::Opaque,
            (_, true) if oid == JSON => Treat::WholeJson,
            (_, true) if oid == JSONB => Treat::WholeJsonbBinary,
            (_, true) if TEXT_LIKE.contains(&oid) => Treat::WholeText,
            (_, true) => Treat::WholeNull,
        }
    }

    /// Writes into `out` the treatments for the rows of the Execute now answered, from its
    /// portal's Bind and the Describe of the portal or its statement; false if they are not
    /// known.
    fn execute_treats(&self, out: &mut Vec<Treat>) -> bool {
        let Some(Expect::Execute { portal, tables }) = self.expected.front() else {
            return false;
        };
        let Some(p) = self.named.as_ref().and_then(|n| n.portals.get(portal)) else {
            return false;
        };
        let Some(columns) = p.columns.as_ref() else {
            return false;
        };
        let format = |i: usize| match p.formats.len() {
            0 => 0,
            1 => p.formats[0],
            _ => p.formats.get(i).copied().unwrap_or(0),
        };
        out.clear();
        out.extend(
            columns
                .iter()
                .enumerate()
                .map(|(i, c)| self.treat(&c.name, c.type_oid, format(i), tables)),
        );
        true
    }

    fn row(&mut self, body: &[u8]) -> Result<Option<Vec<u8>>, Unmaskable> {
        if !self.current {
            let mut treats = std::mem::take(&mut self.treats);
            self.current = self.execute_treats(&mut treats);
            self.treats = treats;
        }
        let treats: &[Treat] = if self.current { &self.treats } else { &[] };
        let masker = &self.masking.masker;
        let any_whole = treats.iter().any(|t| t.is_whole());
        if !any_whole && !may_hide(masker, body) {
            return Ok(None);
        }
        let values = match data_row(body) {
            Some(v) => v,
            None => return Err(unmaskable("a DataRow Airlock cannot read".into())),
        };
        let mut out: Option<Vec<u8>> = None;
        for (i, value) in values.iter().enumerate() {
            // Columns Airlock lost track of are masked as text: better a damaged value than
            // a secret shown.
            let treat = treats.get(i).copied().unwrap_or(Treat::Text);
            let masked = match value {
                None => Masked::Same,
                Some(v) => treat.mask(masker, v),
            };
            if masked == Masked::Same && out.is_none() {
                continue;
            }
            if masked == Masked::Unrewritable {
                return Err(unmaskable(format!(
                    "result column {} holds a value that looks like a credential, in a binary \
                     format Airlock cannot rewrite; ask for that column in text format",
                    i + 1
                )));
            }
            let out = out.get_or_insert_with(|| {
                // Rebuild from the start: the values before this one as they were.
                let mut o = Vec::with_capacity(body.len() + 32);
                o.extend_from_slice(&body[..2]);
                for earlier in &values[..i] {
                    put_value(&mut o, *earlier);
                }
                o
            });
            match masked {
                Masked::Same => put_value(out, *value),
                Masked::Value(v) => put_value(out, Some(&v)),
                Masked::Null => put_value(out, None),
                Masked::Unrewritable => unreachable!("returned above"),
            }
        }
        Ok(out)
    }

    fn copy_data(&self, body: &[u8]) -> Result<Option<Vec<u8>>, Unmaskable> {
        match self.copy_text {
            Some(true) => Ok(mask_text(&self.masking.masker, body)),
            _ if self.masking.masker.mask(body).is_some() => Err(unmaskable(
                "COPY in binary format carries a value that looks like a credential; use COPY \
                 in text or CSV format, which Airlock masks"
                    .into(),
            )),
            _ => Ok(None),
        }
    }

    fn function_result(&self, body: &[u8]) -> Result<Option<Vec<u8>>, Unmaskable> {
        match body.get(4..) {
            Some(value) if self.masking.masker.mask(value).is_some() => Err(unmaskable(
                "a FunctionCall result looks like a credential; Airlock cannot mask it".into(),
            )),
            _ => Ok(None),
        }
    }

    /// An ErrorResponse or NoticeResponse with secrets masked in its fields (a duplicate-key
    /// error echoes the value).
    fn notice(&self, body: &[u8]) -> Option<Vec<u8>> {
        let masker = &self.masking.masker;
        if !may_hide(masker, body) {
            return None;
        }
        let mut out = Vec::with_capacity(body.len() + 32);
        let mut changed = false;
        let mut rest = body;
        while let Some((&code, after)) = rest.split_first() {
            out.push(code);
            if code == 0 {
                break;
            }
            let end = after.iter().position(|&b| b == 0)?;
            let field = &after[..end];
            match mask_text(masker, field) {
                Some(m) => {
                    changed = true;
                    out.extend(m.into_iter().filter(|&b| b != 0));
                }
                None => out.extend_from_slice(field),
            }
            out.push(0);
            rest = &after[end + 1..];
        }
        changed.then_some(out)
    }
}

const PARSE_COMPLETE: u8 = b'1';
const BIND_COMPLETE: u8 = b'2';
const CLOSE_COMPLETE: u8 = b'3';
const NO_DATA: u8 = b'n';
const EMPTY_QUERY: u8 = b'I';
const PORTAL_SUSPENDED: u8 = b's';
const FUNCTION_CALL_RESPONSE: u8 = b'V';

/// The backend tags [`PgResults::backend`] must see.
pub const TAGS: &[u8] = &[
    be::DATA_ROW,
    be::ROW_DESCRIPTION,
    PARSE_COMPLETE,
    BIND_COMPLETE,
    CLOSE_COMPLETE,
    NO_DATA,
    be::COMMAND_COMPLETE,
    EMPTY_QUERY,
    PORTAL_SUSPENDED,
    be::ERROR_RESPONSE,
    be::NOTICE_RESPONSE,
    be::READY_FOR_QUERY,
    be::COPY_OUT_RESPONSE,
    be::COPY_BOTH_RESPONSE,
    be::COPY_DATA,
    be::COPY_DONE,
    FUNCTION_CALL_RESPONSE,
];

fn unmaskable(reason: String) -> Unmaskable {
    Unmaskable { reason }
}

fn put_value(out: &mut Vec<u8>, value: Option<&[u8]>) {
    match value {
        None => out.extend_from_slice(&(-1i32).to_be_bytes()),
        Some(v) => {
            out.extend_from_slice(&(v.len() as i32).to_be_bytes());
            out.extend_from_slice(v);
        }
    }
}

/// A DataRow's values (`None` for NULL), or `None` if it is malformed.
pub fn data_row(body: &[u8]) -> Option<Vec<Option<&[u8]>>> {
    let count = u16::from_be_bytes(body.get(..2)?.try_into().ok()?);
    let mut rest = &body[2..];
    let mut values = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let len = i32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
        rest = &rest[4..];
        if len < 0 {
            values.push(None);
        } else {
            let (v, after) = rest.split_at_checked(len as usize)?;
            values.push(Some(v));
            rest = after;
        }
    }
    rest.is_empty().then_some(values)
}

/// A RowDescription's columns, or `None` if it is malformed.
fn row_description(body: &[u8]) -> Option<Vec<Column>> {
    let mut columns = Vec::new();
    each_column(body, |name, type_oid, _format| {
        columns.push(Column {
            name: name.into(),
            type_oid,
        });
    })?;
    Some(columns)
}

/// Calls `f` with each column of a RowDescription (name, type OID, format code), or
/// returns `None` if it is malformed (after calling `f` for the columns before the fault).
fn each_column<'a>(body: &'a [u8], mut f: impl FnMut(Cow<'a, str>, u32, i16)) -> Option<()> {
    let count = u16::from_be_bytes(body.get(..2)?.try_into().ok()?);
    let mut rest = &body[2..];
    for _ in 0..count {
        let end = rest.iter().position(|&b| b == 0)?;
        let fixed = rest.get(end + 1..end + 19)?;
        let type_oid = u32::from_be_bytes(fixed[6..10].try_into().ok()?);
        let format = i16::from_be_bytes(fixed[16..18].try_into().ok()?);
        f(crate::utf8::lossy(&rest[..end]), type_oid, format);
        rest = &rest[end + 19..];
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::mask::MaskPolicy;
    use crate::protocol::pg::frontend;

    const TOKEN: &str = "ghp_aB3dE5gH7jK9mN1pQ3sT5vX7zA9cE1gI3kM5";

    fn masking(columns: &[&str]) -> Arc<Masking> {
        let policy = MaskPolicy {
            columns: columns.iter().map(|c| c.to_string()).collect(),
            ..MaskPolicy::default()
        };
        Arc::new(Masking::new(&policy, None).unwrap())
    }

    fn description(columns: &[(&str, u32, i16)]) -> Vec<u8> {
        let mut out = (columns.len() as u16).to_be_bytes().to_vec();
        for (name, oid, format) in columns {
            out.extend_from_slice(name.as_bytes());
            out.push(0);
            out.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
            out.extend_from_slice(&oid.to_be_bytes());
            out.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
            out.extend_from_slice(&format.to_be_bytes());
        }
        out
    }

    fn row(values: &[Option<&[u8]>]) -> Vec<u8> {
        let mut out = (values.len() as u16).to_be_bytes().to_vec();
        for v in values {
            put_value(&mut out, *v);
        }
        out
    }

    fn send(r: &mut PgResults, tag: u8, body: &[u8]) {
        let m = frontend::parse(tag, body).unwrap();
        r.frontend(&m, vec!["users".into()]);
    }

    fn cstr(s: &str) -> Vec<u8> {
        [s.as_bytes(), b"\0"].concat()
    }

    #[test]
    fn counted_queries_keep_their_place_in_line() {
        let bare = || Expect::Query { tables: Vec::new() };
        let mut owed = Owed::default();
        for _ in 0..3 {
            owed.push_back(bare());
            assert!(matches!(owed.pop_front(), Some(Expect::Query { .. })));
        }
        // A session that waits for each answer never uses the queue.
        assert_eq!(owed.queue.capacity(), 0);
        owed.push_back(bare());
        owed.push_back(Expect::Sync);
        owed.push_back(bare());
        owed.push_back(Expect::Query {
            tables: vec!["t".into()],
        });
        let popped: Vec<String> = std::iter::from_fn(|| owed.pop_front())
            .map(|e| match e {
                Expect::Query { tables } => format!("query {tables:?}"),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            popped,
            ["query []", "Sync", "query []", "query [\"t\"]"],
            "in the order they were owed"
        );
        assert!(owed.is_empty());
    }

    #[test]
    fn simple_query_rows_are_masked_by_their_description() {
        let mut r = PgResults::new(masking(&[]));
        send(&mut r, b'Q', &cstr("select id, note from t"));
        r.backend(b'T', &description(&[("id", 23, 0), ("note", 25, 0)]))
            .unwrap();
        let secret = format!("token {TOKEN}");
        let out = r
            .backend(b'D', &row(&[Some(b"1"), Some(secret.as_bytes())]))
            .unwrap()
            .unwrap();
        assert_eq!(
            data_row(&out).unwrap(),
            vec![Some(&b"1"[..]), Some(&b"token [masked:github_token]"[..])]
        );
        assert_eq!(r.backend(b'D', &row(&[Some(b"2"), None])).unwrap(), None);
        r.backend(b'C', b"SELECT 2\0").unwrap();
        r.backend(b'Z', b"I").unwrap();
        assert!(r.expected.is_empty());
    }

    /// libpq's PQexecPrepared: Bind, Describe portal, Execute, Sync, every time. A description
    /// the same as the last is not read again; a different one is read afresh.
    #[test]
    fn a_portal_described_each_run_is_masked_by_its_own_description() {
        let mut r = PgResults::new(masking(&[]));
        let secret = format!("token {TOKEN}");
        let text = description(&[("note", 25, 0)]);
        let int8 = description(&[("n", 20, 1)]);
        let mut first: Option<Arc<[Column]>> = None;
        let runs = [
            (&text, false),
            (&text, false),
            (&int8, true),
            (&text, false),
        ];
        for (i, (desc, binary)) in runs.into_iter().enumerate() {
            let bind = [
                cstr(""),
                cstr("s1"),
                vec![0, 0, 0, 0, 0, 1, 0, u8::from(binary)],
            ];
            send(&mut r, b'B', &bind.concat());
            send(&mut r, b'D', &[b"P".to_vec(), cstr("")].concat());
            send(&mut r, b'E', &[cstr(""), vec![0, 0, 0, 0]].concat());
            send(&mut r, b'S', b"");
            r.backend(b'2', b"").unwrap();
            r.backend(b'T', desc).unwrap();
            let columns = r.named().portals[&Name::new()].columns.clone().unwrap();
            let type_oid = if binary { 20 } else { 25 };
            assert_eq!(columns[0].type_oid, type_oid);
            match i {
                0 => first = Some(columns),
                1 => assert!(Arc::ptr_eq(first.as_ref().unwrap(), &columns), "kept"),
                3 => assert!(
                    !Arc::ptr_eq(first.as_ref().unwrap(), &columns),
                    "read afresh"
                ),
                _ => {}
            }
            let answer = r.backend(b'D', &row(&[Some(secret.as_bytes())]));
            if binary {
                assert!(answer.is_err(), "a secret in a binary int8 fails closed");
            } else {
                let out = answer.unwrap().expect("masked");
                let value = data_row(&out).unwrap()[0].unwrap().to_vec();
                assert_eq!(value, b"token [masked:github_token]");
            }
            r.backend(b'C', b"SELECT 1\0").unwrap();
            r.backend(b'Z', b"I").unwrap();
        }
        assert!(r.expected.is_empty());
    }

    /// tokio-postgres: Parse + Describe statement + Sync, then Bind with binary results and
    /// Execute, whose rows come with no RowDescription.
    #[test]
    fn extended_rows_take_types_from_describe_and_formats_from_bind() {
        let mut r = PgResults::new(masking(&["users.password"]));
        send(
            &mut r,
            b'P',
            &[cstr("s1"), cstr("select * from users"), vec![0, 0]].concat(),
        );
        send(&mut r, b'D', &[b"S".to_vec(), cstr("s1")].concat());
        send(&mut r, b'S', b"");
        r.backend(b'1', b"").unwrap();
        r.backend(b't', b"\0\0").unwrap();
        let desc = description(&[("id", 20, 0), ("password", 25, 0), ("doc", 3802, 0)]);
        r.backend(b'T', &desc).unwrap();
        r.backend(b'Z', b"I").unwrap();
        // Bind: portal "", statement s1, no params, one result format: binary.
        send(
            &mut r,
            b'B',
            &[cstr(""), cstr("s1"), vec![0, 0, 0, 0, 0, 1, 0, 1]].concat(),
        );
        send(&mut r, b'E', &[cstr(""), vec![0, 0, 0, 0]].concat());
        send(&mut r, b'S', b"");
        r.backend(b'2', b"").unwrap();
        let doc = format!("\u{1}{{\"k\": \"{TOKEN}\"}}");
        let id = 7i64.to_be_bytes();
        let out = r
            .backend(
                b'D',
                &row(&[Some(&id), Some(b"hunter2"), Some(doc.as_bytes())]),
            )
            .unwrap()
            .unwrap();
        assert_eq!(
            data_row(&out).unwrap(),
            vec![
                Some(&id[..]),
                Some(&b"[masked:column]"[..]),
                Some("\u{1}{\"k\": \"[masked:github_token]\"}".as_bytes()),
            ]
        );
        // A binary int8 that happens to hold anchor bytes is left alone.
        let odd = *b"AKIA\0\0\0\0";
        let out = r
            .backend(b'D', &row(&[Some(&odd), Some(b"x"), None]))
            .unwrap()
            .unwrap();
        assert_eq!(data_row(&out).unwrap()[0], Some(&odd[..]));
        r.backend(b'C', b"SELECT 2\0").unwrap();
        r.backend(b'Z', b"I").unwrap();
        assert!(r.expected.is_empty() && r.named().portals.is_empty());
    }

    #[test]
    fn an_error_skips_to_sync_and_is_masked_itself() {
        let mut r = PgResults::new(masking(&[]));
        send(
            &mut r,
            b'P',
            &[cstr(""), cstr("insert into t values ($1)"), vec![0, 0]].concat(),
        );
        send(
            &mut r,
            b'B',
            &[cstr(""), cstr(""), vec![0, 0, 0, 0, 0, 0]].concat(),
        );
        send(&mut r, b'E', &[cstr(""), vec![0, 0, 0, 0]].concat());
        send(&mut r, b'S', b"");
        r.backend(b'1', b"").unwrap();
        r.backend(b'2', b"").unwrap();
        let error = [
            b"SERROR\0C23505\0M".as_slice(),
            format!("duplicate key value: Key (t)=({TOKEN}) already exists.").as_bytes(),
            b"\0\0",
        ]
        .concat();
        let masked = r.backend(b'E', &error).unwrap().unwrap();
        let text = String::from_utf8(masked).unwrap();
        assert!(
            text.contains("[masked:github_token]") && !text.contains(TOKEN),
            "{text}"
        );
        assert!(text.ends_with("\0\0"));
        assert!(matches!(r.expected.front(), Some(Expect::Sync)));
        r.backend(b'Z', b"I").unwrap();
        assert!(r.expected.is_empty());
    }

    /// bytea in text format is hex: the bytes the detectors look for are not in the row as
    /// they are, so a row holding one is never passed on unread.
    #[test]
    fn bytea_in_hex_is_masked_even_alone() {
        let mut r = PgResults::new(masking(&[]));
        send(&mut r, b'Q', &cstr("select blob from t"));
        r.backend(b'T', &description(&[("blob", BYTEA, 0)]))
            .unwrap();
        let hexed: Vec<u8> = b"\\x"
            .iter()
            .copied()
            .chain(TOKEN.bytes().flat_map(crate::hex::byte))
            .collect();
        let out = r.backend(b'D', &row(&[Some(&hexed)])).unwrap().unwrap();
        let value = data_row(&out).unwrap()[0].unwrap().to_vec();
        let raw: Vec<u8> = value[2..]
            .chunks(2)
            .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
            .collect();
        assert_eq!(raw, b"[masked:github_token]");
    }

    /// A bytea[] (or a record) in text format shows each bytea in hex, quoted.
    #[test]
    fn bytea_in_hex_inside_an_array_is_masked() {
        let mut r = PgResults::new(masking(&[]));
        send(&mut r, b'Q', &cstr("select array[blob] from t"));
        r.backend(b'T', &description(&[("array", 1001, 0)]))
            .unwrap();
        let hexed: String = TOKEN
            .bytes()
            .flat_map(crate::hex::byte)
            .map(char::from)
            .collect();
        let shown = format!("{{\"\\\\x{hexed}\"}}");
        let out = r
            .backend(b'D', &row(&[Some(shown.as_bytes())]))
            .unwrap()
            .unwrap();
        let value = String::from_utf8(data_row(&out).unwrap()[0].unwrap().to_vec()).unwrap();
        let masked: String = b"[masked:github_token]"
            .iter()
            .copied()
            .flat_map(crate::hex::byte)
            .map(char::from)
            .collect();
        assert_eq!(value, format!("{{\"\\\\x{masked}\"}}"));
    }

    #[test]
    fn unreadable_binary_secrets_fail_closed() {
        let mut r = PgResults::new(masking(&[]));
        send(&mut r, b'Q', &cstr("fetch all from c"));
        // A binary cursor over a text[] column.
        r.backend(b'T', &description(&[("tags", 1009, 1)])).unwrap();
        assert!(r.backend(b'D', &row(&[Some(TOKEN.as_bytes())])).is_err());
    }

    #[test]
    fn copy_out_is_refused_under_column_rules() {
        let mut r = PgResults::new(masking(&["password"]));
        send(&mut r, b'Q', &cstr("copy users to stdout"));
        assert!(r.backend(b'H', &[0, 0, 1, 0, 0]).is_err());
    }

    #[test]
    fn copy_out_in_text_is_masked() {
        let mut r = PgResults::new(masking(&[]));
        send(&mut r, b'Q', &cstr("copy t to stdout"));
        r.backend(b'H', &[0, 0, 1, 0, 0]).unwrap();
        let line = format!("1\t{TOKEN}\n");
        let out = r.backend(b'd', line.as_bytes()).unwrap().unwrap();
        assert_eq!(out, b"1\t[masked:github_token]\n");
        r.backend(b'c', b"").unwrap();
        r.backend(b'C', b"COPY 1\0").unwrap();
        r.backend(b'Z', b"I").unwrap();
    }
}
