//! The audit trail: every session and statement, what Airlock decided and why, appended to a
//! hash chain in `audit.db` under the state directory. [`record`] is the pure chain,
//! [`store`] the SQLite store and its group-committing writer, [`export`] the formats
//! compliance tools read.

pub mod checkpoint;
pub mod export;
pub mod journal;
pub mod record;
mod segment;
pub mod sessions;
pub mod statement_json;
pub mod store;

use std::io::Write;

use rusqlite::OptionalExtension;
use std::path::Path;

pub use record::{Broken, Event, Head};
pub use store::{Ack, AuditError, AuditLog, Mode};

/// What a verification found: the records checked and the head they lead to, or where the
/// chain (or a checkpoint) says the trail is not what it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub records: u64,
    pub head: Head,
    /// Signed checkpoints that matched the chain.
    pub checkpoints: usize,
    pub broken: Option<String>,
}

/// Walks the whole chain in `dir`'s `audit.db`, and checks against it the checkpoints
/// stored with it and `external` (one kept elsewhere). With `public_key` (hex), every
/// checkpoint must be signed by that key.
pub fn verify(
    dir: &Path,
    external: Option<&checkpoint::Checkpoint>,
    public_key: Option<&str>,
) -> Result<Verified, AuditError> {
    let db = open_existing(dir)?;
    let stored = store::checkpoints(&db)?;
    let mut result = Verified {
        records: 0,
        head: Head::EMPTY,
        checkpoints: 0,
        broken: None,
    };
    for c in stored.iter().chain(external) {
        if let Err(e) = c.check(public_key) {
            result.broken = Some(format!("checkpoint of record {}: {e}", c.seq));
            return Ok(result);
        }
    }
    // Where the trail starts: record 1, or just after a signed prune checkpoint.
    let first: Option<(i64, Vec<u8>)> = db
        .query_row(
            "SELECT seq, prev FROM audit ORDER BY seq LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let mut v = record::Verifier::new();
    if let Some((seq, prev)) = &first
        && *seq > 1
    {
        let start = stored.iter().filter(|c| c.reason == "prune").find_map(|c| {
            c.head()
                .filter(|h| h.seq + 1 == *seq as u64 && h.hash[..] == prev[..])
        });
        match start {
            Some(head) => v.head = head,
            None => {
                result.broken = Some(format!(
                    "records 1 to {} are missing and no signed prune checkpoint accounts for them",
                    seq - 1
                ));
                return Ok(result);
            }
        }
    }
    let start = v.head;
    // The hash of each record a checkpoint names, as the chain has it.
    let wanted: std::collections::HashSet<u64> =
        stored.iter().chain(external).map(|c| c.seq).collect();
    let mut seen = std::collections::HashMap::new();
    let mut broken = None;
    store::read(&db, 0, None, None, |r| {
        if broken.is_none() {
            match v.check(&r) {
                Ok(()) => {
                    result.records += 1;
                    if wanted.contains(&r.seq) {
                        seen.insert(r.seq, r.hash);
                    }
                }
                Err(b) => broken = Some(b.to_string()),
            }
        }
        Ok(())
    })?;
    if broken.is_none() {
        // Records only in the journal so far: the last milliseconds of a running Airlock,
        // or what a crash left for the next start to commit.
        for r in store::journal_tail(dir, v.head) {
            if v.check(&r).is_ok() {
                result.records += 1;
                if wanted.contains(&r.seq) {
                    seen.insert(r.seq, r.hash);
                }
            }
        }
    }
    result.head = v.head;
    if broken.is_some() {
        result.broken = broken;
        return Ok(result);
    }
    for c in stored.iter().chain(external) {
        let Some(vouched) = c.head() else {
            result.broken = Some(format!("checkpoint of record {}: malformed hash", c.seq));
            return Ok(result);
        };
        if c.seq > v.head.seq {
            result.broken = Some(format!(
                "the trail ends at record {} but a checkpoint vouches for record {}: records were cut from the end",
                v.head.seq, c.seq
            ));
            return Ok(result);
        }
        let matches = if c.seq < start.seq {
            // Vouches for records pruned under a signed checkpoint.
            true
        } else if c.seq == start.seq {
            // Where the chain begins: after a prune, or the empty chain.
            vouched.hash == start.hash
        } else {
            seen.get(&c.seq) == Some(&vouched.hash)
        };
        if !matches {
            result.broken = Some(format!(
                "record {} differs from the checkpoint signed at {}: the trail was rewritten",
                c.seq,
                export::time(c.at)
            ));
            return Ok(result);
        }
        result.checkpoints += 1;
    }
    Ok(result)
}

/// Signs a checkpoint of the current head (after checking the chain), stores it with the
/// trail, and returns it.
pub fn checkpoint_now(
    dir: &Path,
    signer: &checkpoint::Signer,
) -> Result<Result<checkpoint::Checkpoint, String>, AuditError> {
    let v = verify(dir, None, Some(&signer.public_key()))?;
    if let Some(broken) = v.broken {
        return Ok(Err(broken));
    }
    let c = signer.sign(v.head, store::now_micros(), "on-demand");
    store::save_checkpoint(&store::open_db(dir)?, &c)?;
    Ok(Ok(c))
}

/// Removes the records older than `before` (microseconds), after signing and storing a
/// checkpoint of the last one removed. Returns how many were removed.
pub fn prune(
    dir: &Path,
    before: i64,
    signer: &checkpoint::Signer,
) -> Result<Result<u64, String>, AuditError> {
    let v = verify(dir, None, Some(&signer.public_key()))?;
    if let Some(broken) = v.broken {
        return Ok(Err(broken));
    }
    let mut db = store::open_db(dir)?;
    let last: Option<(i64, Vec<u8>)> = db
        .query_row(
            "SELECT seq, hash FROM audit WHERE at < ?1 ORDER BY seq DESC LIMIT 1",
            [before],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((seq, hash)) = last else {
        return Ok(Ok(0));
    };
    let head = Head {
        seq: seq as u64,
        hash: hash
            .try_into()
            .map_err(|_| AuditError(format!("record {seq} has a malformed hash")))?,
    };
    let c = signer.sign(head, store::now_micros(), "prune");
    Ok(Ok(store::prune(&mut db, head.seq, &c)?))
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
    let mut head = Head::EMPTY;
    store::read(&db, 0, None, None, |r| {
        head = r.head();
        if since.is_none_or(|s| r.at >= s) && until.is_none_or(|u| r.at < u) {
            n += 1;
            out.write_all(export::line(format, &r).as_bytes())
                .map_err(io)?;
        }
        Ok(())
    })?;
    for r in store::journal_tail(dir, head) {
        if since.is_none_or(|s| r.at >= s) && until.is_none_or(|u| r.at < u) {
            n += 1;
            out.write_all(export::line(format, &r).as_bytes())
                .map_err(io)?;
        }
    }
    out.flush().map_err(io)?;
    Ok(n)
}

/// Every record in `dir`'s trail, in order.
pub fn records(dir: &Path) -> Result<Vec<record::Record>, AuditError> {
    let db = open_existing(dir)?;
    let mut out: Vec<record::Record> = Vec::new();
    store::read(&db, 0, None, None, |r| {
        out.push(r);
        Ok(())
    })?;
    let head = out.last().map_or(Head::EMPTY, record::Record::head);
    out.extend(store::journal_tail(dir, head));
    Ok(out)
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
