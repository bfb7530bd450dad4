//! Ollama, over its native API (`server/routes.go`).
//!
//! - Observe: `GET /api/ps` (the loaded runners: `size_vram`, `context_length`, `expires_at`)
//!   and `GET /api/tags` (the downloaded models) in parallel.
//!   *Pinned*: `keep_alive: -1` becomes a session of `math.MaxInt64` ns, so `expires_at` is about
//!   292 years after the last request; an instance whose `expires_at` is more than 100 years
//!   after the server's own `Date` header is pinned. *Unloading*: `keep_alive: 0` sets
//!   `expires_at` to now and unloads once requests drain, and `ollama ps` shows "Stopping..."
//!   while `expires_at` is in the past; we compare with the server's `Date` header too, so our
//!   clock and its clock never have to agree.
//! - Load: `POST /api/generate {model, keep_alive, stream: false}` with no prompt schedules the
//!   runner and answers `done_reason: "load"` once it is loaded; `keep_alive: -1` pins it.
//!   `context_length` goes to `options.num_ctx`, `eval_batch_size` to `options.num_batch`;
//!   flash attention and KV placement are server-wide environment settings (ignored here).
//! - Unload: the same call with `keep_alive: 0` (answers `done_reason: "unload"` at once; VRAM is
//!   freed later, so the plan settles before the next load).
//! - Chat: `POST /api/chat {stream: false}`; durations are nanoseconds.
//! - Pull: `POST /api/pull {stream: true}` streams NDJSON progress; an error is a final
//!   `{"error": ...}` line with status 200.
//!
//! Names: Ollama adds `:latest` to an untagged name, so `llama3.2` and `llama3.2:latest` are the
//! same model.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::observe::driver::{
    self, ChatReply, DesiredNames, DriverError, Endpoint, KeepAlive, LoadOutcome, LoadSettings,
    PullProgress,
};
use crate::observe::http::{Method, Reply, Request};
use crate::observe::openai;
use crate::observe::snapshot::{Instance, InstanceState, NodeObservation, ProbeFailure};

/// An Ollama node.
#[derive(Debug, Clone)]
pub struct Ollama {
    ep: Endpoint,
    names: DesiredNames,
}

/// Whether two names denote the same Ollama model (`name` = `name:latest`).
pub fn same_model(a: &str, b: &str) -> bool {
    a == b || canonical(a) == canonical(b)
}

fn canonical(name: &str) -> String {
    // A tag is a `:` after the last `/` (a registry host may carry a port).
    let last = name.rsplit('/').next().unwrap_or(name);
    if last.contains(':') { name.to_owned() } else { format!("{name}:latest") }
}

/// An `expires_at` at least this far after the server's clock means `keep_alive: -1`.
const PINNED_AFTER_MS: i64 = 100 * 365 * 86_400_000;

impl Ollama {
    pub fn new(ep: Endpoint, names: DesiredNames) -> Ollama {
        Ollama { ep, names }
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.ep
    }

    pub fn endpoint_mut(&mut self) -> &mut Endpoint {
        &mut self.ep
    }

    /// One observation attempt (no canaries; `NodeClient::observe` adds them).
    pub async fn observe(&self) -> NodeObservation {
        let (ps, tags) = tokio::join!(self.ep.get("/api/ps"), self.ep.get("/api/tags"));
        let ps = match ps.and_then(Reply::require_success) {
            Ok(r) => r,
            Err(f) => return driver::down(f),
        };
        let instances = match parse_ps(&ps, &self.names) {
            Ok(i) => i,
            Err(f) => return driver::down(f),
        };
        let mut obs = driver::up(instances, ps.latency);
        match tags.and_then(Reply::require_success).and_then(|r| parse_tags(&r, &self.names)) {
            Ok(available) => obs.available = Some(available),
            Err(f) => obs.detail = Some(format!("model list unavailable: {f}")),
        }
        obs
    }

    /// Loads a model by a generate request without a prompt.
    pub async fn load(
        &self,
        s: &LoadSettings,
        timeout: Duration,
    ) -> Result<LoadOutcome, DriverError> {
        let mut body = Map::new();
        body.insert("model".into(), json!(s.model));
        body.insert("stream".into(), json!(false));
        if let Some(k) = keep_alive_json(s.keep_alive) {
            body.insert("keep_alive".into(), k);
        }
        let mut options = Map::new();
        if let Some(n) = s.context_length {
            options.insert("num_ctx".into(), json!(n));
        }
        if let Some(n) = s.eval_batch_size {
            options.insert("num_batch".into(), json!(n));
        }
        if !options.is_empty() {
            body.insert("options".into(), Value::Object(options));
        }
        let start = tokio::time::Instant::now();
        let r = self
            .ep
            .post("/api/generate", &Value::Object(body), timeout)
            .await
            .map_err(DriverError::request("load"))?;
        if !r.is_success() {
            return Err(driver::load_error(&self.ep, &s.model, &r));
        }
        let done: GenerateDone = r.json().map_err(DriverError::request("load"))?;
        if let Some(e) = done.error {
            let message = self.ep.scrub(&crate::observe::http::truncate(&e, 300));
            return Err(if driver::is_out_of_memory_message(&message) {
                DriverError::OutOfMemory { model: s.model.clone(), message }
            } else {
                DriverError::LoadFailed { model: s.model.clone(), message }
            });
        }
        let mut ignored = Vec::new();
        if s.flash_attention.is_some() {
            ignored.push("flashAttention");
        }
        if s.num_experts.is_some() {
            ignored.push("numExperts");
        }
        if s.offload_kv_cache_to_gpu.is_some() {
            ignored.push("offloadKvCacheToGpu");
        }
        Ok(LoadOutcome {
            instance_id: s.model.clone(),
            context_length: s.context_length,
            took: start.elapsed(),
            ignored,
        })
    }

    /// Unloads a model (`keep_alive: 0`). A model the server does not know (404) is not loaded
    /// either: that counts as done.
    pub async fn unload(&self, model: &str, timeout: Duration) -> Result<(), DriverError> {
        let body = json!({ "model": model, "keep_alive": 0, "stream": false });
        let r = self
            .ep
            .post("/api/generate", &body, timeout)
            .await
            .map_err(DriverError::request("unload"))?;
        match r.status {
            200..=299 | 404 => Ok(()),
            status => {
                Err(DriverError::Rejected { op: "unload", status, message: self.ep.message_of(&r) })
            }
        }
    }

    /// `POST /api/chat`, non-streaming, greedy, `num_predict = max_tokens`.
    pub async fn chat(
        &self,
        model: &str,
        prompt: &str,
        max_tokens: u32,
        timeout: Duration,
    ) -> Result<ChatReply, DriverError> {
        self.chat_keep(model, prompt, max_tokens, timeout, None).await
    }

    /// `chat` with an explicit keep-alive for the model (the canary passes the instance's own).
    pub async fn chat_keep(
        &self,
        model: &str,
        prompt: &str,
        max_tokens: u32,
        timeout: Duration,
        keep_alive: Option<KeepAlive>,
    ) -> Result<ChatReply, DriverError> {
        let mut body = json!({
            "model": model,
            "messages": [{"role": "user", "content": prompt}],
            "stream": false,
            "options": {"num_predict": max_tokens, "temperature": 0},
        });
        if let Some(k) = keep_alive.and_then(keep_alive_json)
            && let Some(obj) = body.as_object_mut()
        {
            obj.insert("keep_alive".into(), k);
        }
        let r = self
            .ep
            .post("/api/chat", &body, timeout)
            .await
            .map_err(DriverError::request("chat"))?;
        if !r.is_success() {
            return Err(DriverError::Rejected {
                op: "chat",
                status: r.status,
                message: self.ep.message_of(&r),
            });
        }
        parse_chat(&r).map_err(DriverError::request("chat"))
    }

    /// `POST /api/pull` with NDJSON progress, until `success`, an error line, or `timeout`.
    pub async fn pull(
        &self,
        model: &str,
        progress: &mut (dyn FnMut(&PullProgress) + Send),
        timeout: Duration,
    ) -> Result<(), DriverError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let body = json!({ "model": model, "stream": true });
        let url = self.ep.url("/api/pull");
        let req = Request {
            method: Method::Post,
            url: &url,
            body: Some(&body),
            auth: self.ep.token(),
            timeout,
        };
        let mut lines =
            self.ep.http().send_lines(req, deadline).await.map_err(DriverError::request("pull"))?;
        if !(200..300).contains(&lines.status) {
            let status = lines.status;
            let first = lines.next_line().await.ok().flatten();
            let message = first
                .and_then(|l| crate::observe::http::error_message(&l))
                .map(|m| self.ep.scrub(&m))
                .unwrap_or_else(|| format!("HTTP {status}"));
            return Err(if status == 404 {
                DriverError::ModelNotFound { model: model.to_owned() }
            } else {
                DriverError::Rejected { op: "pull", status, message }
            });
        }
        while let Some(line) = lines.next_line().await.map_err(DriverError::request("pull"))? {
            let p: PullLine = serde_json::from_slice(&line).map_err(|e| {
                DriverError::request("pull")(crate::observe::http::malformed_json(&e))
            })?;
            if let Some(e) = p.error {
                return Err(DriverError::PullFailed {
                    model: model.to_owned(),
                    message: self.ep.scrub(&crate::observe::http::truncate(&e, 300)),
                });
            }
            let status = p.status.unwrap_or_default();
            progress(&PullProgress {
                status: status.clone(),
                completed: p.completed,
                total: p.total,
            });
            if status == "success" {
                return Ok(());
            }
        }
        Err(DriverError::PullFailed {
            model: model.to_owned(),
            message: "the stream ended without \"success\"".into(),
        })
    }
}

/// The JSON keep-alive: -1 pins, a duration string, or absent for the server default.
fn keep_alive_json(k: KeepAlive) -> Option<Value> {
    match k {
        KeepAlive::Pinned => Some(json!(-1)),
        KeepAlive::For(d) => Some(json!(format!("{}ms", d.as_millis()))),
        KeepAlive::BackendDefault => None,
    }
}

#[derive(Deserialize)]
struct GenerateDone {
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct PullLine {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    completed: Option<u64>,
    #[serde(default)]
    total: Option<u64>,
    #[serde(default)]
    error: Option<String>,
}

/// The `models` array is required: it is what proves the server is Ollama. Any other JSON
/// object (another server on the port, a proxy's error page) is a malformed answer, not "up with
/// nothing loaded", which would trigger a pull and a load (issue 17).
#[derive(Deserialize)]
struct Ps {
    models: Vec<PsModel>,
}

#[derive(Deserialize)]
struct PsModel {
    name: String,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    size_vram: Option<u64>,
    #[serde(default)]
    expires_at: Option<String>,
    #[serde(default)]
    context_length: Option<u32>,
}

/// Parses `GET /api/ps`, using the reply's `Date` header as the server's "now".
pub fn parse_ps(r: &Reply, names: &DesiredNames) -> Result<Vec<Instance>, ProbeFailure> {
    let ps: Ps = r.json()?;
    let server_now = r
        .headers
        .get(reqwest::header::DATE)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_http_date);
    Ok(ps
        .models
        .into_iter()
        .map(|m| {
            let expires = m.expires_at.as_deref().and_then(parse_rfc3339_ms);
            let (pinned, stopping) = match (expires, server_now) {
                (Some(e), Some(now)) => (Some(e - now >= PINNED_AFTER_MS), e < now),
                // No Date header: only the far-future rendering of -1 is recognisable.
                (Some(e), None) => (Some(e >= year_2200_ms()), false),
                (None, _) => (None, false),
            };
            let mut settings = std::collections::BTreeMap::new();
            if let (Some(total), Some(vram)) = (m.size, m.size_vram)
                && vram < total
            {
                // Partly offloaded to the CPU (`ollama ps` shows e.g. "48%/52% CPU/GPU").
                settings.insert("size_total".to_owned(), json!(total));
            }
            Instance {
                model: names.resolve(&m.name, same_model),
                id: m.name,
                state: if stopping { InstanceState::Unloading } else { InstanceState::Loaded },
                context_length: m.context_length.filter(|c| *c > 0),
                size: m.size_vram.or(m.size),
                pinned,
                settings,
            }
        })
        .collect())
}

#[derive(Deserialize)]
struct Tags {
    models: Vec<TagModel>,
}

#[derive(Deserialize)]
struct TagModel {
    name: String,
}

/// Parses `GET /api/tags` into the downloaded model names (mapped to desired names).
pub fn parse_tags(r: &Reply, names: &DesiredNames) -> Result<Vec<String>, ProbeFailure> {
    let t: Tags = r.json()?;
    Ok(t.models.into_iter().map(|m| names.resolve(&m.name, same_model)).collect())
}

#[derive(Deserialize)]
struct ChatResponse {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    message: Option<ChatMessage>,
    #[serde(default)]
    eval_count: Option<u32>,
    /// Nanoseconds.
    #[serde(default)]
    eval_duration: Option<u64>,
}

#[derive(Deserialize)]
struct ChatMessage {
    #[serde(default)]
    content: Option<String>,
}

/// Parses a non-streaming `/api/chat` answer.
pub fn parse_chat(r: &Reply) -> Result<ChatReply, ProbeFailure> {
    let c: ChatResponse = r.json()?;
    let measured = match (c.eval_count, c.eval_duration) {
        (Some(n), Some(ns)) if n > 0 && ns > 0 => Some(f64::from(n) * 1e9 / ns as f64),
        _ => None,
    };
    Ok(ChatReply {
        text: c.message.and_then(|m| m.content).unwrap_or_default(),
        model_answered: c.model,
        latency: r.latency,
        completion_tokens: c.eval_count,
        tokens_per_second: measured.or_else(|| openai::rate(c.eval_count, r.latency)),
    })
}

fn year_2200_ms() -> i64 {
    days_from_civil(2200, 1, 1) * 86_400_000
}

/// Milliseconds since the epoch of an RFC 3339 time with any offset, e.g.
/// `2024-06-04T14:38:31.83753-07:00` or `2318-03-01T10:00:00Z`.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        if t.bytes().all(|c| c.is_ascii_digit()) { t.parse().ok() } else { None }
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut frac_ms = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let digits = s.get(start..i)?;
        let first3: String = digits.chars().chain("000".chars()).take(3).collect();
        frac_ms = first3.parse().ok()?;
    }
    let offset_min = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if b.len() == i + 6 && b[i + 3] == b':' => {
            let oh = num(i + 1..i + 3)?;
            let om = num(i + 4..i + 6)?;
            let m = oh * 60 + om;
            if *sign == b'+' { m } else { -m }
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_min * 60;
    Some(secs * 1000 + frac_ms)
}

/// Milliseconds since the epoch of an HTTP `Date` (IMF-fixdate: `Tue, 24 Nov 2026 10:00:00 GMT`).
pub fn parse_http_date(s: &str) -> Option<i64> {
    let mut parts = s.split_whitespace();
    let _weekday = parts.next()?;
    let d: i64 = parts.next()?.parse().ok()?;
    let mo = match parts.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let y: i64 = parts.next()?.parse().ok()?;
    let mut hms = parts.next()?.split(':');
    let h: i64 = hms.next()?.parse().ok()?;
    let mi: i64 = hms.next()?.parse().ok()?;
    let sec: i64 = hms.next()?.parse().ok()?;
    if parts.next()? != "GMT" || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    Some((days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec) * 1000)
}

/// Howard Hinnant's `days_from_civil`: (year, month, day) → days since 1970-01-01.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::http::test_reply as reply;
    use reqwest::header::HeaderValue;

    fn names() -> DesiredNames {
        DesiredNames(vec!["mistral".into(), "llama3.2".into()])
    }

    /// The documented `/api/ps` body: one instance under its desired name, VRAM size, context;
    /// with the server's Date header an expiry in the future is loaded and not pinned.
    #[test]
    fn parses_documented_ps() {
        let mut r = reply(200, include_str!("../../tests/fixtures/observe/ollama_ps.json"));
        r.headers.insert(
            reqwest::header::DATE,
            HeaderValue::from_static("Tue, 04 Jun 2024 21:33:31 GMT"),
        );
        let i = parse_ps(&r, &names()).unwrap();
        assert_eq!(i.len(), 1);
        assert_eq!(i[0].model, "mistral");
        assert_eq!(i[0].id, "mistral:latest");
        assert_eq!(i[0].size, Some(5_137_025_024));
        assert_eq!(i[0].context_length, Some(4096));
        assert_eq!(i[0].state, InstanceState::Loaded);
        assert_eq!(i[0].pinned, Some(false));
        assert!(i[0].settings.is_empty());
    }

    /// `keep_alive: -1` renders ~292 years ahead: pinned. An expiry before the server's clock is
    /// an instance being stopped. A partial CPU offload keeps the total size in the settings.
    #[test]
    fn pinned_and_stopping() {
        let body = r#"{"models":[
            {"name":"llama3.2:latest","model":"llama3.2:latest","size":3000,"size_vram":2000,"expires_at":"2318-08-30T10:00:00.123456789+02:00","context_length":8192},
            {"name":"qwen:7b","model":"qwen:7b","size":10,"size_vram":10,"expires_at":"2026-11-24T09:59:59Z","context_length":0}]}"#;
        let mut r = reply(200, body);
        r.headers.insert(
            reqwest::header::DATE,
            HeaderValue::from_static("Tue, 24 Nov 2026 10:00:00 GMT"),
        );
        let i = parse_ps(&r, &names()).unwrap();
        assert_eq!(i[0].model, "llama3.2");
        assert_eq!(i[0].pinned, Some(true));
        assert_eq!(i[0].size, Some(2000));
        assert_eq!(i[0].settings.get("size_total"), Some(&json!(3000)));
        assert_eq!(i[1].state, InstanceState::Unloading);
        assert_eq!(i[1].pinned, Some(false));
        assert_eq!(i[1].context_length, None);
        // Without a Date header only the far-future rendering is recognised.
        let i = parse_ps(&reply(200, body), &names()).unwrap();
        assert_eq!(i[0].pinned, Some(true));
        assert_eq!(i[1].pinned, Some(false));
        assert_eq!(i[1].state, InstanceState::Loaded);
    }

    /// Issue 17: any JSON object read as "up, nothing loaded" and triggered a pull and a load.
    /// Without the `models` array it is a malformed answer; an empty array is nothing loaded.
    #[test]
    fn an_answer_without_the_models_array_is_malformed() {
        for body in [r#"{}"#, r#"{"status":"ok"}"#, r#"{"models":null}"#, r#"{"data":[]}"#] {
            let e = parse_ps(&reply(200, body), &names()).unwrap_err();
            assert!(matches!(e, ProbeFailure::Malformed { .. }), "{body}: {e:?}");
            let e = parse_tags(&reply(200, body), &names()).unwrap_err();
            assert!(matches!(e, ProbeFailure::Malformed { .. }), "{body}: {e:?}");
        }
        assert!(parse_ps(&reply(200, r#"{"models":[]}"#), &names()).unwrap().is_empty());
    }

    /// The documented `/api/tags` body lists downloaded models under desired names.
    #[test]
    fn parses_documented_tags() {
        let r = reply(200, include_str!("../../tests/fixtures/observe/ollama_tags.json"));
        assert_eq!(parse_tags(&r, &names()).unwrap(), ["llama3.2"]);
        assert_eq!(
            parse_tags(&reply(200, r#"{"models":[]}"#), &names()).unwrap(),
            Vec::<String>::new()
        );
    }

    /// The documented chat answer: text, model, and tokens/s from nanosecond durations.
    #[test]
    fn parses_documented_chat() {
        let r = reply(200, include_str!("../../tests/fixtures/observe/ollama_chat.json"));
        let c = parse_chat(&r).unwrap();
        assert_eq!(c.model_answered.as_deref(), Some("llama3.2"));
        assert_eq!(c.completion_tokens, Some(298));
        let tps = c.tokens_per_second.unwrap();
        assert!((tps - 298.0 / 4.799_921).abs() < 1e-6, "{tps}");
    }

    /// Ollama's implicit `:latest` tag; a registry port is not a tag.
    #[test]
    fn latest_is_implicit() {
        assert!(same_model("llama3.2", "llama3.2:latest"));
        assert!(!same_model("llama3.2", "llama3.2:1b"));
        assert!(same_model("host:5000/ns/m", "host:5000/ns/m:latest"));
    }

    proptest::proptest! {
        /// The date parsers never panic on arbitrary text.
        #[test]
        fn date_parsers_never_panic(text in "\\PC{0,40}") {
            let _ = parse_rfc3339_ms(&text);
            let _ = parse_http_date(&text);
        }

        /// ... nor on text shaped like a date.
        #[test]
        fn date_parsers_never_panic_on_lookalikes(text in "[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9:]{8}(\\.[0-9]{0,12})?(Z|[+-][0-9]{2}:[0-9]{2}|é|)") {
            let _ = parse_rfc3339_ms(&text);
        }
    }

    /// RFC 3339 and HTTP dates parse to the same instant; malformed ones are rejected.
    #[test]
    fn dates() {
        let a = parse_rfc3339_ms("2026-11-24T10:00:00.5+01:00").unwrap();
        let b = parse_http_date("Tue, 24 Nov 2026 09:00:00 GMT").unwrap();
        assert_eq!(a - b, 500);
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        for bad in [
            "",
            "2026-13-01T00:00:00Z",
            "2026-11-24T10:00:00",
            "garbage-garbage-garbage",
            "2026-11-24T10:00:00+0100",
        ] {
            assert_eq!(parse_rfc3339_ms(bad), None, "{bad}");
        }
        assert_eq!(parse_http_date("Tue, 24 Foo 2026 09:00:00 GMT"), None);
    }
}
