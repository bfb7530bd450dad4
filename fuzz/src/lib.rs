//! Fuzz entry points: one function per input homeostat reads from outside, each taking arbitrary
//! bytes. The cargo-fuzz targets in `fuzz_targets/` call them, and the proptests in
//! `tests/it/fuzz_parsers.rs` include this very file (`#[path]`), so CI exercises the same code on a
//! machine without cargo-fuzz or a nightly toolchain.
//!
//! Each entry asserts more than "no panic": what a parser may say about a hostile input is
//! bounded (error details never echo the body, messages are capped, figures are in range).

use std::time::Duration;

use bytes::Bytes;
use homeostat::observe::driver::DesiredNames;
use homeostat::observe::http::{self, Reply};
use homeostat::observe::snapshot::ProbeFailure;
use homeostat::observe::{llamacpp, lmstudio, ollama, openai, prometheus, telemetry};
use reqwest::header::{DATE, HeaderMap, HeaderValue};

/// Longest text a server can get into one of our messages (`http::MESSAGE_CAP` plus the
/// ellipsis marking the cut).
const MESSAGE_MAX: usize = 300 + '…'.len_utf8();

/// Names a node's manifest could list; the parsers map backend names onto them.
fn names() -> DesiredNames {
    DesiredNames(vec![
        "qwen/qwen3-8b".into(),
        "llama3.2:3b".into(),
        "tiny-llama".into(),
        "google/gemma-4-26b-a4b".into(),
    ])
}

/// A reply carrying `body`, with an optional `Date` header.
fn reply(status: u16, body: &[u8], date: Option<&[u8]>) -> Reply {
    let mut headers = HeaderMap::new();
    if let Some(v) = date.and_then(|d| HeaderValue::from_bytes(d).ok()) {
        headers.insert(DATE, v);
    }
    Reply {
        status,
        headers,
        body: Bytes::copy_from_slice(body),
        latency: Duration::from_millis(u64::from(body.len() as u8) + 1),
    }
}

/// Splits `data` at its first newline: (first line, rest). No newline: (empty, all).
fn split_line(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&[], data),
    }
}

/// A parser failure says what kind of problem it was and where, never the body's content.
fn check_failure(f: &ProbeFailure) {
    let text = f.to_string();
    match f {
        ProbeFailure::Malformed { detail } => {
            let fixed = [
                "unreadable body at line",
                "invalid JSON at line",
                "unexpected JSON shape at line",
                "truncated JSON at line",
                "body is not valid UTF-8",
                "chat completion without choices",
            ];
            assert!(fixed.iter().any(|p| detail.starts_with(p)), "detail echoes input: {detail:?}");
            assert!(text.len() < 120, "{text}");
        }
        other => panic!("a parser returned a transport failure: {other:?}"),
    }
}

/// A backend name is either mapped to a desired name or kept as it came.
fn check_resolved(model: &str, observed: &str) {
    assert!(model == observed || names().0.iter().any(|n| n == model), "{model} / {observed}");
}

/// Whatever the body, the error message extracted from it is capped.
fn check_error_message(body: &[u8]) {
    if let Some(m) = http::error_message(body) {
        assert!(m.len() <= MESSAGE_MAX, "error message of {} bytes", m.len());
        assert!(!m.is_empty());
    }
}

/// The manifest loader on one file's bytes: a `DesiredState` or diagnostics with positions
/// (line and column from 1), never a panic.
pub fn manifest(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = homeostat::desired::yaml::parse(&text);
    match homeostat::desired::from_yaml_str(&text) {
        Ok(state) => {
            // A loaded state always has the cluster policy filled in with valid limits.
            let _ = format!("{state:?}");
        }
        Err(d) => {
            assert!(d.error_count() > 0, "rejected without an error");
            let _ = d.to_string();
            for x in d.iter() {
                assert!(x.line.is_none_or(|l| l >= 1) && x.column.is_none_or(|c| c >= 1), "{x:?}");
            }
        }
    }
}

/// LM Studio: `GET /api/v1/models`, `GET /api/v0/models`, the load answer, error bodies.
pub fn lmstudio(data: &[u8]) {
    let r = reply(200, data, None);
    let names = names();
    match lmstudio::parse_v1_models(&r, &names) {
        Ok(l) => {
            for i in &l.instances {
                assert!(l.available.contains(&i.model), "instance of an unlisted model");
            }
        }
        Err(f) => check_failure(&f),
    }
    match lmstudio::parse_v0_models(&r, &names) {
        Ok(l) => {
            for i in &l.instances {
                check_resolved(&i.model, &i.id);
            }
        }
        Err(f) => check_failure(&f),
    }
    match lmstudio::parse_load_response(&r, "qwen/qwen3-8b") {
        Ok(_) => {}
        Err(f) => check_failure(&f),
    }
    check_error_message(data);
}

/// Ollama: `/api/ps` (with the first line as the `Date` header), `/api/tags`, `/api/chat`, and
/// the date parsers on the header line.
pub fn ollama(data: &[u8]) {
    let (date, body) = split_line(data);
    let names = names();
    for r in [reply(200, body, Some(date)), reply(200, body, None), reply(200, data, None)] {
        match ollama::parse_ps(&r, &names) {
            Ok(instances) => {
                for i in &instances {
                    check_resolved(&i.model, &i.id);
                    assert!(i.context_length != Some(0));
                }
            }
            Err(f) => check_failure(&f),
        }
    }
    match ollama::parse_tags(&reply(200, data, None), &names) {
        Ok(_) => {}
        Err(f) => check_failure(&f),
    }
    match ollama::parse_chat(&reply(200, data, None)) {
        Ok(c) => assert!(c.tokens_per_second.is_none_or(|t| t.is_finite() && t > 0.0)),
        Err(f) => check_failure(&f),
    }
    let line = String::from_utf8_lossy(date);
    let _ = ollama::parse_rfc3339_ms(&line);
    let _ = ollama::parse_http_date(&line);
    check_error_message(data);
}

/// OpenAI-compatible servers and vLLM: `/v1/models`, a chat completion, vLLM's `/metrics`.
pub fn openai(data: &[u8]) {
    let r = reply(200, data, None);
    match openai::parse_models(&r) {
        Ok(models) => assert!(models.len() <= data.len()),
        Err(f) => check_failure(&f),
    }
    match openai::parse_chat_completion(&r) {
        Ok(c) => assert!(c.tokens_per_second.is_none_or(|t| t.is_finite())),
        Err(f) => check_failure(&f),
    }
    let m = openai::parse_vllm_metrics(&String::from_utf8_lossy(data));
    let _ = m.in_flight;
    check_error_message(data);
}

/// llama.cpp `llama-server`: `/models` of either mode, `/slots`.
pub fn llamacpp(data: &[u8]) {
    let r = reply(200, data, None);
    match llamacpp::parse_models(&r) {
        Ok(llamacpp::Listing::Router(models)) => assert!(!models.is_empty()),
        Ok(llamacpp::Listing::Single(models)) => assert!(!models.is_empty()),
        Ok(llamacpp::Listing::Empty) => {}
        Err(f) => check_failure(&f),
    }
    match llamacpp::parse_slots(&r) {
        Ok(busy) => assert!(busy as usize <= data.len()),
        Err(f) => check_failure(&f),
    }
    let _ = llamacpp::same_model("tiny-llama", &String::from_utf8_lossy(data));
    check_error_message(data);
}

/// The Prometheus text parser and what telemetry reads from it; nvidia-smi's CSV.
pub fn prometheus(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let samples = prometheus::parse(&text);
    for s in &samples {
        assert!(!s.name.is_empty());
        assert!(text.contains(s.name.as_str()), "a sample name not in the input");
    }
    let t = telemetry::from_prometheus(&text);
    assert!(t.disk_used.is_none_or(|d| (0.0..=1.0).contains(&d)), "{:?}", t.disk_used);
    assert!(t.gpu_temp_c.is_none_or(f64::is_finite));
    match telemetry::parse_nvidia_smi(&text) {
        Ok(t) => assert!(t.gpu_temp_c.is_none_or(f64::is_finite)),
        Err(e) => assert!(e.len() < 200, "{e}"),
    }
}
