//! Client character sets in which a multibyte character may end in an ASCII byte (a quote, a
//! backslash, a semicolon ...). Airlock reads statement text as UTF-8, where every byte of a
//! multibyte character is past ASCII; under these sets the server may split the same bytes
//! elsewhere (`E'<SJIS char ending in 0x5C>'; DROP TABLE t; --'` is one string to a UTF-8
//! reader and a string then a DROP to PostgreSQL with client_encoding SJIS). Pure.

/// PostgreSQL client encodings (and their aliases) and MySQL character sets of that kind,
/// compared without case, `-` or `_`.
const SPLITS_ASCII: &[&str] = &[
    "sjis",
    "shiftjis",
    "mskanji",
    "win932",
    "windows932",
    "cp932",
    "shiftjis2004",
    "big5",
    "win950",
    "windows950",
    "cp950",
    "gbk",
    "win936",
    "windows936",
    "cp936",
    "gb18030",
    "uhc",
    "win949",
    "windows949",
    "cp949",
    "johab",
];

/// Encodings in which Airlock's reading of text is the server's: UTF-8, and those whose
/// every byte past ASCII is past ASCII in any character (single-byte sets, EUC).
const SAFE: &[&str] = &[
    // PostgreSQL
    "utf8",
    "unicode",
    "sqlascii",
    "latin1",
    "latin2",
    "latin3",
    "latin4",
    "latin5",
    "latin6",
    "latin7",
    "latin8",
    "latin9",
    "latin10",
    "iso88595",
    "iso88596",
    "iso88597",
    "iso88598",
    "win866",
    "win874",
    "win1250",
    "win1251",
    "win1252",
    "win1253",
    "win1254",
    "win1255",
    "win1256",
    "win1257",
    "win1258",
    "koi8r",
    "koi8u",
    "eucjp",
    "eucjis2004",
    "euckr",
    "euccn",
    "euctw",
    "muleinternal",
    // MySQL and MariaDB
    "utf8mb4",
    "utf8mb3",
    "ascii",
    "binary",
    "cp1250",
    "cp1251",
    "cp1256",
    "cp1257",
    "cp850",
    "cp852",
    "cp866",
    "dec8",
    "greek",
    "hebrew",
    "hp8",
    "keybcs2",
    "macce",
    "macroman",
    "swe7",
    "tis620",
    "armscii8",
    "geostd8",
    "ujis",
    "eucjpms",
    "gb2312",
];

fn normal(name: &str) -> String {
    name.chars()
        .filter(|c| !matches!(c, '-' | '_' | '\'' | '"' | '`'))
        .flat_map(char::to_lowercase)
        .collect()
}

/// Whether client encoding `name` may end a multibyte character in an ASCII byte.
pub fn splits_ascii(name: &str) -> bool {
    SPLITS_ASCII.contains(&normal(name).as_str())
}

/// Whether `name` is an encoding Airlock knows reads text as it does.
pub fn known_safe(name: &str) -> bool {
    SAFE.contains(&normal(name).as_str())
}

/// Whether MySQL collation id `id` (the handshake's) is of such a character set: big5, sjis,
/// gbk, cp932 or gb18030.
pub fn mysql_collation_splits_ascii(id: u8) -> bool {
    matches!(id, 1 | 84 | 13 | 88 | 28 | 87 | 95 | 96 | 248 | 249 | 250)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_are_named_in_any_spelling() {
        assert!(splits_ascii("SJIS") && splits_ascii("Shift_JIS") && splits_ascii("'gbk'"));
        assert!(!splits_ascii("UTF8") && !splits_ascii("EUC_JP") && !splits_ascii("LATIN1"));
        assert!(known_safe("UTF-8") && known_safe("EUC_JP") && !known_safe("SJIS"));
        assert!(mysql_collation_splits_ascii(28) && !mysql_collation_splits_ascii(45));
    }
}
