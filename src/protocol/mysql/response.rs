//! The shape of the server's answers: which packet of an answer is an OK, an EOF, an ERR, a
//! column count, a column definition or a row. Pure: the relay shows it the start of each
//! logical packet from the server and it says what that packet means, without holding rows.
//!
//! Airlock needs three things from answers: the server status flags of every OK and EOF
//! (`SERVER_STATUS_NO_BACKSLASH_ESCAPES` changes how string literals are read), the statement
//! id of a COM_STMT_PREPARE's answer, and a LOCAL INFILE request, which the relay passes on
//! only where the config allows it.

use super::command;

/// What the server answers, by the command it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// One OK or ERR (COM_PING, COM_INIT_DB, COM_RESET_CONNECTION ...).
    Simple,
    /// Result sets with rows in the text protocol: COM_QUERY.
    Results,
    /// Result sets with rows in the binary protocol: COM_STMT_EXECUTE.
    BinaryResults,
    /// COM_STMT_PREPARE: an OK with the statement id, then parameter and column definitions.
    Prepare,
    /// COM_FIELD_LIST: column definitions ending with EOF.
    FieldList,
    /// COM_STMT_FETCH: rows ending with EOF.
    Fetch,
    /// COM_STATISTICS: one string.
    Text,
    /// No answer (COM_STMT_CLOSE, COM_STMT_SEND_LONG_DATA, COM_QUIT).
    Nothing,
}

impl Answer {
    pub fn to(code: u8) -> Answer {
        match code {
            command::COM_QUERY => Answer::Results,
            command::COM_STMT_EXECUTE | command::COM_STMT_BULK_EXECUTE => Answer::BinaryResults,
            command::COM_STMT_PREPARE => Answer::Prepare,
            command::COM_FIELD_LIST => Answer::FieldList,
            command::COM_STMT_FETCH => Answer::Fetch,
            command::COM_STATISTICS => Answer::Text,
            c if !command::expects_answer(c) => Answer::Nothing,
            _ => Answer::Simple,
        }
    }
}

/// What a packet of an answer means, where it matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// An OK or EOF with these server status flags.
    Status(u16),
    /// The server accepted a prepared statement under this id, with this many parameters.
    Prepared { id: u32, params: u16 },
    /// The server refused the command.
    Error,
    /// The server asks the client to send a local file. `text`: in answer to COM_QUERY (the
    /// only command LOAD DATA LOCAL can come from); the answer then goes on after the file.
    LocalInfile { text: bool },
    /// Not a packet Airlock expected here.
    Unexpected,
    /// A result set starts (the column-count packet): its definitions follow.
    Columns,
    /// A column (or parameter) definition.
    Definition,
    /// A result row, in the binary protocol or the text one.
    Row { binary: bool },
}

pub const SERVER_MORE_RESULTS_EXISTS: u16 = 0x0008;
pub const SERVER_STATUS_NO_BACKSLASH_ESCAPES: u16 = 0x0200;

/// How many leading bytes of a packet [`Tracker::packet`] needs (fewer if the packet is shorter).
pub const HEAD: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No answer owed.
    Idle,
    /// The first packet of an answer (or of the next result set).
    First(Answer),
    /// Column (or parameter) definitions still to come, then `after`.
    Definitions { left: u64, after: After },
    /// The EOF that ends definitions (without CLIENT_DEPRECATE_EOF), then `after`.
    DefinitionsEof(After),
    /// Rows until a terminator.
    Rows,
    /// COM_FIELD_LIST: definitions until EOF.
    FieldList,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    Rows,
    /// A prepared statement's parameters are done: its columns follow.
    Columns(u64),
    Done,
}

/// Follows the answers on one connection.
#[derive(Debug, Clone)]
pub struct Tracker {
    deprecate_eof: bool,
    state: State,
    /// The rows of the answer in progress are in the binary protocol.
    binary: bool,
}

impl Tracker {
    /// `deprecate_eof`: whether the session negotiated CLIENT_DEPRECATE_EOF.
    pub fn new(deprecate_eof: bool) -> Tracker {
        Tracker {
            deprecate_eof,
            state: State::Idle,
            binary: false,
        }
    }

    /// A command was forwarded: its answer comes next.
    pub fn expect(&mut self, answer: Answer) {
        if answer != Answer::Nothing {
            self.binary = matches!(answer, Answer::BinaryResults | Answer::Fetch);
            self.state = State::First(answer);
        }
    }

    /// Whether the server owes nothing.
    pub fn is_idle(&self) -> bool {
        self.state == State::Idle
    }

    /// The next logical packet of the answer: its payload length and its first bytes (up to
    /// [`HEAD`]).
    pub fn packet(&mut self, len: usize, head: &[u8]) -> Option<Event> {
        let first = head.first().copied();
        match self.state {
            State::Idle => Some(Event::Unexpected),
            State::First(answer) => self.first(answer, len, head),
            State::Definitions { left, after } => {
                if first == Some(0xff) {
                    self.state = State::Idle;
                    return Some(Event::Error);
                }
                let left = left - 1;
                self.state = match (left, self.deprecate_eof) {
                    (0, false) => State::DefinitionsEof(after),
                    (0, true) => self.after(after),
                    _ => State::Definitions { left, after },
                };
                Some(Event::Definition)
            }
            State::DefinitionsEof(after) => {
                if !is_eof(len, head) {
                    self.state = State::Idle;
                    return Some(Event::Unexpected);
                }
                self.state = self.after(after);
                eof_status(head).map(Event::Status)
            }
            State::Rows => match first {
                Some(0xff) => {
                    self.state = State::Idle;
                    Some(Event::Error)
                }
                Some(0xfe) if self.is_terminator(len, head) => {
                    let status = if self.deprecate_eof {
                        ok_status(head)
                    } else {
                        eof_status(head)
                    };
                    self.state = self.after_results(status);
                    status.map(Event::Status)
                }
                _ => Some(Event::Row {
                    binary: self.binary,
                }),
            },
            State::FieldList => match first {
                Some(0xff) => {
                    self.state = State::Idle;
                    Some(Event::Error)
                }
                Some(0xfe) if is_eof(len, head) => {
                    self.state = State::Idle;
                    eof_status(head).map(Event::Status)
                }
                _ => Some(Event::Definition),
            },
        }
    }

    fn first(&mut self, answer: Answer, len: usize, head: &[u8]) -> Option<Event> {
        let first = head.first().copied();
        if first == Some(0xff) {
            self.state = State::Idle;
            return Some(Event::Error);
        }
        match answer {
            Answer::Nothing => Some(Event::Unexpected),
            Answer::Text => {
                self.state = State::Idle;
                None
            }
            Answer::FieldList => {
                self.state = State::FieldList;
                self.packet(len, head)
            }
            Answer::Fetch => {
                self.state = State::Rows;
                self.packet(len, head)
            }
            Answer::Simple => {
                self.state = State::Idle;
                match first {
                    Some(0xfe) if is_eof(len, head) => eof_status(head).map(Event::Status),
                    Some(0x00) | Some(0xfe) => ok_status(head).map(Event::Status),
                    _ => Some(Event::Unexpected),
                }
            }
            Answer::Prepare => {
                if first != Some(0x00) || head.len() < 9 {
                    self.state = State::Idle;
                    return Some(Event::Unexpected);
                }
                let id = u32::from_le_bytes([head[1], head[2], head[3], head[4]]);
                let columns = u16::from_le_bytes([head[5], head[6]]) as u64;
                let params = u16::from_le_bytes([head[7], head[8]]) as u64;
                self.state = match (params, columns) {
                    (0, 0) => State::Idle,
                    (0, c) => State::Definitions {
                        left: c,
                        after: After::Done,
                    },
                    (p, c) => State::Definitions {
                        left: p,
                        after: After::Columns(c),
                    },
                };
                Some(Event::Prepared {
                    id,
                    params: params as u16,
                })
            }
            Answer::Results | Answer::BinaryResults => match first {
                Some(0x00) => {
                    let status = ok_status(head);
                    self.state = self.after_results(status);
                    status.map(Event::Status)
                }
                Some(0xfb) => {
                    // After the file (sent by the client), the same answer: an OK or ERR, and
                    // more result sets if the OK says so.
                    self.state = State::First(Answer::Results);
                    Some(Event::LocalInfile { text: !self.binary })
                }
                _ => match lenenc(head) {
                    Some((count, _)) if count > 0 => {
                        self.state = State::Definitions {
                            left: count,
                            after: After::Rows,
                        };
                        Some(Event::Columns)
                    }
                    _ => {
                        self.state = State::Idle;
                        Some(Event::Unexpected)
                    }
                },
            },
        }
    }

    fn after(&self, after: After) -> State {
        match after {
            After::Rows => State::Rows,
            After::Columns(0) | After::Done => State::Idle,
            After::Columns(c) => State::Definitions {
                left: c,
                after: After::Done,
            },
        }
    }

    /// After a result set's terminator (or an OK): the next result set, or the end.
    fn after_results(&self, status: Option<u16>) -> State {
        match status {
            Some(s) if s & SERVER_MORE_RESULTS_EXISTS != 0 => State::First(if self.binary {
                Answer::BinaryResults
            } else {
                Answer::Results
            }),
            _ => State::Idle,
        }
    }

    fn is_terminator(&self, len: usize, head: &[u8]) -> bool {
        if self.deprecate_eof {
            // An OK with the 0xfe header; a row starting with 0xfe is at least 16 MiB long.
            len < packet_max() && head.first() == Some(&0xfe)
        } else {
            is_eof(len, head)
        }
    }
}

fn packet_max() -> usize {
    super::packet::MAX_CHUNK
}

fn is_eof(len: usize, head: &[u8]) -> bool {
    head.first() == Some(&0xfe) && len < 9
}

/// The status flags of an EOF packet: 0xfe, warnings, status.
fn eof_status(head: &[u8]) -> Option<u16> {
    let b = head.get(3..5)?;
    Some(u16::from_le_bytes([b[0], b[1]]))
}

/// The status flags of an OK packet: header, affected rows, last insert id, status.
pub fn ok_status(head: &[u8]) -> Option<u16> {
    let mut rest = head.get(1..)?;
    for _ in 0..2 {
        let (_, used) = lenenc(rest)?;
        rest = rest.get(used..)?;
    }
    let b = rest.get(..2)?;
    Some(u16::from_le_bytes([b[0], b[1]]))
}

/// The affected-row count of an OK packet (its first length-encoded integer).
pub fn ok_affected_rows(head: &[u8]) -> Option<u64> {
    lenenc(head.get(1..)?).map(|(n, _)| n)
}

/// The error number of an ERR packet.
pub fn err_code(head: &[u8]) -> Option<u16> {
    let b = head.get(1..3)?;
    Some(u16::from_le_bytes([b[0], b[1]]))
}

/// A length-encoded integer and the bytes it used.
fn lenenc(b: &[u8]) -> Option<(u64, usize)> {
    let (&first, rest) = b.split_first()?;
    let take = |n: usize| -> Option<u64> {
        let bytes = rest.get(..n)?;
        let mut v = [0u8; 8];
        v[..n].copy_from_slice(bytes);
        Some(u64::from_le_bytes(v))
    };
    match first {
        0..=0xfa => Some((first as u64, 1)),
        0xfc => Some((take(2)?, 3)),
        0xfd => Some((take(3)?, 4)),
        0xfe => Some((take(8)?, 9)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(status: u16) -> Vec<u8> {
        let mut p = vec![0x00, 0x01, 0x00];
        p.extend(status.to_le_bytes());
        p.extend([0, 0]);
        p
    }

    fn eof(status: u16) -> Vec<u8> {
        let mut p = vec![0xfe, 0, 0];
        p.extend(status.to_le_bytes());
        p
    }

    fn feed(t: &mut Tracker, p: &[u8]) -> Option<Event> {
        t.packet(p.len(), &p[..p.len().min(HEAD)])
    }

    #[test]
    fn a_result_set_with_and_without_eof_packets() {
        for deprecate in [false, true] {
            let mut t = Tracker::new(deprecate);
            t.expect(Answer::Results);
            assert_eq!(feed(&mut t, &[0x02]), Some(Event::Columns), "two columns");
            assert_eq!(feed(&mut t, b"\x03defcolumn one"), Some(Event::Definition));
            assert_eq!(feed(&mut t, b"\x03defcolumn two"), Some(Event::Definition));
            if !deprecate {
                assert_eq!(feed(&mut t, &eof(0x0002)), Some(Event::Status(2)));
            }
            // Rows, one starting with 0x00 (an empty string) and one with 0xfb (NULL).
            let row = Some(Event::Row { binary: false });
            assert_eq!(feed(&mut t, b"\x00\x01x"), row);
            assert_eq!(feed(&mut t, b"\xfb\x01y"), row);
            let end = if deprecate {
                let mut p = ok(0x0202);
                p[0] = 0xfe;
                p
            } else {
                eof(0x0202)
            };
            assert_eq!(feed(&mut t, &end), Some(Event::Status(0x0202)));
            assert!(t.is_idle());
        }
    }

    #[test]
    fn several_result_sets_follow_the_more_results_flag() {
        let mut t = Tracker::new(true);
        t.expect(Answer::Results);
        assert_eq!(
            feed(&mut t, &ok(SERVER_MORE_RESULTS_EXISTS | 2)),
            Some(Event::Status(10))
        );
        assert!(!t.is_idle());
        assert_eq!(feed(&mut t, &[0x01]), Some(Event::Columns));
        assert_eq!(feed(&mut t, b"\x03def"), Some(Event::Definition));
        assert_eq!(feed(&mut t, b"\x011"), Some(Event::Row { binary: false }));
        let mut end = ok(2);
        end[0] = 0xfe;
        assert_eq!(feed(&mut t, &end), Some(Event::Status(2)));
        assert!(t.is_idle());
    }

    #[test]
    fn prepare_answers_give_the_statement_id() {
        for deprecate in [false, true] {
            let mut t = Tracker::new(deprecate);
            t.expect(Answer::Prepare);
            // id 7, one column, two parameters
            let head = [0x00, 7, 0, 0, 0, 1, 0, 2, 0, 0, 0, 0];
            assert_eq!(
                feed(&mut t, &head),
                Some(Event::Prepared { id: 7, params: 2 })
            );
            for _ in 0..2 {
                assert_eq!(feed(&mut t, b"\x03defparam"), Some(Event::Definition));
            }
            if !deprecate {
                assert_eq!(feed(&mut t, &eof(2)), Some(Event::Status(2)));
            }
            assert_eq!(feed(&mut t, b"\x03defcol"), Some(Event::Definition));
            if !deprecate {
                assert_eq!(feed(&mut t, &eof(2)), Some(Event::Status(2)));
            }
            assert!(t.is_idle(), "deprecate_eof {deprecate}");
        }
    }

    #[test]
    fn errors_local_infile_and_simple_answers() {
        let mut t = Tracker::new(true);
        t.expect(Answer::Results);
        assert_eq!(feed(&mut t, b"\xff\x7a\x04#42S02no"), Some(Event::Error));
        assert!(t.is_idle());
        t.expect(Answer::Results);
        assert_eq!(
            feed(&mut t, b"\xfb/etc/passwd"),
            Some(Event::LocalInfile { text: true })
        );
        // The file's answer, then the next result set of a multi-statement.
        assert!(!t.is_idle());
        let more = ok(SERVER_MORE_RESULTS_EXISTS);
        assert_eq!(feed(&mut t, &more), Some(Event::Status(8)));
        assert_eq!(feed(&mut t, &ok(0)), Some(Event::Status(0)));
        assert!(t.is_idle());
        t.expect(Answer::BinaryResults);
        assert_eq!(
            feed(&mut t, b"\xfb/etc/passwd"),
            Some(Event::LocalInfile { text: false })
        );
        t.expect(Answer::Simple);
        assert_eq!(
            feed(&mut t, &ok(SERVER_STATUS_NO_BACKSLASH_ESCAPES)),
            Some(Event::Status(0x200))
        );
        assert_eq!(
            feed(&mut t, &ok(0)),
            Some(Event::Unexpected),
            "nothing owed"
        );
        t.expect(Answer::Nothing);
        assert!(t.is_idle());
    }

    #[test]
    fn binary_rows_are_told_apart() {
        let mut t = Tracker::new(true);
        t.expect(Answer::to(command::COM_STMT_EXECUTE));
        assert_eq!(feed(&mut t, &[0x01]), Some(Event::Columns));
        assert_eq!(feed(&mut t, b"\x03def"), Some(Event::Definition));
        assert_eq!(
            feed(&mut t, b"\x00\x00\x05hello"),
            Some(Event::Row { binary: true })
        );
    }

    #[test]
    fn long_length_encoded_counts_are_read() {
        assert_eq!(lenenc(&[0xfc, 0x10, 0x27]), Some((10_000, 3)));
        assert_eq!(lenenc(&[0xfd, 1, 0, 1]), Some((65_537, 4)));
        assert_eq!(lenenc(&[0xfc, 1]), None);
        assert_eq!(lenenc(&[0xff]), None);
    }
}
