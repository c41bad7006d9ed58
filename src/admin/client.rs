//! The `airlock approvals` command's side of the admin API: blocking HTTP calls, and the
//! tickets printed for people.

use serde_json::Value;

/// Where the API is and who is calling.
pub struct Client {
    pub url: String,
    pub token: String,
}

impl Client {
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.url.trim_end_matches('/'));
        let auth = format!("Bearer {}", self.token);
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .new_agent();
        let response = match (method, body) {
            ("POST", Some(body)) => agent
                .post(&url)
                .header("Authorization", &auth)
                .send_json(body),
            ("POST", None) => agent.post(&url).header("Authorization", &auth).send_empty(),
            _ => agent.get(&url).header("Authorization", &auth).call(),
        };
        let mut response = response
            .map_err(|e| anyhow::anyhow!("cannot reach the admin API at {}: {e}", self.url))?;
        let status = response.status();
        let value: Value = response
            .body_mut()
            .read_json()
            .map_err(|e| anyhow::anyhow!("the admin API answered {status} without JSON: {e}"))?;
        if !status.is_success() {
            let error = value["error"].as_str().unwrap_or("no reason given");
            anyhow::bail!("{status}: {error}");
        }
        Ok(value)
    }

    pub fn list(&self, state: Option<&str>) -> anyhow::Result<Value> {
        let query = state.map(|s| format!("?state={s}")).unwrap_or_default();
        self.call("GET", &format!("/api/approvals{query}"), None)
    }

    pub fn show(&self, id: i64) -> anyhow::Result<Value> {
        self.call("GET", &format!("/api/approvals/{id}"), None)
    }

    /// Approves ticket `id`, as far as `scope` (`once`, `session`, or minutes as `30m`).
    pub fn approve(&self, id: i64, scope: &str) -> anyhow::Result<Value> {
        let body = serde_json::json!({ "scope": scope });
        self.call("POST", &format!("/api/approvals/{id}/approve"), Some(body))
    }

    pub fn deny(&self, id: i64, reason: &str) -> anyhow::Result<Value> {
        let body = serde_json::json!({ "reason": reason });
        self.call("POST", &format!("/api/approvals/{id}/deny"), Some(body))
    }
}

/// One line per ticket: id, state, who, rule, deadline, statement.
pub fn render_list(value: &Value) -> String {
    let mut out = String::from("ID\tSTATE\tREQUESTER\tRULE\tSTATEMENT\n");
    for t in value["tickets"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\n",
            t["id"],
            t["state"].as_str().unwrap_or(""),
            t["requester"].as_str().unwrap_or(""),
            t["rule"].as_str().unwrap_or(""),
            one_line(t["statement"].as_str().unwrap_or(""), 80),
        ));
    }
    out
}

/// A ticket in full, with its history.
pub fn render_ticket(value: &Value) -> String {
    let t = &value["ticket"];
    let list = |v: &Value| {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    let mut out = format!(
        "ticket {}: {}\nrequester: {} ({}) from {}\nlistener: {}  database: {}\nrule: {}  kind: {}  findings: {}\napprovers: {}  approvals needed: {}\nstatement:\n  {}\n",
        t["id"],
        t["state"].as_str().unwrap_or(""),
        t["requester"].as_str().unwrap_or(""),
        list(&t["groups"]),
        t["client_addr"].as_str().unwrap_or(""),
        t["listener"].as_str().unwrap_or(""),
        t["database"].as_str().unwrap_or(""),
        t["rule"].as_str().unwrap_or(""),
        t["kind"].as_str().unwrap_or(""),
        list(&t["findings"]),
        list(&t["approvers"]),
        t["required"],
        t["statement"].as_str().unwrap_or("").replace('\n', "\n  "),
    );
    for (i, p) in t["params"].as_array().into_iter().flatten().enumerate() {
        let value = p.as_str().unwrap_or("NULL");
        out.push_str(&format!("  ${} = {value}\n", i + 1));
    }
    if let Some(reason) = t["reason"].as_str() {
        out.push_str(&format!("reason: {reason}\n"));
    }
    for e in value["events"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  {}  {}  {}  {}\n",
            utc(e["at"].as_i64().unwrap_or(0)),
            e["event"].as_str().unwrap_or(""),
            e["actor"].as_str().unwrap_or("airlock"),
            e["detail"].as_str().unwrap_or(""),
        ));
    }
    out
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SSZ` (UTC), for people.
pub fn utc(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn one_line(s: &str, max: usize) -> String {
    let flat: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &flat[..i]),
        None => flat,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_dates() {
        assert_eq!(super::utc(0), "1970-01-01 00:00:00Z");
        assert_eq!(super::utc(951_782_400), "2000-02-29 00:00:00Z");
        assert_eq!(super::utc(1_795_643_441), "2026-11-25 21:50:41Z");
    }
}
