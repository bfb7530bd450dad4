//! Message rendering: one [`Notice`] into the HTTP request body and headers each notifier type
//! expects. Pure: no I/O; the URL is not known here (it is a secret and stays in `deliver`).
//!
//! API boundary: these bodies are what receivers parse.
//! - `webhook`: `POST` of a JSON [`WebhookBody`] (`Content-Type: application/json`).
//! - `telegram`: Bot API `sendMessage` JSON, `{"chat_id": "...", "text": "..."}`, plain text
//!   (no `parse_mode`, so no escaping can break it), cut to the API's 4096 characters.
//! - `slack`: incoming-webhook JSON, `text` (the notification fallback) plus `blocks` (section
//!   blocks in `mrkdwn`, `&`, `<`, `>` escaped as Slack requires, each under 3000 characters).
//! - `ntfy`: the diagnostic text as a plain-text body, with `Title`, `Priority` (5 critical,
//!   4 warning, 3 info and recoveries) and `Tags` (an emoji short code, then `homeostat`)
//!   headers; a title that is not ASCII is sent RFC 2047-encoded, which ntfy decodes.
//!
//! Every escalation carries the diagnostic summary and the suggested manual steps.

use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::dedup::{AlertState, Notice};
use crate::desired::Severity;

/// A notifier type with what its format needs beyond the URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dialect {
    Webhook,
    Telegram { chat_id: String },
    Slack,
    Ntfy,
}

/// A rendered request: `POST` this body with these headers to the notifier's URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub content_type: &'static str,
    /// Extra headers (ntfy's `Title`, `Priority`, `Tags`); values are visible ASCII.
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

/// The generic webhook's JSON body (version 1). Fields are never removed or renamed within a
/// version; new optional fields may be added.
///
/// ```json
/// {
///   "version": 1,
///   "source": "homeostat",
///   "notifier": "ops-webhook",
///   "state": "firing",
///   "reminder": false,
///   "key": "node/m1/offline",
///   "severity": "critical",
///   "node": "m1",
///   "summary": "m1 is offline after 3 heal attempts (...)",
///   "suggestions": ["check the machine", "..."],
///   "timestamp": "2026-11-24T10:00:00.000Z",
///   "since": "2026-11-24T09:58:00.000Z",
///   "text": "CRITICAL: m1 is offline ...\nCondition: ...\nSuggested manual steps:\n1. ..."
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookBody {
    /// Format version of this body: 1.
    pub version: u32,
    /// Always `homeostat`.
    pub source: String,
    /// The `Notifier` manifest's name.
    pub notifier: String,
    /// `firing` or `resolved`.
    pub state: AlertState,
    /// A repeat while the condition holds (`renotifyAfter` passed).
    pub reminder: bool,
    /// Identifies the condition, e.g. `node/m1/offline`, `cluster/mass-failure`.
    pub key: String,
    pub severity: Severity,
    /// The node concerned, `null` for cluster-wide and service alerts.
    pub node: Option<String>,
    /// Diagnostic summary.
    pub summary: String,
    /// Suggested manual steps.
    pub suggestions: Vec<String>,
    /// When this notice was decided (RFC 3339, UTC).
    pub timestamp: String,
    /// When the condition was first seen (RFC 3339, UTC).
    pub since: String,
    /// The same message as short human text (what the chat notifiers send).
    pub text: String,
}

/// Telegram `sendMessage` limit: 1-4096 characters.
const TELEGRAM_MAX_CHARS: usize = 4096;
/// Slack limit for a section block's text.
const SLACK_SECTION_MAX_CHARS: usize = 3000;

/// Renders `notice` for `dialect`.
pub fn render(dialect: &Dialect, notice: &Notice) -> Rendered {
    match dialect {
        Dialect::Webhook => json(&webhook_body(notice)),
        Dialect::Telegram { chat_id } => {
            let full = format!("{}\n\n{}", title(notice), text(notice));
            json(&serde_json::json!({
                "chat_id": chat_id,
                "text": truncate(&full, TELEGRAM_MAX_CHARS),
            }))
        }
        Dialect::Slack => json(&slack_body(notice)),
        Dialect::Ntfy => Rendered {
            content_type: "text/plain; charset=utf-8",
            headers: vec![
                ("Title", header_value(&title(notice))),
                ("Priority", ntfy_priority(notice).to_owned()),
                ("Tags", format!("{},homeostat", ntfy_tag(notice))),
            ],
            body: text(notice).into_bytes(),
        },
    }
}

/// The generic webhook body of `notice`.
pub fn webhook_body(notice: &Notice) -> WebhookBody {
    let a = &notice.alert;
    WebhookBody {
        version: 1,
        source: "homeostat".into(),
        notifier: notice.notifier.clone(),
        state: notice.state,
        reminder: notice.reminder,
        key: a.key.clone(),
        severity: a.severity,
        node: a.node.clone(),
        summary: a.summary.clone(),
        suggestions: a.suggestions.clone(),
        timestamp: notice.at.rfc3339(),
        since: notice.since.rfc3339(),
        text: text(notice),
    }
}

/// One line naming the notice, e.g. `homeostat CRITICAL node/m1/offline`.
pub fn title(notice: &Notice) -> String {
    let what = match (notice.state, notice.reminder) {
        (AlertState::Resolved, _) => "RESOLVED".to_owned(),
        (AlertState::Firing, false) => upper(notice.alert.severity),
        (AlertState::Firing, true) => format!("{} (still firing)", upper(notice.alert.severity)),
    };
    format!("homeostat {what} {}", notice.alert.key)
}

/// The short diagnostic text: the summary, the condition and since when, and for a firing
/// notice the suggested manual steps, numbered.
pub fn text(notice: &Notice) -> String {
    let a = &notice.alert;
    let mut s = String::new();
    let node = a.node.as_deref().map(|n| format!(" on node {n}")).unwrap_or_default();
    match notice.state {
        AlertState::Firing => {
            let _ = writeln!(s, "{}: {}", upper(a.severity), a.summary);
            let _ = write!(s, "Condition {}{node}, since {}", a.key, notice.since.rfc3339());
            if notice.reminder {
                let _ = write!(s, " ({} ago)", human(notice.at.since(notice.since)));
            }
            s.push('.');
            if !a.suggestions.is_empty() {
                s.push_str("\nSuggested manual steps:");
                for (i, step) in a.suggestions.iter().enumerate() {
                    let _ = write!(s, "\n{}. {step}", i + 1);
                }
            }
        }
        AlertState::Resolved => {
            let _ = writeln!(s, "RESOLVED: {}", a.summary);
            let _ = write!(
                s,
                "Condition {}{node} ({}) cleared at {} after {}.",
                a.key,
                a.severity,
                notice.at.rfc3339(),
                human(notice.at.since(notice.since))
            );
        }
    }
    s
}

fn upper(s: Severity) -> String {
    s.to_string().to_uppercase()
}

fn json<T: Serialize>(v: &T) -> Rendered {
    Rendered {
        content_type: "application/json",
        headers: Vec::new(),
        // Serialising plain structs and `json!` values of strings cannot fail.
        body: serde_json::to_vec(v).expect("notification bodies are plain JSON"),
    }
}

fn slack_body(notice: &Notice) -> serde_json::Value {
    let a = &notice.alert;
    let section = |t: &str| {
        serde_json::json!({
            "type": "section",
            "text": { "type": "mrkdwn", "text": truncate(t, SLACK_SECTION_MAX_CHARS) }
        })
    };
    let headline = match notice.state {
        AlertState::Firing => {
            format!("*{}*\n{}", slack_escape(&title(notice)), slack_escape(&a.summary))
        }
        AlertState::Resolved => format!(
            "*{}*\n{} (held for {})",
            slack_escape(&title(notice)),
            slack_escape(&a.summary),
            human(notice.at.since(notice.since))
        ),
    };
    let mut blocks = vec![section(&headline)];
    if notice.state == AlertState::Firing && !a.suggestions.is_empty() {
        let mut steps = String::from("*Suggested manual steps*");
        for (i, step) in a.suggestions.iter().enumerate() {
            let _ = write!(steps, "\n{}. {}", i + 1, slack_escape(step));
        }
        blocks.push(section(&steps));
    }
    let node =
        a.node.as_deref().map(|n| format!(" · node {}", slack_escape(n))).unwrap_or_default();
    blocks.push(serde_json::json!({
        "type": "context",
        "elements": [{
            "type": "mrkdwn",
            "text": format!("`{}`{node} · since {}", slack_escape(&a.key), notice.since.rfc3339()),
        }]
    }));
    serde_json::json!({
        // The fallback shown in notifications and by clients that cannot show blocks.
        "text": format!("{}: {}", title(notice), a.summary),
        "blocks": blocks,
    })
}

/// Slack `mrkdwn` control characters (its formatting reference: escape `&`, `<`, `>`).
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn ntfy_priority(notice: &Notice) -> &'static str {
    match (notice.state, notice.alert.severity) {
        (AlertState::Resolved, _) => "3",
        (AlertState::Firing, Severity::Critical) => "5",
        (AlertState::Firing, Severity::Warning) => "4",
        (AlertState::Firing, Severity::Info) => "3",
    }
}

fn ntfy_tag(notice: &Notice) -> &'static str {
    match (notice.state, notice.alert.severity) {
        (AlertState::Resolved, _) => "white_check_mark",
        (AlertState::Firing, Severity::Critical) => "rotating_light",
        (AlertState::Firing, Severity::Warning) => "warning",
        (AlertState::Firing, Severity::Info) => "information_source",
    }
}

/// A header value: control characters become spaces; anything beyond visible ASCII is sent as
/// an RFC 2047 encoded word (`=?UTF-8?B?...?=`).
fn header_value(s: &str) -> String {
    let clean: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if clean.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        clean
    } else {
        format!("=?UTF-8?B?{}?=", base64(clean.as_bytes()))
    }
}

/// Standard base64 with padding (RFC 4648), for RFC 2047 encoded words.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// At most `max` characters, the last one an ellipsis when cut.
fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// `45s`, `12m 30s`, `3h 5m`, `2d 4h`.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86_400 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h", s / 86_400, (s % 86_400) / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Alert;
    use crate::time::Timestamp;

    const T0: u64 = 1_795_478_400_000; // 2026-11-24T00:00:00Z

    fn notice(state: AlertState, reminder: bool) -> Notice {
        Notice {
            notifier: "ops".into(),
            state,
            alert: Alert {
                key: "node/m1/hands-off".into(),
                severity: Severity::Critical,
                node: Some("m1".into()),
                summary: "m1: GPU at 96 °C ≥ 95 °C: no healing action until it cools".into(),
                suggestions: vec![
                    "check the fans & airflow".into(),
                    "lower the power <limit>".into(),
                ],
            },
            since: Timestamp::from_millis(T0),
            at: Timestamp::from_millis(T0 + 750_000),
            reminder,
        }
    }

    /// The diagnostic text of an escalation: severity and summary, the condition with its
    /// start, and the numbered manual steps.
    #[test]
    fn escalation_text_carries_summary_and_steps() {
        expect_test::expect![[r#"
            CRITICAL: m1: GPU at 96 °C ≥ 95 °C: no healing action until it cools
            Condition node/m1/hands-off on node m1, since 2026-11-24T00:00:00.000Z.
            Suggested manual steps:
            1. check the fans & airflow
            2. lower the power <limit>"#]]
        .assert_eq(&text(&notice(AlertState::Firing, false)));
    }

    /// A reminder says how long the condition has held; a recovery says when it cleared.
    #[test]
    fn reminder_and_recovery_text() {
        let n = notice(AlertState::Firing, true);
        assert_eq!(title(&n), "homeostat CRITICAL (still firing) node/m1/hands-off");
        assert!(text(&n).contains("since 2026-11-24T00:00:00.000Z (12m 30s ago)."), "{}", text(&n));
        let r = notice(AlertState::Resolved, false);
        assert_eq!(title(&r), "homeostat RESOLVED node/m1/hands-off");
        expect_test::expect![[r#"
            RESOLVED: m1: GPU at 96 °C ≥ 95 °C: no healing action until it cools
            Condition node/m1/hands-off on node m1 (critical) cleared at 2026-11-24T00:12:30.000Z after 12m 30s."#]]
        .assert_eq(&text(&r));
    }

    /// The generic webhook body has the documented fields and parses back.
    #[test]
    fn webhook_body_fields() {
        let r = render(&Dialect::Webhook, &notice(AlertState::Firing, false));
        assert_eq!(r.content_type, "application/json");
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["version"], 1);
        assert_eq!(v["state"], "firing");
        assert_eq!(v["key"], "node/m1/hands-off");
        assert_eq!(v["severity"], "critical");
        assert_eq!(v["node"], "m1");
        assert_eq!(v["suggestions"][1], "lower the power <limit>");
        assert_eq!(v["timestamp"], "2026-11-24T00:12:30.000Z");
        assert_eq!(v["since"], "2026-11-24T00:00:00.000Z");
        let back: WebhookBody = serde_json::from_value(v).unwrap();
        assert_eq!(back, webhook_body(&notice(AlertState::Firing, false)));
    }

    /// Slack: `text` fallback plus mrkdwn blocks with `&`, `<`, `>` escaped.
    #[test]
    fn slack_blocks_are_escaped() {
        let r = render(&Dialect::Slack, &notice(AlertState::Firing, false));
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert!(v["text"].as_str().unwrap().starts_with("homeostat CRITICAL node/m1/hands-off: "));
        let steps = v["blocks"][1]["text"]["text"].as_str().unwrap();
        assert_eq!(
            steps,
            "*Suggested manual steps*\n1. check the fans &amp; airflow\n2. lower the power &lt;limit&gt;"
        );
        assert_eq!(v["blocks"][2]["type"], "context");
    }

    /// ntfy: plain body, urgent priority for critical, emoji tag; the non-ASCII title is
    /// RFC 2047-encoded and every header value is visible ASCII.
    #[test]
    fn ntfy_headers() {
        let mut n = notice(AlertState::Firing, false);
        let r = render(&Dialect::Ntfy, &n);
        let h = |k: &str| r.headers.iter().find(|(n, _)| *n == k).unwrap().1.clone();
        assert_eq!(h("Title"), "homeostat CRITICAL node/m1/hands-off");
        assert_eq!(h("Priority"), "5");
        assert_eq!(h("Tags"), "rotating_light,homeostat");
        assert_eq!(String::from_utf8(r.body).unwrap(), text(&n));

        n.alert.key = "node/m1/température".into();
        let r = render(&Dialect::Ntfy, &n);
        let title = &r.headers[0].1;
        assert_eq!(
            title,
            &format!("=?UTF-8?B?{}?=", base64("homeostat CRITICAL node/m1/température".as_bytes()))
        );
        assert!(title.bytes().all(|b| (0x20..0x7f).contains(&b)));
    }

    /// Base64 against RFC 4648's test vectors.
    #[test]
    fn base64_rfc4648_vectors() {
        let got: Vec<_> = ["", "f", "fo", "foo", "foob", "fooba", "foobar"]
            .iter()
            .map(|s| base64(s.as_bytes()))
            .collect();
        assert_eq!(got, ["", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"]);
    }

    /// Telegram: chat id and text; a very long message is cut to the API's limit.
    #[test]
    fn telegram_body_is_cut_to_the_limit() {
        let mut n = notice(AlertState::Firing, false);
        n.alert.summary = "x".repeat(10_000);
        let r = render(&Dialect::Telegram { chat_id: "-100123".into() }, &n);
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["chat_id"], "-100123");
        let t = v["text"].as_str().unwrap();
        assert_eq!(t.chars().count(), TELEGRAM_MAX_CHARS);
        assert!(t.starts_with("homeostat CRITICAL node/m1/hands-off\n\nCRITICAL: xxx"));
        assert!(t.ends_with('…'));
    }

    /// Durations read as a person would say them.
    #[test]
    fn human_durations() {
        let got: Vec<_> = [0, 59, 60, 750, 3600, 11_100, 86_400 * 2 + 3600 * 4]
            .map(|s| human(Duration::from_secs(s)))
            .into();
        assert_eq!(got, ["0s", "59s", "1m 0s", "12m 30s", "1h 0m", "3h 5m", "2d 4h"]);
    }
}
