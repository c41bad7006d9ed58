//! Masking MySQL results as they stream, one row packet at a time: text-protocol rows (each
//! value a length-encoded string, 0xFB for NULL) and binary-protocol rows (a NULL bitmap,
//! then each value in its type's layout), by the column definitions of the result set.
//! ERR packets are masked too (a duplicate-key error echoes the value). Pure: no I/O.

use std::sync::Arc;

use mysql_common::constants::ColumnType;
use mysql_common::io::ParseBuf;
use mysql_common::packets::Column;

use super::Masking;
use super::value::{Masked, Treat, hex, may_hide};

/// A row packet Airlock must not pass and cannot mask: the session ends with this reason.
pub use super::pg::Unmaskable;

/// How a column's values sit in a binary-protocol row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    Fixed(usize),
    /// A length byte, then that many bytes (dates and times).
    Short,
    /// A length-encoded string.
    Lenenc,
    /// No bytes: the type is NULL.
    Nothing,
}

#[derive(Debug, Clone, Copy)]
struct ColumnInfo {
    treat: Treat,
    layout: Layout,
    /// A 4- or 8-byte float rather than an integer.
    float: bool,
}

/// One session's result masking.
pub struct MyResults {
    masking: Arc<Masking>,
    columns: Vec<ColumnInfo>,
    /// The column definitions read so far are complete for the result set.
    reading: bool,
}

impl MyResults {
    pub fn new(masking: Arc<Masking>) -> MyResults {
        MyResults {
            masking,
            columns: Vec::new(),
            reading: false,
        }
    }

    /// A result set starts: its definitions follow.
    pub fn columns(&mut self) {
        self.columns.clear();
        self.reading = true;
    }

    /// A column (or parameter) definition.
    pub fn definition(&mut self, payload: &[u8]) {
        if !self.reading {
            // The parameters and columns of a PREPARE answer: not followed by rows here.
            return;
        }
        let info = match ParseBuf(payload).parse::<Column>(()) {
            Ok(c) => self.info(&c),
            // Unreadable: its values are masked as text, and a binary row cannot be walked.
            Err(_) => ColumnInfo {
                treat: Treat::Text,
                layout: Layout::Lenenc,
                float: false,
            },
        };
        self.columns.push(info);
    }

    fn info(&self, c: &Column) -> ColumnInfo {
        use ColumnType::*;
        let t = c.column_type();
        let layout = match t {
            MYSQL_TYPE_TINY => Layout::Fixed(1),
            MYSQL_TYPE_SHORT | MYSQL_TYPE_YEAR => Layout::Fixed(2),
            MYSQL_TYPE_LONG | MYSQL_TYPE_INT24 | MYSQL_TYPE_FLOAT => Layout::Fixed(4),
            MYSQL_TYPE_LONGLONG | MYSQL_TYPE_DOUBLE => Layout::Fixed(8),
            MYSQL_TYPE_DATE
            | MYSQL_TYPE_DATETIME
            | MYSQL_TYPE_TIMESTAMP
            | MYSQL_TYPE_TIME
            | MYSQL_TYPE_NEWDATE
            | MYSQL_TYPE_DATETIME2
            | MYSQL_TYPE_TIMESTAMP2
            | MYSQL_TYPE_TIME2 => Layout::Short,
            MYSQL_TYPE_NULL => Layout::Nothing,
            _ => Layout::Lenenc,
        };
        let stringy = matches!(
            t,
            MYSQL_TYPE_VARCHAR
                | MYSQL_TYPE_VAR_STRING
                | MYSQL_TYPE_STRING
                | MYSQL_TYPE_TINY_BLOB
                | MYSQL_TYPE_MEDIUM_BLOB
                | MYSQL_TYPE_LONG_BLOB
                | MYSQL_TYPE_BLOB
                | MYSQL_TYPE_ENUM
                | MYSQL_TYPE_SET
        );
        let json = t == MYSQL_TYPE_JSON;
        let rules = &self.masking.columns;
        let whole = !rules.is_empty() && {
            let qualified = format!("{}.{}", c.schema_str(), c.org_table_str());
            let tables = [qualified.as_str(), &c.table_str()];
            let tables = tables.iter().copied();
            rules.matches(&c.org_name_str(), tables.clone()) || rules.matches(&c.name_str(), tables)
        };
        let treat = match (whole, json, stringy) {
            (false, true, _) => Treat::Json,
            (false, false, true) => Treat::Text,
            // Numbers, decimals and dates in text are masked as text (they never look like
            // secrets); bit strings and geometry in binary are not rewritten.
            (false, false, false) if layout == Layout::Lenenc => match t {
                MYSQL_TYPE_BIT | MYSQL_TYPE_GEOMETRY => Treat::Opaque,
                _ => Treat::Text,
            },
            (false, false, false) => Treat::Opaque,
            (true, true, _) => Treat::WholeJson,
            (true, false, true) => Treat::WholeText,
            (true, false, false) => Treat::WholeNull,
        };
        ColumnInfo {
            treat,
            layout,
            float: matches!(t, MYSQL_TYPE_FLOAT | MYSQL_TYPE_DOUBLE),
        }
    }

    /// A row packet: the payload to send the client in its place, if masking changed it.
    pub fn row(&mut self, binary: bool, payload: &[u8]) -> Result<Option<Vec<u8>>, Unmaskable> {
        self.reading = false;
        let any_whole = self.columns.iter().any(|c| c.treat.is_whole());
        if !any_whole && !may_hide(&self.masking.masker, payload) {
            return Ok(None);
        }
        if binary {
            self.binary_row(payload)
        } else {
            self.text_row(payload)
        }
    }

    fn text_row(&self, payload: &[u8]) -> Result<Option<Vec<u8>>, Unmaskable> {
        let masker = &self.masking.masker;
        let mut rest = payload;
        let mut out: Option<Vec<u8>> = None;
        let mut i = 0;
        while !rest.is_empty() {
            let start = payload.len() - rest.len();
            let value = if rest[0] == 0xfb {
                rest = &rest[1..];
                None
            } else {
                let (v, after) = lenenc_str(rest).ok_or_else(unreadable)?;
                rest = after;
                Some(v)
            };
            let treat = self.columns.get(i).map_or(Treat::Text, |c| c.treat);
            let masked = value.map_or(Masked::Same, |v| treat.mask(masker, v));
            i += 1;
            if masked == Masked::Same && out.is_none() {
                continue;
            }
            let out = out.get_or_insert_with(|| payload[..start].to_vec());
            match masked {
                Masked::Same => match value {
                    Some(v) => put_lenenc_str(out, v),
                    None => out.push(0xfb),
                },
                Masked::Value(v) => put_lenenc_str(out, &v),
                // A text row has no types to keep: the placeholder stands in.
                Masked::Null | Masked::Unrewritable => out.push(0xfb),
            }
        }
        Ok(out)
    }

    /// A row's values as text (numbers in decimal, dates and times as hex), `None` for NULL,
    /// or `None` if the row does not fit the column definitions; for a record of it.
    pub fn values(&self, binary: bool, payload: &[u8]) -> Option<Vec<Option<Vec<u8>>>> {
        if !binary {
            let mut rest = payload;
            let mut out = Vec::new();
            while !rest.is_empty() {
                if rest[0] == 0xfb {
                    out.push(None);
                    rest = &rest[1..];
                } else {
                    let (v, after) = lenenc_str(rest)?;
                    out.push(Some(v.to_vec()));
                    rest = after;
                }
            }
            return Some(out);
        }
        let (_, fields) = self.walk(payload).ok()?;
        let shown = fields.into_iter().zip(&self.columns).map(|(f, c)| {
            f.map(|Field { value, .. }| {
                match (c.layout, c.float, value.len()) {
                    (Layout::Fixed(_), true, 4) => {
                        f32::from_le_bytes(value.try_into().expect("4 bytes")).to_string()
                    }
                    (Layout::Fixed(_), true, 8) => {
                        f64::from_le_bytes(value.try_into().expect("8 bytes")).to_string()
                    }
                    (Layout::Fixed(k), false, _) => {
                        let mut b = [0u8; 8];
                        b[..k].copy_from_slice(value);
                        // Sign-extended: most integer columns are signed.
                        let shift = 64 - 8 * k as u32;
                        ((i64::from_le_bytes(b) << shift) >> shift).to_string()
                    }
                    (Layout::Lenenc, _, _) => return value.to_vec(),
                    _ => return value.iter().flat_map(|b| hex(*b)).collect(),
                }
                .into_bytes()
            })
        });
        Some(shown.collect())
    }

    /// A binary row's NULL bitmap and fields (None: NULL), by the column definitions.
    fn walk<'a>(
        &self,
        payload: &'a [u8],
    ) -> Result<(&'a [u8], Vec<Option<Field<'a>>>), Unmaskable> {
        let n = self.columns.len();
        let bitmap_len = (n + 7 + 2) / 8;
        if payload.first() != Some(&0) || payload.len() < 1 + bitmap_len {
            return Err(unreadable());
        }
        let bitmap = &payload[1..1 + bitmap_len];
        let is_null = |i: usize| bitmap[(i + 2) / 8] & (1 << ((i + 2) % 8)) != 0;
        let mut rest = &payload[1 + bitmap_len..];
        // Each column's bytes as they sit in the row and its value within them (None: NULL).
        let mut values: Vec<Option<Field<'_>>> = Vec::with_capacity(n);
        for (i, c) in self.columns.iter().enumerate() {
            if is_null(i) || c.layout == Layout::Nothing {
                values.push(None);
                continue;
            }
            let (raw, value, after) = match c.layout {
                Layout::Fixed(k) => {
                    let (v, after) = rest.split_at_checked(k).ok_or_else(unreadable)?;
                    (v, v, after)
                }
                Layout::Short => {
                    let k = usize::from(*rest.first().ok_or_else(unreadable)?);
                    let (v, after) = rest.split_at_checked(1 + k).ok_or_else(unreadable)?;
                    (v, &v[1..], after)
                }
                Layout::Lenenc => {
                    let (v, after) = lenenc_str(rest).ok_or_else(unreadable)?;
                    (&rest[..rest.len() - after.len()], v, after)
                }
                Layout::Nothing => unreachable!("handled above"),
            };
            values.push(Some(Field { raw, value }));
            rest = after;
        }
        if !rest.is_empty() {
            return Err(unreadable());
        }
        Ok((bitmap, values))
    }

    fn binary_row(&self, payload: &[u8]) -> Result<Option<Vec<u8>>, Unmaskable> {
        let masker = &self.masking.masker;
        let (bitmap, values) = self.walk(payload)?;
        let mut changed = false;
        let mut nulls = bitmap.to_vec();
        let mut body = Vec::with_capacity(payload.len() + 32);
        for (i, field) in values.into_iter().enumerate() {
            let Some(Field { raw, value }) = field else {
                continue;
            };
            let c = self.columns[i];
            let masked = match c.layout {
                Layout::Lenenc => c.treat.mask(masker, value),
                _ if c.treat == Treat::WholeNull => Masked::Null,
                // Numbers and dates: nothing to mask.
                _ => Masked::Same,
            };
            match masked {
                Masked::Same => body.extend_from_slice(raw),
                Masked::Value(v) => {
                    changed = true;
                    put_lenenc_str(&mut body, &v);
                }
                Masked::Null => {
                    changed = true;
                    nulls[(i + 2) / 8] |= 1 << ((i + 2) % 8);
                }
                Masked::Unrewritable => {
                    return Err(Unmaskable {
                        reason: format!(
                            "result column {} holds a value that looks like a credential, in a \
                             type Airlock cannot rewrite",
                            i + 1
                        ),
                    });
                }
            }
        }
        if !changed {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(1 + nulls.len() + body.len());
        out.push(0);
        out.extend_from_slice(&nulls);
        out.extend_from_slice(&body);
        Ok(Some(out))
    }

    /// An ERR packet with secrets masked in its message.
    pub fn error(&self, payload: &[u8]) -> Option<Vec<u8>> {
        let start = if payload.get(3) == Some(&b'#') { 9 } else { 3 };
        let message = payload.get(start..)?;
        let masked = self.masking.masker.mask(message)?;
        Some([&payload[..start], &masked].concat())
    }
}

/// A value in a binary row: its bytes with any length prefix, and the value itself.
struct Field<'a> {
    raw: &'a [u8],
    value: &'a [u8],
}

fn unreadable() -> Unmaskable {
    Unmaskable {
        reason: "a result row Airlock cannot read against its column definitions".into(),
    }
}

/// A length-encoded string and what follows it.
fn lenenc_str(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let (&first, rest) = buf.split_first()?;
    let (len, rest) = match first {
        0..=0xfa => (u64::from(first), rest),
        0xfc => (
            u64::from(u16::from_le_bytes(rest.get(..2)?.try_into().ok()?)),
            &rest[2..],
        ),
        0xfd => {
            let b = rest.get(..3)?;
            (
                u64::from(b[0]) | u64::from(b[1]) << 8 | u64::from(b[2]) << 16,
                &rest[3..],
            )
        }
        0xfe => (
            u64::from_le_bytes(rest.get(..8)?.try_into().ok()?),
            &rest[8..],
        ),
        _ => return None,
    };
    rest.split_at_checked(usize::try_from(len).ok()?)
}

fn put_lenenc_str(out: &mut Vec<u8>, v: &[u8]) {
    let len = v.len() as u64;
    match len {
        0..=0xfa => out.push(len as u8),
        0xfb..=0xffff => {
            out.push(0xfc);
            out.extend_from_slice(&(len as u16).to_le_bytes());
        }
        0x1_0000..=0xff_ffff => {
            out.push(0xfd);
            out.extend_from_slice(&len.to_le_bytes()[..3]);
        }
        _ => {
            out.push(0xfe);
            out.extend_from_slice(&len.to_le_bytes());
        }
    }
    out.extend_from_slice(v);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::mask::MaskPolicy;
    use mysql_common::packets::Column;
    use mysql_common::proto::MySerialize;

    const TOKEN: &str = "ghp_aB3dE5gH7jK9mN1pQ3sT5vX7zA9cE1gI3kM5";

    fn results(columns: &[&str]) -> MyResults {
        let policy = MaskPolicy {
            columns: columns.iter().map(|c| c.to_string()).collect(),
            ..MaskPolicy::default()
        };
        MyResults::new(Arc::new(Masking::new(&policy, None).unwrap()))
    }

    fn define(r: &mut MyResults, cols: &[(&str, ColumnType)]) {
        r.columns();
        for (name, t) in cols {
            let c = Column::new(*t)
                .with_name(name.as_bytes())
                .with_org_name(name.as_bytes())
                .with_table(b"users")
                .with_org_table(b"users")
                .with_schema(b"test");
            let mut payload = Vec::new();
            c.serialize(&mut payload);
            r.definition(&payload);
        }
    }

    #[test]
    fn text_rows() {
        let mut r = results(&["users.password"]);
        define(
            &mut r,
            &[
                ("id", ColumnType::MYSQL_TYPE_LONG),
                ("note", ColumnType::MYSQL_TYPE_VAR_STRING),
                ("password", ColumnType::MYSQL_TYPE_VAR_STRING),
            ],
        );
        let mut row = Vec::new();
        put_lenenc_str(&mut row, b"1");
        put_lenenc_str(&mut row, format!("t={TOKEN}").as_bytes());
        row.push(0xfb);
        let out = r.row(false, &row).unwrap().unwrap();
        let mut want = Vec::new();
        put_lenenc_str(&mut want, b"1");
        put_lenenc_str(&mut want, b"t=[masked:github_token]");
        want.push(0xfb);
        assert_eq!(out, want);
        let mut row = Vec::new();
        put_lenenc_str(&mut row, b"2");
        put_lenenc_str(&mut row, b"plain");
        put_lenenc_str(&mut row, b"hunter2");
        let out = r.row(false, &row).unwrap().unwrap();
        assert!(out.ends_with(b"[masked:column]"));
    }

    #[test]
    fn binary_rows_keep_their_layout() {
        let mut r = results(&["pin"]);
        define(
            &mut r,
            &[
                ("id", ColumnType::MYSQL_TYPE_LONGLONG),
                ("at", ColumnType::MYSQL_TYPE_DATETIME),
                ("note", ColumnType::MYSQL_TYPE_BLOB),
                ("pin", ColumnType::MYSQL_TYPE_LONG),
                ("gone", ColumnType::MYSQL_TYPE_VAR_STRING),
            ],
        );
        // Header, bitmap (5 columns + 2 bits: one byte), id, datetime(4 bytes), note, pin;
        // "gone" is NULL (bit 4 + 2).
        let mut row = vec![0u8, 1 << 6];
        row.extend_from_slice(b"AKIA\0\0\0\0");
        row.extend_from_slice(&[4, 0xe8, 0x07, 1, 2]);
        put_lenenc_str(&mut row, format!("k {TOKEN}").as_bytes());
        row.extend_from_slice(&1234u32.to_le_bytes());
        let out = r.row(true, &row).unwrap().unwrap();
        let mut want = vec![0u8, 1 << 6 | 1 << 5];
        want.extend_from_slice(b"AKIA\0\0\0\0");
        want.extend_from_slice(&[4, 0xe8, 0x07, 1, 2]);
        put_lenenc_str(&mut want, b"k [masked:github_token]");
        assert_eq!(out, want);
    }

    #[test]
    fn errors_and_bad_rows() {
        let mut r = results(&[]);
        define(&mut r, &[("t", ColumnType::MYSQL_TYPE_VAR_STRING)]);
        let err = [
            b"\xff\x26\x04#23000Duplicate entry '".as_slice(),
            TOKEN.as_bytes(),
            b"' for key 'PRIMARY'",
        ]
        .concat();
        let out = String::from_utf8_lossy(&r.error(&err).unwrap()).into_owned();
        assert!(out.contains("'[masked:github_token]'") && out.ends_with("' for key 'PRIMARY'"));
        // A binary row that does not fit its definitions, holding a secret: refused.
        let mut row = vec![0u8, 0];
        put_lenenc_str(&mut row, TOKEN.as_bytes());
        row.push(7);
        assert!(r.row(true, &row).is_err());
    }
}
