//! The audit trail: every session and statement, what Airlock decided and why, appended to a
//! hash chain in `audit.db` under the state directory. [`record`] is the pure chain,
//! [`store`] the SQLite store and its group-committing writer, [`export`] the formats
//! compliance tools read.

pub mod export;
pub mod record;
pub mod store;

use std::io::Write;
use std::path::Path;

pub use record::{Broken, Event, Head};
pub use store::{Ack, AuditError, AuditLog, Mode};

/// What a verification found: the records checked and the head they lead to, or where the
/// chain breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub records: u64,
    pub head: Head,
    pub broken: Option<Broken>,
}

/// Walks the whole chain in `dir`'s `audit.db`.
pub fn verify(dir: &Path) -> Result<Verified, AuditError> {
    let db = open_existing(dir)?;
    let mut v = record::Verifier::new();
    let mut broken = None;
    let mut records = 0;
    store::read(&db, 0, None, None, |r| {
        if broken.is_none() {
            match v.check(&r) {
                Ok(()) => records += 1,
                Err(b) => broken = Some(b),
            }
        }
        Ok(())
    })?;
    Ok(Verified {
        records,
        head: v.head,
        broken,
    })
}

/// Writes the records of `[since, until)` (microseconds) in `format` to `out`; returns how
/// many.
pub fn export(
    dir: &Path,
    format: export::Format,
    since: Option<i64>,
    until: Option<i64>,
    out: &mut impl Write,
) -> Result<u64, AuditError> {
    let db = open_existing(dir)?;
    let io = |e: std::io::Error| AuditError(format!("cannot write the export: {e}"));
    if format == export::Format::Csv {
        out.write_all(export::CSV_HEADER.as_bytes()).map_err(io)?;
    }
    let mut n = 0;
    store::read(&db, 0, since, until, |r| {
        n += 1;
        out.write_all(export::line(format, &r).as_bytes())
            .map_err(io)
    })?;
    out.flush().map_err(io)?;
    Ok(n)
}

fn open_existing(dir: &Path) -> Result<rusqlite::Connection, AuditError> {
    if !dir.join("audit.db").exists() {
        return Err(AuditError(format!(
            "no audit.db in {}: point --state-dir at Airlock's [state] dir",
            dir.display()
        )));
    }
    store::open_db(dir)
}
