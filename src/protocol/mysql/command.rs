//! Commands: the first byte of a client's packet in the command phase, and views of the ones
//! Airlock reads.

pub const COM_QUIT: u8 = 0x01;
pub const COM_INIT_DB: u8 = 0x02;
pub const COM_QUERY: u8 = 0x03;
pub const COM_FIELD_LIST: u8 = 0x04;
pub const COM_STATISTICS: u8 = 0x09;
pub const COM_PROCESS_KILL: u8 = 0x0c;
pub const COM_PING: u8 = 0x0e;
pub const COM_CHANGE_USER: u8 = 0x11;
pub const COM_BINLOG_DUMP: u8 = 0x12;
pub const COM_STMT_PREPARE: u8 = 0x16;
pub const COM_STMT_EXECUTE: u8 = 0x17;
pub const COM_STMT_SEND_LONG_DATA: u8 = 0x18;
pub const COM_STMT_CLOSE: u8 = 0x19;
pub const COM_STMT_RESET: u8 = 0x1a;
pub const COM_SET_OPTION: u8 = 0x1b;
pub const COM_STMT_FETCH: u8 = 0x1c;
pub const COM_RESET_CONNECTION: u8 = 0x1f;
pub const COM_BINLOG_DUMP_GTID: u8 = 0x1e;
/// MariaDB's bulk execute.
pub const COM_STMT_BULK_EXECUTE: u8 = 0xfa;

/// A command as the inspection seam sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command<'a> {
    /// Statement text, possibly several statements (with multi-statements on).
    Query {
        sql: &'a [u8],
    },
    Prepare {
        sql: &'a [u8],
    },
    /// Runs a prepared statement; `params` is the rest of the packet, as sent.
    Execute {
        stmt_id: u32,
        params: &'a [u8],
    },
    /// Any statement-id command that does not run anything (close, reset, long data, fetch).
    Statement {
        code: u8,
        stmt_id: u32,
    },
    /// COM_INIT_DB: makes `schema` the session's default database.
    InitDb {
        schema: &'a [u8],
    },
    /// Any other command.
    Other {
        code: u8,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed command packet: {0}")]
pub struct Malformed(pub &'static str);

/// Reads a command payload (the whole logical packet).
pub fn parse(payload: &[u8]) -> Result<Command<'_>, Malformed> {
    let (&code, rest) = payload.split_first().ok_or(Malformed("empty packet"))?;
    let stmt_id = || -> Result<u32, Malformed> {
        let b = rest.get(..4).ok_or(Malformed("statement id cut short"))?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    Ok(match code {
        COM_QUERY => Command::Query { sql: rest },
        COM_STMT_PREPARE => Command::Prepare { sql: rest },
        COM_STMT_EXECUTE | COM_STMT_BULK_EXECUTE => Command::Execute {
            stmt_id: stmt_id()?,
            params: &rest[4..],
        },
        COM_STMT_CLOSE | COM_STMT_RESET | COM_STMT_SEND_LONG_DATA | COM_STMT_FETCH => {
            Command::Statement {
                code,
                stmt_id: stmt_id()?,
            }
        }
        COM_INIT_DB => Command::InitDb { schema: rest },
        code => Command::Other { code },
    })
}

/// Whether the server answers this command at all (COM_STMT_CLOSE and SEND_LONG_DATA get no
/// answer, COM_QUIT closes).
pub fn expects_answer(code: u8) -> bool {
    !matches!(code, COM_STMT_CLOSE | COM_STMT_SEND_LONG_DATA | COM_QUIT)
}

/// A `KILL [QUERY | CONNECTION] <id>` to map from Airlock's connection ids to the database's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kill {
    /// `KILL QUERY`: stop the statement, keep the connection.
    pub query_only: bool,
    pub id: u32,
}

impl Kill {
    /// The statement that kills `thread` on the database.
    pub fn sql_for(&self, thread: u32) -> String {
        let what = if self.query_only {
            "QUERY"
        } else {
            "CONNECTION"
        };
        format!("KILL {what} {thread}")
    }
}

/// A COM_QUERY text that is exactly one KILL of a connection id, or a COM_PROCESS_KILL.
pub fn kill(command: &Command<'_>, payload: &[u8]) -> Option<Kill> {
    match command {
        Command::Query { sql } => {
            let text = std::str::from_utf8(sql).ok()?.trim();
            let text = text.strip_suffix(';').unwrap_or(text);
            let mut words = text.split_ascii_whitespace();
            if !words.next()?.eq_ignore_ascii_case("kill") {
                return None;
            }
            let mut next = words.next()?;
            let mut query_only = false;
            if next.eq_ignore_ascii_case("query") {
                query_only = true;
                next = words.next()?;
            } else if next.eq_ignore_ascii_case("connection") {
                next = words.next()?;
            }
            if words.next().is_some() || !next.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            Some(Kill {
                query_only,
                id: next.parse().ok()?,
            })
        }
        Command::Other {
            code: COM_PROCESS_KILL,
        } => {
            let b = payload.get(1..5)?;
            Some(Kill {
                query_only: false,
                id: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            })
        }
        _ => None,
    }
}

/// The values of a COM_STMT_EXECUTE's parameters, for people: SQL literals (`'text'`, `42`,
/// `NULL`). `count` is the statement's parameter count (from its PREPARE answer); `types`
/// holds the parameter types last sent for the statement and is updated when the packet
/// sends new ones (a client sends them with the first execute, and may omit them after).
/// `None` when the values cannot be read (types never sent, or a packet cut short).
pub fn execute_params(
    params: &[u8],
    count: u16,
    types: &mut Option<Vec<(u8, u8)>>,
) -> Option<Vec<String>> {
    use mysql_common::constants::{ColumnFlags, ColumnType};
    use mysql_common::io::ParseBuf;
    use mysql_common::proto::MyDeserialize;
    use mysql_common::value::{BinValue, ValueDeserializer};

    let n = count as usize;
    if n == 0 {
        return Some(Vec::new());
    }
    // flags (1), iteration count (4), NULL bitmap, new-params-bound flag.
    let bitmap_len = n.div_ceil(8);
    let bitmap = params.get(5..5 + bitmap_len)?;
    let mut rest = params.get(5 + bitmap_len..)?;
    let (&bound, tail) = rest.split_first()?;
    rest = tail;
    if bound == 1 {
        let raw = rest.get(..2 * n)?;
        *types = Some(raw.chunks(2).map(|c| (c[0], c[1])).collect());
        rest = &rest[2 * n..];
    }
    let types = types.as_ref().filter(|t| t.len() == n)?;
    let mut buf = ParseBuf(rest);
    let mut out = Vec::with_capacity(n);
    for (i, &(kind, flags)) in types.iter().enumerate() {
        if bitmap[i / 8] & (1 << (i % 8)) != 0 {
            out.push("NULL".to_owned());
            continue;
        }
        let column = ColumnType::try_from(kind).ok()?;
        let mut column_flags = ColumnFlags::empty();
        if flags & 0x80 != 0 {
            column_flags |= ColumnFlags::UNSIGNED_FLAG;
        }
        let value =
            ValueDeserializer::<BinValue>::deserialize((column, column_flags), &mut buf).ok()?;
        out.push(literal(&value.0));
    }
    Some(out)
}

/// A value as an SQL literal for people (mysql_common's `as_sql` can overflow on a TIME of
/// absurd length, and any client may send one).
fn literal(value: &mysql_common::Value) -> String {
    use mysql_common::Value;
    match value {
        Value::NULL => "NULL".to_owned(),
        Value::Bytes(b) => match std::str::from_utf8(b) {
            Ok(s) => format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")),
            Err(_) => {
                let hex: String = b.iter().map(|c| format!("{c:02X}")).collect();
                format!("0x{hex}")
            }
        },
        Value::Int(i) => i.to_string(),
        Value::UInt(u) => u.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Double(d) => d.to_string(),
        Value::Date(y, mo, d, h, mi, s, us) => {
            format!("'{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{us:06}'")
        }
        Value::Time(neg, days, h, mi, s, us) => {
            let hours = u64::from(*days) * 24 + u64::from(*h);
            let sign = if *neg { "-" } else { "" };
            format!("'{sign}{hours:03}:{mi:02}:{s:02}.{us:06}'")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_commands_the_seam_needs() {
        assert_eq!(
            parse(b"\x03select 1"),
            Ok(Command::Query { sql: b"select 1" })
        );
        assert_eq!(
            parse(b"\x17\x05\0\0\0\0\x01\0\0\0"),
            Ok(Command::Execute {
                stmt_id: 5,
                params: b"\0\x01\0\0\0"
            })
        );
        assert_eq!(
            parse(b"\x19\x07\0\0\0"),
            Ok(Command::Statement {
                code: COM_STMT_CLOSE,
                stmt_id: 7
            })
        );
        assert!(parse(b"").is_err());
        assert!(parse(b"\x17\x01").is_err());
        assert_eq!(parse(b"\x0e"), Ok(Command::Other { code: COM_PING }));
        assert_eq!(parse(b"\x02prod"), Ok(Command::InitDb { schema: b"prod" }));
    }

    #[test]
    fn recognises_kills_of_a_connection_id_and_nothing_else() {
        let k = |sql: &str| {
            kill(
                &Command::Query {
                    sql: sql.as_bytes(),
                },
                b"",
            )
        };
        assert_eq!(
            k("KILL QUERY 42"),
            Some(Kill {
                query_only: true,
                id: 42
            })
        );
        assert_eq!(
            k(" kill connection 7 ;"),
            Some(Kill {
                query_only: false,
                id: 7
            })
        );
        assert_eq!(
            k("kill 9").map(|k| k.sql_for(100)).as_deref(),
            Some("KILL CONNECTION 100")
        );
        for other in [
            "KILL QUERY 4 OR 1",
            "KILL QUERY",
            "KILL USER bob",
            "SELECT 1",
            "KILL 1; DROP TABLE t",
            "KILL -1",
        ] {
            assert_eq!(k(other), None, "{other}");
        }
        let payload = [COM_PROCESS_KILL, 5, 0, 0, 0];
        assert_eq!(
            kill(&parse(&payload).unwrap(), &payload),
            Some(Kill {
                query_only: false,
                id: 5
            })
        );
    }

    #[test]
    fn execute_params_never_panic_on_any_bytes() {
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};
        let types = [
            0x01u8, 0x02, 0x03, 0x04, 0x05, 0x07, 0x08, 0x0a, 0x0b, 0x0c, 0xf6, 0xfc, 0xfd, 0xfe,
            0x10, 0xf5, 0xff,
        ];
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..20_000 {
            let count = rng.random_range(0..6u16);
            let mut packet = vec![0u8, 1, 0, 0, 0];
            packet.extend((0..count.div_ceil(8)).map(|_| rng.random::<u8>()));
            packet.push(1);
            for _ in 0..count {
                packet.push(types[rng.random_range(0..types.len())]);
                packet.push(rng.random::<u8>() & 0x80);
            }
            let len = rng.random_range(0..40);
            packet.extend((0..len).map(|_| rng.random::<u8>()));
            let cut = rng.random_range(0..=packet.len());
            let mut remembered = None;
            let _ = execute_params(&packet[..cut], count, &mut remembered);
        }
    }

    #[test]
    fn execute_params_read_values_and_remember_types() {
        // Two parameters: a LONGLONG 7 and a VAR_STRING 'ab'; then the same statement again
        // without types, the second parameter NULL.
        let mut first = vec![0u8, 1, 0, 0, 0, 0b00, 1, 0x08, 0, 0xfd, 0];
        first.extend(7i64.to_le_bytes());
        first.extend([2, b'a', b'b']);
        let mut types = None;
        assert_eq!(
            execute_params(&first, 2, &mut types),
            Some(vec!["7".to_owned(), "'ab'".to_owned()])
        );
        let mut again = vec![0u8, 1, 0, 0, 0, 0b10, 0];
        again.extend(8i64.to_le_bytes());
        assert_eq!(
            execute_params(&again, 2, &mut types),
            Some(vec!["8".to_owned(), "NULL".to_owned()])
        );
        assert_eq!(
            execute_params(&again, 2, &mut None),
            None,
            "types never sent"
        );
    }
}
