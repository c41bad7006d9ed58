//! The admin HTTP API: JSON over HTTP/1 for approvers (and the `airlock approvals` CLI).
//! Every call but `/api/health` needs `Authorization: Bearer <token>`, a token whose SHA-256
//! the config lists under `[[approvers]]`.
//!
//! | method and path | what |
//! |---|---|
//! | `GET /api/approvals?state=pending&limit=100` | tickets, newest first |
//! | `GET /api/approvals/{id}` | one ticket and its history |
//! | `POST /api/approvals/{id}/approve`, optionally with `{"scope": "once" \| "session" \| "30m"}` | approve it as the caller; a scope also lets through the same session's statements that the same rule holds, for the rest of the session or N minutes |
//! | `POST /api/approvals/{id}/deny` with `{"reason": "..."}` | deny it |
//! | `GET /api/approvals/changes?since=V&wait_secs=30` | waits until something changes after version `V`, then the open tickets and the new version |
//! | `GET /api/audit/export?format=jsonl\|csv\|ocsf&since=T&until=T` | the audit trail's records of a period, for an `[[auditors]]` token only |

pub mod client;

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::approval::hub::DecideError;
use crate::approval::ticket::{Refused, Scope, State as TicketState};
use crate::approval::{Approvals, store::StoreError};
use crate::config::{ApproverConfig, AuditorConfig};

/// An approver the config knows.
#[derive(Debug, Clone)]
pub struct Approver {
    pub name: String,
    pub groups: Vec<String>,
    token_sha256: [u8; 32],
}

/// What the API serves.
pub struct Admin {
    approvals: Arc<Approvals>,
    approvers: Vec<Approver>,
    /// Token hashes of those who may export the audit trail, and where it is.
    auditors: Vec<(String, [u8; 32])>,
    audit_dir: Option<std::path::PathBuf>,
}

/// A new random API token (32 bytes, URL-safe base64).
pub fn new_token() -> String {
    use base64::Engine;
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// SHA-256 of a token, as the config stores it.
pub fn token_hash(token: &str) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    digest.as_ref().try_into().expect("SHA-256 is 32 bytes")
}

fn parse_hex32(hex: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if hex.len() != 64 {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl Admin {
    pub fn new(approvals: Arc<Approvals>, approvers: &[ApproverConfig]) -> Admin {
        let approvers = approvers
            .iter()
            .filter_map(|a| {
                Some(Approver {
                    name: a.name.clone(),
                    groups: a.groups.clone(),
                    token_sha256: parse_hex32(&a.token_sha256)?,
                })
            })
            .collect();
        Admin {
            approvals,
            approvers,
            auditors: Vec::new(),
            audit_dir: None,
        }
    }

    /// The API, also serving exports of the audit trail in `dir` to `auditors`.
    pub fn with_audit(mut self, dir: &std::path::Path, auditors: &[AuditorConfig]) -> Admin {
        self.audit_dir = Some(dir.to_owned());
        self.auditors = auditors
            .iter()
            .filter_map(|a| Some((a.name.clone(), parse_hex32(&a.token_sha256)?)))
            .collect();
        self
    }

    /// The auditor whose token this is (constant time, every auditor checked).
    fn auditor(&self, token: &str) -> Option<&str> {
        let hash = token_hash(token);
        let mut found = None;
        for (name, h) in &self.auditors {
            if bool::from(h.ct_eq(&hash)) {
                found = Some(name.as_str());
            }
        }
        found
    }

    /// The approver whose token this is (compared in constant time, every approver checked).
    fn approver(&self, token: &str) -> Option<&Approver> {
        let hash = token_hash(token);
        let mut found = None;
        for a in &self.approvers {
            if bool::from(a.token_sha256.ct_eq(&hash)) {
                found = Some(a);
            }
        }
        found
    }
}

/// Serves the API on `listener` until `shutdown` says so.
pub async fn serve(listener: TcpListener, admin: Arc<Admin>, mut shutdown: watch::Receiver<bool>) {
    let stop = async move {
        while !*shutdown.borrow_and_update() {
            if shutdown.changed().await.is_err() {
                break;
            }
        }
    };
    if let Err(e) = axum::serve(listener, router(admin))
        .with_graceful_shutdown(stop)
        .await
    {
        tracing::error!(error = %e, "the admin API stopped");
    }
}

pub fn router(admin: Arc<Admin>) -> Router {
    Router::new()
        .route("/api/health", get(|| async { Json(json!({"ok": true})) }))
        .route("/api/approvals", get(list))
        .route("/api/approvals/changes", get(changes))
        .route("/api/approvals/{id}", get(show))
        .route("/api/approvals/{id}/approve", post(approve))
        .route("/api/approvals/{id}/deny", post(deny))
        .route("/api/audit/export", get(audit_export))
        .with_state(admin)
}

/// An API error: a status and a JSON body naming the cause and the fix.
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "admin API: store error");
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

impl From<DecideError> for ApiError {
    fn from(e: DecideError) -> Self {
        match e {
            DecideError::Store(e) => e.into(),
            DecideError::Refused(r) => {
                let status = match r {
                    Refused::NoSuchTicket(_) => StatusCode::NOT_FOUND,
                    Refused::Closed { .. } | Refused::AlreadyApproved(_) => StatusCode::CONFLICT,
                    Refused::OwnStatement(_) | Refused::NotAnApprover { .. } => {
                        StatusCode::FORBIDDEN
                    }
                };
                ApiError(status, r.to_string())
            }
        }
    }
}

/// The caller, from its bearer token.
pub struct Caller(Approver);

impl FromRequestParts<Arc<Admin>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, admin: &Arc<Admin>) -> Result<Self, ApiError> {
        let token = bearer(parts).ok_or_else(|| {
            ApiError(
                StatusCode::UNAUTHORIZED,
                "send Authorization: Bearer <token> with an approver's token (see `airlock token`)"
                    .into(),
            )
        })?;
        match admin.approver(token.trim()) {
            Some(a) => Ok(Caller(a.clone())),
            None => Err(ApiError(
                StatusCode::UNAUTHORIZED,
                "the token is not any approver's; check [[approvers]] token_sha256 in the config"
                    .into(),
            )),
        }
    }
}

fn bearer(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// An auditor, from its bearer token.
pub struct AuditorCaller(String);

impl FromRequestParts<Arc<Admin>> for AuditorCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, admin: &Arc<Admin>) -> Result<Self, ApiError> {
        match bearer(parts).and_then(|t| admin.auditor(t)) {
            Some(name) => Ok(AuditorCaller(name.to_owned())),
            None => Err(ApiError(
                StatusCode::UNAUTHORIZED,
                "exports need an auditor's token: send Authorization: Bearer <token> with a token \
                 whose SHA-256 the config lists under [[auditors]] (see `airlock token`)"
                    .into(),
            )),
        }
    }
}

#[derive(Deserialize)]
struct ExportQuery {
    format: Option<String>,
    since: Option<String>,
    until: Option<String>,
}

/// The records of a period in the asked format (built whole, then sent).
async fn audit_export(
    State(admin): State<Arc<Admin>>,
    AuditorCaller(auditor): AuditorCaller,
    Query(q): Query<ExportQuery>,
) -> Result<Response, ApiError> {
    use crate::audit::export::{Format, parse_time};
    let bad = |what: String| ApiError(StatusCode::BAD_REQUEST, what);
    let (format, content_type) = match q.format.as_deref().unwrap_or("jsonl") {
        "jsonl" => (Format::Jsonl, "application/x-ndjson"),
        "csv" => (Format::Csv, "text/csv"),
        "ocsf" => (Format::Ocsf, "application/x-ndjson"),
        other => return Err(bad(format!("format {other:?}: use jsonl, csv or ocsf"))),
    };
    let time = |t: &Option<String>| -> Result<Option<i64>, ApiError> {
        t.as_deref()
            .map(|t| {
                parse_time(t).ok_or_else(|| {
                    bad(format!(
                        "time {t:?}: use Unix seconds, YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ"
                    ))
                })
            })
            .transpose()
    };
    let (since, until) = (time(&q.since)?, time(&q.until)?);
    let Some(dir) = admin.audit_dir.clone() else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            "this Airlock keeps no audit trail".into(),
        ));
    };
    tracing::info!(auditor = %auditor, "audit export");
    let body = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        crate::audit::export(&dir, format, since, until, &mut out).map(|_| out)
    })
    .await
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(([(axum::http::header::CONTENT_TYPE, content_type)], body).into_response())
}

#[derive(Deserialize)]
struct ListQuery {
    state: Option<String>,
    limit: Option<usize>,
}

fn state_of(s: Option<&str>) -> Result<Option<TicketState>, ApiError> {
    s.map(|s| {
        TicketState::parse(s).ok_or_else(|| {
            ApiError(
                StatusCode::BAD_REQUEST,
                format!(
                    "unknown state {s:?}; use pending, escalated, approved, denied, expired or abandoned"
                ),
            )
        })
    })
    .transpose()
}

async fn list(
    State(admin): State<Arc<Admin>>,
    _caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let state = state_of(q.state.as_deref())?;
    let tickets = admin
        .approvals
        .list(state, q.limit.unwrap_or(100).min(1000))
        .await?;
    Ok(Json(json!({ "tickets": tickets })))
}

async fn show(
    State(admin): State<Arc<Admin>>,
    _caller: Caller,
    Path(id): Path<i64>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let ticket =
        admin.approvals.get(id).await?.ok_or_else(|| {
            ApiError(StatusCode::NOT_FOUND, format!("ticket {id} does not exist"))
        })?;
    let events = admin.approvals.events(id).await?;
    Ok(Json(json!({ "ticket": ticket, "events": events })))
}

#[derive(Deserialize)]
struct ApproveBody {
    scope: Option<String>,
}

async fn approve(
    State(admin): State<Arc<Admin>>,
    Caller(who): Caller,
    Path(id): Path<i64>,
    body: Option<Json<ApproveBody>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let scope = match body.and_then(|Json(b)| b.scope) {
        None => Scope::Once,
        Some(s) => Scope::parse(&s).ok_or_else(|| {
            ApiError(
                StatusCode::BAD_REQUEST,
                format!("unknown scope {s:?}; use once, session, or minutes such as 30m"),
            )
        })?,
    };
    let ticket = admin
        .approvals
        .approve(id, who.name, who.groups, scope)
        .await?;
    Ok(Json(json!({ "ticket": ticket })))
}

#[derive(Deserialize)]
struct DenyBody {
    reason: String,
}

async fn deny(
    State(admin): State<Arc<Admin>>,
    Caller(who): Caller,
    Path(id): Path<i64>,
    body: Option<Json<DenyBody>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let reason = body
        .map(|Json(b)| b.reason.trim().to_owned())
        .filter(|r| !r.is_empty())
        .ok_or_else(|| {
            ApiError(
                StatusCode::BAD_REQUEST,
                "a denial needs a reason: send {\"reason\": \"...\"}; the client is told it".into(),
            )
        })?;
    let ticket = admin
        .approvals
        .deny(id, who.name, who.groups, reason)
        .await?;
    Ok(Json(json!({ "ticket": ticket })))
}

#[derive(Deserialize)]
struct ChangesQuery {
    since: Option<u64>,
    wait_secs: Option<u64>,
}

async fn changes(
    State(admin): State<Arc<Admin>>,
    _caller: Caller,
    Query(q): Query<ChangesQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let mut watch = admin.approvals.watch();
    let since = q.since.unwrap_or(0);
    let wait = Duration::from_secs(q.wait_secs.unwrap_or(30).min(300));
    let _ = tokio::time::timeout(wait, watch.wait_for(|v| *v > since)).await;
    let version = *watch.borrow();
    let mut open = admin
        .approvals
        .list(Some(TicketState::Pending), 1000)
        .await?;
    open.extend(
        admin
            .approvals
            .list(Some(TicketState::Escalated), 1000)
            .await?,
    );
    Ok(Json(json!({ "version": version, "tickets": open })))
}
