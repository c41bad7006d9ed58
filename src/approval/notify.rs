//! Webhooks: each ticket's life announced to the configured URLs, as generic JSON or as a
//! Slack incoming-webhook message. Each hook has its own thread and a bounded queue; the
//! data path only queues (and drops, with a warning, when a hook is that far behind), so a
//! slow or failing receiver never holds up a session. Deliveries are retried with backoff.

use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::Duration;

use serde_json::{Value, json};

use super::ticket::Ticket;
use crate::config::{WebhookConfig, WebhookFormat};

/// Notices a hook may be behind by before new ones are dropped.
const QUEUE: usize = 1024;
/// Attempts per notice, and the first wait between them (doubled after each failure).
const ATTEMPTS: u32 = 5;
const FIRST_RETRY: Duration = Duration::from_millis(500);

/// What happened to a ticket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum What {
    Created,
    Escalated,
    Approved,
    Denied,
    Expired,
    Abandoned,
}

impl What {
    pub fn as_str(self) -> &'static str {
        match self {
            What::Created => "created",
            What::Escalated => "escalated",
            What::Approved => "approved",
            What::Denied => "denied",
            What::Expired => "expired",
            What::Abandoned => "abandoned",
        }
    }
}

/// The configured hooks.
#[derive(Default)]
pub struct Notifier {
    hooks: Vec<Hook>,
}

struct Hook {
    /// The URL without its secret parts, for logs.
    name: String,
    format: WebhookFormat,
    queue: SyncSender<Value>,
}

impl Notifier {
    /// Starts a delivery thread per hook.
    pub fn start(hooks: &[WebhookConfig]) -> Notifier {
        let hooks = hooks
            .iter()
            .map(|hook| {
                let (queue, rx) = sync_channel(QUEUE);
                let url = hook.url.clone();
                let name = redacted(&url);
                std::thread::Builder::new()
                    .name("airlock-webhook".into())
                    .spawn(move || deliver_all(&url, rx))
                    .expect("a thread can be started");
                Hook {
                    name,
                    format: hook.format,
                    queue,
                }
            })
            .collect();
        Notifier { hooks }
    }

    /// Queues a notice of `what` happened to `ticket` for every hook; never blocks.
    pub fn send(&self, what: What, ticket: &Ticket) {
        for hook in &self.hooks {
            match hook.queue.try_send(body(hook.format, what, ticket)) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => tracing::warn!(
                    hook = %hook.name, ticket = ticket.id, event = what.as_str(),
                    "webhook is too far behind; notice dropped"
                ),
                Err(TrySendError::Disconnected(_)) => {}
            }
        }
    }
}

/// The URL without its path and query (where Slack's secret lives), for logs.
fn redacted(url: &str) -> String {
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    let host_end = url[scheme_end..]
        .find('/')
        .map_or(url.len(), |i| scheme_end + i);
    format!("{}/...", &url[..host_end])
}

fn deliver_all(url: &str, rx: Receiver<Value>) {
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .new_agent();
    while let Ok(body) = rx.recv() {
        let mut wait = FIRST_RETRY;
        for attempt in 1..=ATTEMPTS {
            match agent.post(url).send_json(&body) {
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(hook = %redacted(url), attempt, error = %e, "webhook delivery failed");
                    if attempt < ATTEMPTS {
                        std::thread::sleep(wait);
                        wait *= 2;
                    }
                }
            }
        }
    }
}

/// What a hook receives.
pub fn body(format: WebhookFormat, what: What, ticket: &Ticket) -> Value {
    match format {
        WebhookFormat::Json => json!({ "event": what.as_str(), "ticket": ticket }),
        WebhookFormat::Slack => json!({ "text": slack_text(what, ticket) }),
    }
}

fn slack_text(what: What, t: &Ticket) -> String {
    let r = &t.request;
    let findings = if r.findings.is_empty() {
        String::new()
    } else {
        format!(", findings: {}", r.findings.join(", "))
    };
    let head = match what {
        What::Created => format!(
            "Airlock ticket {} is waiting for {}: {} wants to run on {} ({})",
            t.id,
            t.stage_approvers().join(" or "),
            r.requester,
            r.database,
            r.listener
        ),
        What::Escalated => format!(
            "Airlock ticket {} was not decided in time and now waits for {}",
            t.id,
            t.stage_approvers().join(" or ")
        ),
        What::Approved => format!(
            "Airlock ticket {} was approved by {}",
            t.id,
            t.decided_by.as_deref().unwrap_or("?")
        ),
        What::Denied => format!(
            "Airlock ticket {} was denied by {}: {}",
            t.id,
            t.decided_by.as_deref().unwrap_or("?"),
            t.reason.as_deref().unwrap_or("")
        ),
        What::Expired => format!("Airlock ticket {} expired: nobody decided in time", t.id),
        What::Abandoned => format!("Airlock ticket {} was abandoned by its client", t.id),
    };
    let mut text = format!(
        "{head}\n```{}```\nrule: {} (kind {}{findings})",
        r.statement.replace("```", "'''"),
        r.rule,
        r.kind
    );
    if !r.params.is_empty() {
        let params: Vec<String> = r
            .params
            .iter()
            .enumerate()
            .map(|(i, p)| format!("${} = {}", i + 1, p.as_deref().unwrap_or("NULL")))
            .collect();
        text.push_str(&format!("\nparameters: {}", params.join(", ")));
    }
    if t.state.is_open() {
        text.push_str(&format!(
            "\napprove: `airlock approvals approve {id}`  deny: `airlock approvals deny {id} --reason ...`",
            id = t.id
        ));
    }
    text
}
