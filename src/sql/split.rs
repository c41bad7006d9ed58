//! Splitting a simple-query string into its statements, agreeing with PostgreSQL's own lexer:
//! semicolons inside quoted strings (`'...'`, `E'...'`, `U&'...'`), quoted identifiers,
//! dollar-quoted bodies, line comments and nested block comments do not split, and neither
//! do those inside a SQL-standard function body (`BEGIN ATOMIC ... END`). Built on sqlparser's
//! tokenizer; a string it cannot tokenize (an unterminated quote or comment, say) is an error,
//! so that the caller can fail closed rather than guess.
//!
//! `tests/sql_split_oracle.rs` checks the split against the server itself.

use sqlparser::dialect::{MySqlDialect, PostgreSqlDialect};
use sqlparser::keywords::Keyword;
use sqlparser::tokenizer::{Location, Token, TokenWithSpan, Tokenizer};

use super::Dialect;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot split the statement text: {0}")]
pub struct SplitError(String);

/// One statement of a string: its text and its tokens (the terminating semicolon excluded).
pub struct Piece<'a> {
    pub text: &'a str,
    pub tokens: Vec<TokenWithSpan>,
}

/// The statements in `sql`, each as a slice of it without the terminating semicolon and
/// without surrounding whitespace. Empty statements (`;;`, comments only) are left out, as the
/// server skips them.
/// The tokens of one piece that say something: no white space or comments, nor the `;`
/// that ends it and the end of input.
pub(super) fn significant(tokens: &[TokenWithSpan]) -> Vec<&Token> {
    tokens
        .iter()
        .map(|t| &t.token)
        .filter(|t| !matches!(t, Token::Whitespace(_) | Token::SemiColon | Token::EOF))
        .collect()
}

pub fn split(sql: &str, dialect: Dialect) -> Result<Vec<&str>, SplitError> {
    Ok(split_tokens(sql, dialect)?
        .into_iter()
        .map(|p| p.text)
        .collect())
}

/// [`split`], keeping each statement's tokens so that they need not be made again.
pub fn split_tokens(sql: &str, dialect: Dialect) -> Result<Vec<Piece<'_>>, SplitError> {
    let tokens = match dialect {
        Dialect::Postgres => Tokenizer::new(&PostgreSqlDialect {}, sql)
            .tokenize_with_location()
            .map_err(|e| SplitError(e.to_string()))?,
        Dialect::MySql => Tokenizer::new(&MySqlDialect {}, sql)
            .tokenize_with_location()
            .map_err(|e| SplitError(e.to_string()))?,
    };
    let offsets = Offsets::new(sql);
    let mut statements = Vec::new();
    let mut start: Option<usize> = None;
    let mut current: Vec<TokenWithSpan> = Vec::new();
    let mut blocks = Blocks::default();
    // Whether the previous significant token was an unquoted BEGIN.
    let mut after_begin = false;
    for with_span in tokens {
        let TokenWithSpan { token, span } = &with_span;
        match token {
            Token::EOF => continue,
            Token::Whitespace(_) => {
                if start.is_some() {
                    current.push(with_span);
                }
                continue;
            }
            Token::SemiColon if blocks.depth() == 0 => {
                if let Some(s) = start.take() {
                    let end = offsets.byte(span.start);
                    statements.push(Piece {
                        text: sql[s..end].trim_end(),
                        tokens: std::mem::take(&mut current),
                    });
                }
                blocks = Blocks::default();
                after_begin = false;
                continue;
            }
            _ => {
                if start.is_none() {
                    start = Some(statement_start(sql, offsets.byte(span.start)));
                }
                blocks.see(after_begin, token);
            }
        }
        after_begin = matches!(token, Token::Word(w) if w.quote_style.is_none() && w.keyword == Keyword::BEGIN);
        current.push(with_span);
    }
    if let Some(s) = start {
        let text = sql[s..].trim_end();
        if !text.is_empty() {
            statements.push(Piece {
                text,
                tokens: current,
            });
        }
    }
    Ok(statements)
}

/// Where a statement whose first token is at `at` starts: sqlparser places the first token
/// inside a MySQL `/*! ... */` comment at its `*`, so the text would begin `*!`.
fn statement_start(sql: &str, at: usize) -> usize {
    match at.checked_sub(1) {
        Some(slash) if sql.as_bytes()[slash..].starts_with(b"/*!") => slash,
        _ => at,
    }
}

/// Tracks `BEGIN ATOMIC ... END` bodies, and the `CASE ... END` inside them, whose semicolons
/// belong to the body.
#[derive(Default)]
struct Blocks {
    atomic: usize,
    case: usize,
}

impl Blocks {
    fn depth(&self) -> usize {
        self.atomic
    }

    fn see(&mut self, after_begin: bool, token: &Token) {
        let Token::Word(w) = token else { return };
        if w.quote_style.is_some() {
            return;
        }
        match w.keyword {
            Keyword::ATOMIC if after_begin => self.atomic += 1,
            Keyword::CASE if self.atomic > 0 => self.case += 1,
            Keyword::END if self.case > 0 => self.case -= 1,
            Keyword::END if self.atomic > 0 => self.atomic -= 1,
            _ => {}
        }
    }
}

/// Converts sqlparser's line/column locations (1-based, columns in characters) to byte offsets.
struct Offsets<'a> {
    sql: &'a str,
    line_starts: Vec<usize>,
}

impl<'a> Offsets<'a> {
    fn new(sql: &'a str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(sql.match_indices('\n').map(|(i, _)| i + 1));
        Offsets { sql, line_starts }
    }

    fn byte(&self, at: Location) -> usize {
        let Some(&line_start) = self.line_starts.get((at.line as usize).saturating_sub(1)) else {
            return self.sql.len();
        };
        let column = (at.column as usize).saturating_sub(1);
        self.sql[line_start..]
            .char_indices()
            .nth(column)
            .map_or(self.sql.len(), |(i, _)| line_start + i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pg(sql: &str) -> Vec<&str> {
        split(sql, Dialect::Postgres).unwrap()
    }

    #[test]
    fn splits_on_top_level_semicolons_only() {
        assert_eq!(pg("select 1; select 2"), ["select 1", "select 2"]);
        assert_eq!(pg("select ';' ; select 2;"), ["select ';'", "select 2"]);
        assert_eq!(
            pg("select 'it''s;'; select 2"),
            ["select 'it''s;'", "select 2"]
        );
        assert_eq!(
            pg(r"select E'\';'; select 2"),
            [r"select E'\';'", "select 2"]
        );
        assert_eq!(
            pg(r#"select 1 as "a;b"; select 2"#),
            [r#"select 1 as "a;b""#, "select 2"]
        );
        assert_eq!(
            pg("select $$;$$; select $t$ ; $ $t$"),
            ["select $$;$$", "select $t$ ; $ $t$"]
        );
    }

    #[test]
    fn a_statement_in_a_mysql_executable_comment_keeps_the_comment_whole() {
        let my = |sql| split(sql, Dialect::MySql).unwrap();
        assert_eq!(my("/*! SELECT 1 */"), ["/*! SELECT 1 */"]);
        assert_eq!(
            my("/*!50000 SELECT 1 */; SELECT 2"),
            ["/*!50000 SELECT 1 */", "SELECT 2"]
        );
        assert_eq!(my("SELECT /*! 1 */"), ["SELECT /*! 1 */"]);
        // A first token after a multibyte character: no slicing inside it.
        for sql in ["\u{a0}SELECT 1", "\u{2003}SELECT 1", "\u{e9}; SELECT 1"] {
            let _ = split(sql, Dialect::MySql);
            let _ = split(sql, Dialect::Postgres);
        }
    }

    #[test]
    fn comments_do_not_split_and_empty_statements_vanish() {
        assert_eq!(
            pg("select 1 /* ; /* nested ; */ ; */; select 2"),
            ["select 1 /* ; /* nested ; */ ; */", "select 2"]
        );
        assert_eq!(
            pg("select 1 -- ; not a split\n; select 2"),
            ["select 1 -- ; not a split", "select 2"]
        );
        assert_eq!(pg(";; select 1 ;; -- only a comment\n;"), ["select 1"]);
        assert!(pg("  -- nothing\n").is_empty());
    }

    #[test]
    fn sql_standard_function_bodies_hold_their_semicolons() {
        let sql = "create function f() returns int language sql begin atomic select 1; select case when true then 2 end; end; select f()";
        assert_eq!(
            pg(sql),
            [
                "create function f() returns int language sql begin atomic select 1; select case when true then 2 end; end",
                "select f()"
            ]
        );
        assert_eq!(
            pg("begin; select 1; commit"),
            ["begin", "select 1", "commit"],
            "a transaction block is not a body"
        );
    }

    #[test]
    fn multibyte_text_keeps_its_boundaries() {
        assert_eq!(
            pg("select 'ünï;cødé'; select '日本'"),
            ["select 'ünï;cødé'", "select '日本'"]
        );
        assert_eq!(
            pg("select 1;\n  select 'ß'\n;select 3"),
            ["select 1", "select 'ß'", "select 3"]
        );
    }

    /// Random strings of the characters that matter to lexing: never a panic, and every piece
    /// is a non-empty slice of the input, in order.
    #[test]
    fn random_text_never_panics_and_pieces_are_slices() {
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};
        let alphabet: Vec<char> = "';\"$/*-\n \\aEU&tx1(ü".chars().collect();
        let mut rng = StdRng::seed_from_u64(11);
        for _ in 0..5000 {
            let len = rng.random_range(0..40);
            let sql: String = (0..len)
                .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                .collect();
            if let Ok(pieces) = split(&sql, Dialect::Postgres) {
                let mut from = 0;
                for piece in pieces {
                    assert!(!piece.is_empty(), "{sql:?}");
                    let at = sql[from..]
                        .find(piece)
                        .expect("a slice of the input, in order")
                        + from;
                    from = at + piece.len();
                }
            }
        }
    }

    #[test]
    fn unterminated_text_is_an_error() {
        for bad in [
            "select 'open",
            "select $$ open",
            "select 1 /* open",
            r#"select "open"#,
        ] {
            assert!(split(bad, Dialect::Postgres).is_err(), "{bad:?}");
        }
    }
}
