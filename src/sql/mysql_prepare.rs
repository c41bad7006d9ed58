//! MySQL's SQL-level `PREPARE name FROM 'text'`, which sqlparser does not read: the text is
//! classified as the statement the name now holds, and judged at each `EXECUTE name`. A
//! PREPARE from a variable or an expression (`FROM @sql`) is dynamic: what the name holds
//! cannot be read, so both the PREPARE and every later EXECUTE of the name are unknown.
//! Pure.

use sqlparser::keywords::Keyword;
use sqlparser::tokenizer::{Token, TokenWithSpan};

/// What a `PREPARE name FROM ...` says, read off its tokens.
pub(super) struct PrepareFrom {
    /// As MySQL names it: statement names are not case-sensitive.
    pub name: String,
    /// The statement text, when it is one string literal (already unescaped by the
    /// tokenizer, as MySQL reads it with backslash escapes on); `None` for anything else.
    pub text: Option<String>,
}

/// `Some` if `tokens` are a `PREPARE name FROM ...`.
pub(super) fn prepare_from(tokens: &[TokenWithSpan]) -> Option<PrepareFrom> {
    let mut significant = tokens
        .iter()
        .map(|t| &t.token)
        .filter(|t| !matches!(t, Token::Whitespace(_)));
    let keyword = |t: Option<&Token>, k: Keyword| matches!(t, Some(Token::Word(w)) if w.keyword == k && w.quote_style.is_none());
    if !keyword(significant.next(), Keyword::PREPARE) {
        return None;
    }
    let Some(Token::Word(name)) = significant.next() else {
        return None;
    };
    if !keyword(significant.next(), Keyword::FROM) {
        return None;
    }
    let rest: Vec<&Token> = significant
        .filter(|t| !matches!(t, Token::SemiColon | Token::EOF))
        .collect();
    let text = match rest.as_slice() {
        [Token::SingleQuotedString(s) | Token::DoubleQuotedString(s)] => Some(s.clone()),
        _ => None,
    };
    Some(PrepareFrom {
        name: name.value.to_lowercase(),
        text,
    })
}

/// The name a `DROP PREPARE name` (MySQL's synonym for `DEALLOCATE PREPARE`, which
/// sqlparser does not read) deallocates, as MySQL names it.
pub(super) fn drop_prepare(tokens: &[TokenWithSpan]) -> Option<String> {
    let significant = super::split::significant(tokens);
    let keyword = |t: &Token, k: Keyword| matches!(t, Token::Word(w) if w.keyword == k && w.quote_style.is_none());
    match significant.as_slice() {
        [drop, prepare, Token::Word(name)]
            if keyword(drop, Keyword::DROP) && keyword(prepare, Keyword::PREPARE) =>
        {
            Some(name.value.to_lowercase())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::Dialect;
    use super::super::classify::{
        Classified, Kind, Prepared, PreparedStatements, classify_in_session,
    };

    fn run(sql: &str, prepared: &mut Prepared) -> Vec<Classified> {
        classify_in_session(sql, Dialect::MySql, prepared)
    }

    #[test]
    fn the_text_of_a_prepare_is_what_its_execute_runs() {
        let mut p = Prepared::default();
        let prepare = run("PREPARE Wipe FROM 'DELETE FROM t'", &mut p);
        assert_eq!(prepare[0].kind, Kind::Session);
        assert!(prepare[0].findings.is_empty());
        let execute = run("EXECUTE wipe", &mut p);
        assert_eq!(execute[0].kind, Kind::Write);
        assert!(execute[0].has("delete_without_where"));
        // Quotes in the text are MySQL's: unescaped as the server reads them.
        run(
            "PREPARE q FROM 'SELECT * FROM t WHERE name = ''x'''",
            &mut p,
        );
        assert_eq!(p.lookup("q")[0].kind, Kind::Read);
        run("PREPARE two FROM 'SELECT 1; DELETE FROM t'", &mut p);
        assert_eq!(p.lookup("two")[0].kind, Kind::Unknown);
    }

    #[test]
    fn drop_prepare_forgets_the_name_as_deallocate_does() {
        for forget in [
            "DROP PREPARE Wipe",
            "DEALLOCATE PREPARE `WIPE`",
            "drop prepare `wipe`;",
        ] {
            let mut p = Prepared::default();
            run("PREPARE wipe FROM 'DELETE FROM t'", &mut p);
            let dropped = run(forget, &mut p);
            assert_eq!(dropped[0].kind, Kind::Session, "{forget}");
            assert!(dropped[0].findings.is_empty(), "{forget}");
            assert!(p.lookup("wipe").is_empty(), "{forget}");
        }
        // Not a statement name: unknown as before.
        let mut p = Prepared::default();
        assert_eq!(run("DROP PREPARE a b", &mut p)[0].kind, Kind::Unknown);
    }

    #[test]
    fn a_prepare_from_a_variable_is_unknown_and_so_is_its_execute() {
        let mut p = Prepared::default();
        run("PREPARE s FROM 'SELECT 1'", &mut p);
        let prepare = run("PREPARE s FROM @sql", &mut p);
        assert_eq!(prepare[0].kind, Kind::Unknown);
        assert!(prepare[0].has("dynamic_prepare"));
        let execute = run("EXECUTE s", &mut p);
        assert_eq!(
            execute[0].kind,
            Kind::Unknown,
            "not the SELECT it held before"
        );
    }
}
