//! Holding a statement inside a live session, for both listeners: the ticket is opened, the
//! client is told (where its protocol allows), and the session waits for the decision while
//! still watching the client, so a client that leaves abandons its ticket at once.

use std::pin::Pin;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::ReadHalf;
use tokio::sync::futures::Notified;

use crate::approval::ticket::Ticket;
use crate::approval::{Approvals, Outcome};
use crate::inspect::{Denial, Hold};
use crate::net::stream::{Stream, read_more};

/// How a hold ended.
#[derive(Debug)]
pub enum HoldEnd {
    /// Forward exactly the held message.
    Approved,
    /// Tell the client this instead.
    Refused(Denial),
    /// The client left; the ticket is abandoned and the statement never runs.
    ClientGone,
    /// The client withdrew it (a PostgreSQL CancelRequest); the ticket is abandoned.
    Cancelled,
}

/// Holds `hold` until it is decided. `told` is called once the ticket exists (to tell the
/// client). Meanwhile bytes the client sends are kept in `buf` (up to `limit` bytes), and
/// a closed connection ends the wait.
pub async fn wait(
    approvals: &Arc<Approvals>,
    hold: Hold,
    from: &mut ReadHalf<Stream>,
    buf: &mut BytesMut,
    limit: usize,
    cancel: Option<&tokio::sync::Notify>,
    told: impl FnOnce(&Ticket),
) -> HoldEnd {
    let refusal = hold.refusal;
    // Listen for a CancelRequest before the ticket exists, and through the whole wait: the
    // registry wakes only those already listening, and a client may cancel as soon as it
    // sees the ticket.
    let mut cancelled = std::pin::pin!(cancel.map(tokio::sync::Notify::notified));
    if let Some(listening) = cancelled.as_mut().as_pin_mut() {
        listening.enable();
    }
    let mut held = match approvals.hold(hold.request).await {
        Ok(held) => held,
        Err(e) => {
            tracing::error!(error = %e, "cannot hold a statement for approval; refusing it");
            return HoldEnd::Refused(Denial {
                message: "Airlock could not record this statement for approval, so it did not \
                          run it"
                    .into(),
                detail: Some(refusal.message),
                hint: Some(
                    "try again; an Airlock administrator should check the state directory".into(),
                ),
            });
        }
    };
    told(&held.ticket);
    loop {
        tokio::select! {
            outcome = held.decision() => {
                return match outcome {
                    Outcome::Approved => HoldEnd::Approved,
                    other => HoldEnd::Refused(refused(&held.ticket, other)),
                };
            }
            read = read_more(from, buf, 0), if buf.len() < limit => {
                if read.is_err() {
                    held.abandon("the client left while it was held").await;
                    return HoldEnd::ClientGone;
                }
            }
            () = until_cancelled(cancelled.as_mut()) => {
                held.abandon("the client cancelled it while it was held").await;
                return HoldEnd::Cancelled;
            }
        }
    }
}

async fn until_cancelled(cancelled: Pin<&mut Option<Notified<'_>>>) {
    match cancelled.as_pin_mut() {
        Some(notified) => notified.await,
        None => std::future::pending().await,
    }
}

/// The client's error for a held statement that will not run.
fn refused(ticket: &Ticket, outcome: Outcome) -> Denial {
    let id = ticket.id;
    let detail = Some(format!(
        "rule: {}; kind: {}",
        ticket.request.rule, ticket.request.kind
    ));
    match outcome {
        Outcome::Denied { by, reason } => Denial {
            message: format!("Airlock: {by} denied this statement (ticket {id}): {reason}"),
            detail,
            hint: Some(format!(
                "change the statement, or ask {by} or another approver about ticket {id}"
            )),
        },
        Outcome::Expired => Denial {
            message: format!(
                "Airlock: nobody approved this statement in time (ticket {id} timed out)"
            ),
            detail,
            hint: Some(format!(
                "ask a member of {} to approve it while it waits, then run it again",
                ticket.stage_approvers().join(" or ")
            )),
        },
        Outcome::Failed(e) => Denial {
            message: format!("Airlock could not decide ticket {id}, so the statement did not run"),
            detail: Some(e),
            hint: Some("run it again; an Airlock administrator should check the log".into()),
        },
        Outcome::Approved => unreachable!("an approved statement is not refused"),
    }
}

/// What a client is told when its statement is held.
pub fn held_message(ticket: &Ticket) -> String {
    let left = (ticket.deadline - crate::approval::hub::now()).max(0);
    format!(
        "held for approval: ticket {}, approvers {}, expires in {}",
        ticket.id,
        ticket.stage_approvers().join(", "),
        duration(left)
    )
}

fn duration(secs: i64) -> String {
    match secs {
        s if s >= 3600 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s >= 60 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}
