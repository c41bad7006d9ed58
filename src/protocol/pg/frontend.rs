//! Bounds-checked views of the frontend messages that carry statements or their arguments:
//! Query, Parse, Bind, Execute, FunctionCall, Close and Sync. A view borrows the message body; nothing is
//! copied. Any message that does not parse is a protocol violation (the session answers 08P01),
//! so a statement Airlock cannot read is never forwarded.

/// Frontend message tags Airlock reads.
pub mod tag {
    pub const QUERY: u8 = b'Q';
    pub const PARSE: u8 = b'P';
    pub const BIND: u8 = b'B';
    pub const EXECUTE: u8 = b'E';
    pub const DESCRIBE: u8 = b'D';
    pub const CLOSE: u8 = b'C';
    pub const SYNC: u8 = b'S';
    pub const FLUSH: u8 = b'H';
    pub const FUNCTION_CALL: u8 = b'F';
    pub const TERMINATE: u8 = b'X';
    pub const PASSWORD: u8 = b'p';
    pub const COPY_DATA: u8 = b'd';
    pub const COPY_DONE: u8 = b'c';
    pub const COPY_FAIL: u8 = b'f';
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed {message} message: {problem}")]
pub struct MalformedMessage {
    pub message: &'static str,
    pub problem: &'static str,
}

fn bad(message: &'static str, problem: &'static str) -> MalformedMessage {
    MalformedMessage { message, problem }
}

/// A message as the inspection seam sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrontendMessage<'a> {
    /// Simple query: one string that may hold several statements.
    Query {
        sql: &'a [u8],
    },
    Parse(Parse<'a>),
    Bind(Bind<'a>),
    Execute {
        portal: &'a [u8],
        max_rows: i32,
    },
    /// Runs a function by OID with no SQL text at all.
    FunctionCall(FunctionCall<'a>),
    /// Closes a prepared statement (`target` `b'S'`) or a portal (`b'P'`).
    Close {
        target: u8,
        name: &'a [u8],
    },
    /// Asks for the parameter and result types of a prepared statement (`target` `b'S'`) or
    /// the result types and formats of a portal (`b'P'`).
    Describe {
        target: u8,
        name: &'a [u8],
    },
    Sync,
    /// Any other message; passed through unread.
    Other {
        tag: u8,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parse<'a> {
    pub statement: &'a [u8],
    pub sql: &'a [u8],
    pub param_type_count: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind<'a> {
    pub portal: &'a [u8],
    pub statement: &'a [u8],
    /// Parameter format codes, two bytes each.
    param_formats: &'a [u8],
    param_count: u16,
    /// The parameter values as they appear on the wire (length-prefixed, -1 for NULL).
    params: &'a [u8],
    /// Result-column format codes, two bytes each.
    result_formats: &'a [u8],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionCall<'a> {
    pub function_oid: u32,
    arg_count: u16,
    args: &'a [u8],
}

impl<'a> Bind<'a> {
    pub fn param_count(&self) -> usize {
        self.param_count as usize
    }

    /// Each parameter's value, `None` for NULL.
    pub fn params(&self) -> impl Iterator<Item = Option<&'a [u8]>> + 'a {
        values(self.params, self.param_count)
    }

    /// The format code (0 text, 1 binary) of parameter `i`, following the protocol's rules
    /// for zero, one or one-per-parameter codes.
    pub fn param_format(&self, i: usize) -> i16 {
        format_code(self.param_formats, i)
    }

    /// The format code requested for result column `i`.
    pub fn result_format(&self, i: usize) -> i16 {
        format_code(self.result_formats, i)
    }

    /// How many result format codes the client sent (0, 1 or one per column).
    pub fn result_format_count(&self) -> usize {
        self.result_formats.len() / 2
    }
}

/// A Bind's parameters copied out of the message, to show later (the parameters of a held
/// Execute). Copying into the same buffers again allocates nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params {
    formats: Vec<u8>,
    count: u16,
    values: Vec<u8>,
}

impl Params {
    pub fn copy_from(&mut self, bind: &Bind<'_>) {
        self.formats.clear();
        self.formats.extend_from_slice(bind.param_formats);
        self.count = bind.param_count;
        self.values.clear();
        self.values.extend_from_slice(bind.params);
    }

    /// Each parameter for people, after `mask` (which returns a value's replacement, if it
    /// changes it): text-format values as sent; binary ones as text when they are printable
    /// UTF-8 (a text parameter sent in binary), otherwise as `\x` and hex; NULL as `None`.
    pub fn display(&self, mask: impl Fn(&[u8]) -> Option<Vec<u8>>) -> Vec<Option<String>> {
        values(&self.values, self.count)
            .enumerate()
            .map(|(i, v)| {
                v.map(|v| {
                    let masked = mask(v);
                    let v = masked.as_deref().unwrap_or(v);
                    match (format_code(&self.formats, i), std::str::from_utf8(v)) {
                        (0, _) => String::from_utf8_lossy(v).into_owned(),
                        (_, Ok(text)) if !text.chars().any(char::is_control) => text.to_owned(),
                        _ => format!("\\x{}", crate::hex::encode(v)),
                    }
                })
            })
            .collect()
    }
}

impl<'a> FunctionCall<'a> {
    pub fn args(&self) -> impl Iterator<Item = Option<&'a [u8]>> + 'a {
        values(self.args, self.arg_count)
    }
}

fn format_code(codes: &[u8], i: usize) -> i16 {
    let n = codes.len() / 2;
    let at = match n {
        0 => return 0,
        1 => 0,
        _ if i < n => i,
        _ => return 0,
    };
    i16::from_be_bytes([codes[2 * at], codes[2 * at + 1]])
}

/// Walks already-validated length-prefixed values.
fn values(mut raw: &[u8], count: u16) -> impl Iterator<Item = Option<&[u8]>> {
    (0..count).map(move |_| {
        let len = i32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]);
        raw = &raw[4..];
        if len < 0 {
            None
        } else {
            let (v, rest) = raw.split_at(len as usize);
            raw = rest;
            Some(v)
        }
    })
}

/// A cursor over a message body that never reads past its end.
struct Reader<'a> {
    buf: &'a [u8],
    message: &'static str,
}

impl<'a> Reader<'a> {
    fn cstr(&mut self, what: &'static str) -> Result<&'a [u8], MalformedMessage> {
        let end = self
            .buf
            .iter()
            .position(|&b| b == 0)
            .ok_or(bad(self.message, what))?;
        let (s, rest) = self.buf.split_at(end);
        self.buf = &rest[1..];
        Ok(s)
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], MalformedMessage> {
        if self.buf.len() < n {
            return Err(bad(self.message, what));
        }
        let (s, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(s)
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, MalformedMessage> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self, what: &'static str) -> Result<i32, MalformedMessage> {
        let b = self.take(4, what)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// `count` length-prefixed values; returns the slice that holds them.
    fn values(&mut self, count: u16, what: &'static str) -> Result<&'a [u8], MalformedMessage> {
        let start = self.buf;
        let mut used = 0;
        for _ in 0..count {
            let len = self.i32(what)?;
            used += 4;
            if len < -1 {
                return Err(bad(self.message, "negative value length"));
            }
            if len > 0 {
                self.take(len as usize, what)?;
                used += len as usize;
            }
        }
        Ok(&start[..used])
    }

    fn finish(&self) -> Result<(), MalformedMessage> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(bad(self.message, "trailing bytes after the last field"))
        }
    }
}

/// Reads the body of a frontend message with `tag`. Messages Airlock does not read come back
/// as [`FrontendMessage::Other`] without being looked at.
pub fn parse(tag: u8, body: &[u8]) -> Result<FrontendMessage<'_>, MalformedMessage> {
    match tag {
        tag::QUERY => {
            let mut r = Reader {
                buf: body,
                message: "Query",
            };
            let sql = r.cstr("query string is not NUL-terminated")?;
            r.finish()?;
            Ok(FrontendMessage::Query { sql })
        }
        tag::PARSE => {
            let mut r = Reader {
                buf: body,
                message: "Parse",
            };
            let statement = r.cstr("statement name is not NUL-terminated")?;
            let sql = r.cstr("query string is not NUL-terminated")?;
            let param_type_count = r.u16("missing parameter type count")?;
            r.take(4 * param_type_count as usize, "parameter types cut short")?;
            r.finish()?;
            Ok(FrontendMessage::Parse(Parse {
                statement,
                sql,
                param_type_count,
            }))
        }
        tag::BIND => {
            let mut r = Reader {
                buf: body,
                message: "Bind",
            };
            let portal = r.cstr("portal name is not NUL-terminated")?;
            let statement = r.cstr("statement name is not NUL-terminated")?;
            let nformats = r.u16("missing parameter format count")?;
            let param_formats = r.take(2 * nformats as usize, "parameter formats cut short")?;
            let param_count = r.u16("missing parameter count")?;
            if nformats > 1 && nformats != param_count {
                return Err(bad(
                    "Bind",
                    "parameter format count matches neither 0, 1 nor the parameter count",
                ));
            }
            let params = r.values(param_count, "parameter values cut short")?;
            let nresults = r.u16("missing result format count")?;
            let result_formats = r.take(2 * nresults as usize, "result formats cut short")?;
            r.finish()?;
            Ok(FrontendMessage::Bind(Bind {
                portal,
                statement,
                param_formats,
                param_count,
                params,
                result_formats,
            }))
        }
        tag::EXECUTE => {
            let mut r = Reader {
                buf: body,
                message: "Execute",
            };
            let portal = r.cstr("portal name is not NUL-terminated")?;
            let max_rows = r.i32("missing row limit")?;
            r.finish()?;
            Ok(FrontendMessage::Execute { portal, max_rows })
        }
        tag::CLOSE | tag::DESCRIBE => {
            let message = if tag == tag::CLOSE {
                "Close"
            } else {
                "Describe"
            };
            let mut r = Reader { buf: body, message };
            let target = r.take(1, "missing target")?[0];
            if target != b'S' && target != b'P' {
                return Err(bad(message, "target is neither 'S' nor 'P'"));
            }
            let name = r.cstr("name is not NUL-terminated")?;
            r.finish()?;
            Ok(if tag == tag::CLOSE {
                FrontendMessage::Close { target, name }
            } else {
                FrontendMessage::Describe { target, name }
            })
        }
        tag::SYNC => {
            let r = Reader {
                buf: body,
                message: "Sync",
            };
            r.finish()?;
            Ok(FrontendMessage::Sync)
        }
        tag::FUNCTION_CALL => {
            let mut r = Reader {
                buf: body,
                message: "FunctionCall",
            };
            let oid = r.i32("missing function OID")? as u32;
            let nformats = r.u16("missing argument format count")?;
            r.take(2 * nformats as usize, "argument formats cut short")?;
            let arg_count = r.u16("missing argument count")?;
            let args = r.values(arg_count, "argument values cut short")?;
            r.u16("missing result format")?;
            r.finish()?;
            Ok(FrontendMessage::FunctionCall(FunctionCall {
                function_oid: oid,
                arg_count,
                args,
            }))
        }
        other => Ok(FrontendMessage::Other { tag: other }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;

    fn bind_body(params: &[Option<&[u8]>], formats: &[i16], results: &[i16]) -> Vec<u8> {
        let mut b = Vec::new();
        b.put_slice(b"portal\0stmt\0");
        b.put_u16(formats.len() as u16);
        formats.iter().for_each(|f| b.put_i16(*f));
        b.put_u16(params.len() as u16);
        for p in params {
            match p {
                Some(v) => {
                    b.put_i32(v.len() as i32);
                    b.put_slice(v);
                }
                None => b.put_i32(-1),
            }
        }
        b.put_u16(results.len() as u16);
        results.iter().for_each(|f| b.put_i16(*f));
        b
    }

    #[test]
    fn reads_query() {
        assert_eq!(
            parse(b'Q', b"select 1; select 2\0"),
            Ok(FrontendMessage::Query {
                sql: b"select 1; select 2"
            })
        );
        assert!(parse(b'Q', b"select 1").is_err());
        assert!(parse(b'Q', b"select 1\0junk").is_err());
    }

    #[test]
    fn reads_parse() {
        let mut body = b"s1\0delete from t where id = $1\0".to_vec();
        body.put_u16(1);
        body.put_u32(23);
        let FrontendMessage::Parse(p) = parse(b'P', &body).unwrap() else {
            panic!("not a Parse")
        };
        assert_eq!(p.statement, b"s1");
        assert_eq!(p.sql, b"delete from t where id = $1");
        assert_eq!(p.param_type_count, 1);
        assert!(parse(b'P', &body[..body.len() - 1]).is_err());
    }

    #[test]
    fn reads_bind_values_and_formats() {
        let body = bind_body(&[Some(b"42"), None, Some(b"")], &[1], &[0, 1]);
        let FrontendMessage::Bind(b) = parse(b'B', &body).unwrap() else {
            panic!("not a Bind")
        };
        assert_eq!(b.portal, b"portal");
        assert_eq!(b.statement, b"stmt");
        assert_eq!(
            b.params().collect::<Vec<_>>(),
            vec![Some(&b"42"[..]), None, Some(&b""[..])]
        );
        assert_eq!(b.param_format(2), 1, "one code applies to all");
        assert_eq!(b.result_format(1), 1);
        assert_eq!(b.result_format_count(), 2);
    }

    #[test]
    fn refuses_bind_with_lying_lengths() {
        let mut body = bind_body(&[Some(b"42")], &[], &[]);
        // claim the value is longer than the message
        let at = b"portal\0stmt\0".len() + 4;
        body[at..at + 4].copy_from_slice(&1000i32.to_be_bytes());
        assert!(parse(b'B', &body).is_err());
        let mut body = bind_body(&[Some(b"42")], &[], &[]);
        body[at..at + 4].copy_from_slice(&(-2i32).to_be_bytes());
        assert!(parse(b'B', &body).is_err());
        let body = bind_body(&[Some(b"1"), Some(b"2")], &[0, 0, 0], &[]);
        assert!(
            parse(b'B', &body).is_err(),
            "three format codes for two parameters"
        );
    }

    #[test]
    fn reads_execute_and_function_call() {
        let mut body = b"p\0".to_vec();
        body.put_i32(10);
        assert_eq!(
            parse(b'E', &body),
            Ok(FrontendMessage::Execute {
                portal: b"p",
                max_rows: 10
            })
        );

        let mut f = Vec::new();
        f.put_u32(964); // lo_unlink
        f.put_u16(0);
        f.put_u16(1);
        f.put_i32(4);
        f.put_u32(16385);
        f.put_u16(0);
        let FrontendMessage::FunctionCall(call) = parse(b'F', &f).unwrap() else {
            panic!("not a FunctionCall")
        };
        assert_eq!(call.function_oid, 964);
        assert_eq!(call.args().count(), 1);
        assert!(parse(b'F', &f[..f.len() - 2]).is_err());
    }

    #[test]
    fn other_messages_are_not_read() {
        assert_eq!(
            parse(b'H', b"anything"),
            Ok(FrontendMessage::Other { tag: b'H' })
        );
    }

    #[test]
    fn reads_close_and_sync() {
        assert_eq!(
            parse(b'C', b"Sname\0"),
            Ok(FrontendMessage::Close {
                target: b'S',
                name: b"name"
            })
        );
        assert_eq!(parse(b'S', b""), Ok(FrontendMessage::Sync));
        assert!(parse(b'C', b"Xname\0").is_err(), "unknown target");
        assert!(parse(b'C', b"Pname").is_err(), "unterminated");
        assert!(parse(b'S', b"x").is_err(), "Sync has no body");
    }
}
