//! Notifications end to end: de-duplication, rendering and delivery to a webhook receiver on
//! loopback (`notify_support::Receiver`, which records what homeostat sends it).

use crate::support::notify as notify_support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use homeostat::desired::{NotifierSpec, NotifierType, SecretRef};
use homeostat::notify::{DeliveryConfig, Notifications, NotifyError, NotifyState};
use homeostat::plan::Alert;
use notify_support::{Behaviour, Receiver, at, drained, fast, offline, spec, start};

/// A critical condition that holds for 100 passes (16 minutes, under `renotifyAfter`) reaches
/// the receiver exactly once; when it clears, exactly one recovery notice follows; later clean
/// passes send nothing.
#[tokio::test]
async fn one_escalation_while_the_condition_holds_then_one_recovery() {
    let rx = Receiver::start(Behaviour::Accept).await;
    let dir = tempfile::tempdir().unwrap();
    let notifiers = BTreeMap::from([(
        "ops".into(),
        spec(dir.path(), "ops", NotifierType::Webhook, &rx.url("/hook")),
    )]);
    let n = start(&notifiers, fast(3, 2000));
    let alerts = [offline("m1")];

    for pass in 0..100 {
        n.notify_pass(&alerts, at(pass * 10));
    }
    drained(&n).await;
    let seen = rx.seen();
    assert_eq!(seen.len(), 1, "one escalation for one condition");
    let body = seen[0].json();
    assert_eq!(body["state"], "firing");
    assert_eq!(body["key"], "node/m1/offline");
    assert_eq!(body["since"], at(0).rfc3339());

    for pass in 100..110 {
        n.notify_pass([], at(pass * 10));
    }
    drained(&n).await;
    let seen = rx.seen();
    assert_eq!(seen.len(), 2, "one recovery, nothing more");
    let body = seen[1].json();
    assert_eq!(body["state"], "resolved");
    assert_eq!(body["key"], "node/m1/offline");
    assert_eq!(body["timestamp"], at(1000).rfc3339());
    assert_eq!(n.stats().delivered, 2);
}

/// Each notifier type gets its own wire format: the generic JSON body, Telegram
/// `sendMessage` (`chat_id`, `text`), a Slack incoming-webhook payload (`text` + `blocks`),
/// and an ntfy plain-text publish with `Title`, `Priority` and `Tags` headers. Each carries
/// the diagnostic summary and the suggested manual steps.
#[tokio::test]
async fn each_notifier_type_gets_its_format() {
    let rx = Receiver::start(Behaviour::Accept).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let notifiers = BTreeMap::from([
        ("hook".into(), spec(d, "hook", NotifierType::Webhook, &rx.url("/hook"))),
        ("tg".into(), spec(d, "tg", NotifierType::Telegram, &rx.url("/bot123:ABC/sendMessage"))),
        ("slack".into(), spec(d, "slack", NotifierType::Slack, &rx.url("/services/T0/B0/XYZ"))),
        ("ntfy".into(), spec(d, "ntfy", NotifierType::Ntfy, &rx.url("/homeostat-alerts"))),
    ]);
    let n = start(&notifiers, fast(2, 2000));
    n.notify_pass(&[offline("m1")], at(0));
    drained(&n).await;

    let seen = rx.seen();
    assert_eq!(seen.len(), 4);
    let by_path = |p: &str| seen.iter().find(|r| r.path == p).unwrap_or_else(|| panic!("{p}"));

    let hook = by_path("/hook");
    assert_eq!(hook.header("content-type"), "application/json");
    let v = hook.json();
    assert_eq!(v["version"], 1);
    assert_eq!(v["source"], "homeostat");
    assert_eq!(v["notifier"], "hook");
    assert_eq!(v["state"], "firing");
    assert_eq!(v["severity"], "critical");
    assert_eq!(v["node"], "m1");
    assert_eq!(v["summary"], "m1 is offline after 3 heal attempts (connection refused)");
    assert_eq!(v["suggestions"][0], "check that m1 is powered and on the network");
    assert_eq!(v["timestamp"], "2026-11-24T00:00:00.000Z");
    assert!(v["text"].as_str().unwrap().contains("Suggested manual steps:\n1. check that m1"));

    let tg = by_path("/bot123:ABC/sendMessage").json();
    assert_eq!(tg["chat_id"], "-1001234567890");
    let text = tg["text"].as_str().unwrap();
    assert!(text.starts_with("homeostat CRITICAL node/m1/offline\n\nCRITICAL: m1 is offline"));
    assert!(text.contains("2. run the restart command by hand"), "{text}");

    let slack = by_path("/services/T0/B0/XYZ").json();
    assert!(slack["text"].as_str().unwrap().contains("m1 is offline"));
    assert_eq!(slack["blocks"][0]["type"], "section");
    assert_eq!(slack["blocks"][0]["text"]["type"], "mrkdwn");
    assert!(
        slack["blocks"][1]["text"]["text"]
            .as_str()
            .unwrap()
            .starts_with("*Suggested manual steps*")
    );

    let ntfy = by_path("/homeostat-alerts");
    assert!(ntfy.header("content-type").starts_with("text/plain"));
    assert_eq!(ntfy.header("title"), "homeostat CRITICAL node/m1/offline");
    assert_eq!(ntfy.header("priority"), "5");
    assert_eq!(ntfy.header("tags"), "rotating_light,homeostat");
    let body = std::str::from_utf8(&ntfy.body).unwrap();
    assert!(body.starts_with("CRITICAL: m1 is offline"), "{body}");
    assert!(body.contains("Suggested manual steps:"));
}

/// A receiver that fails the first two attempts with HTTP 500 gets the notice on the third;
/// the waits between attempts grow (at least 50 ms, then at least 100 ms).
#[tokio::test]
async fn retries_with_backoff_until_the_receiver_recovers() {
    let rx = Receiver::start(Behaviour::FailFirst { n: 2, status: 500 }).await;
    let dir = tempfile::tempdir().unwrap();
    let notifiers = BTreeMap::from([(
        "ops".into(),
        spec(dir.path(), "ops", NotifierType::Webhook, &rx.url("/hook")),
    )]);
    let n = start(&notifiers, fast(4, 2000));
    n.notify_pass(&[offline("m1")], at(0));
    drained(&n).await;

    let seen = rx.seen();
    assert_eq!(seen.len(), 3, "two failures, then success");
    assert!(seen.iter().all(|r| r.body == seen[0].body), "the same notice each time");
    let gap1 = seen[1].at - seen[0].at;
    let gap2 = seen[2].at - seen[1].at;
    assert!(gap1 >= Duration::from_millis(50), "first retry after {gap1:?}");
    assert!(gap2 >= Duration::from_millis(100), "second retry after {gap2:?}");
    let s = n.stats();
    assert_eq!((s.delivered, s.retries, s.failed, s.pending), (1, 2, 0, 0));
}

/// A receiver that keeps failing is given up on after the configured attempts; a permanent
/// error (HTTP 403: wrong token) is not retried at all.
#[tokio::test]
async fn gives_up_after_attempts_and_on_permanent_errors() {
    let broken = Receiver::start(Behaviour::FailFirst { n: usize::MAX, status: 503 }).await;
    let forbidden = Receiver::start(Behaviour::FailFirst { n: usize::MAX, status: 403 }).await;
    let dir = tempfile::tempdir().unwrap();
    let notifiers = BTreeMap::from([
        ("broken".into(), spec(dir.path(), "broken", NotifierType::Webhook, &broken.url("/h"))),
        (
            "forbidden".into(),
            spec(dir.path(), "forbidden", NotifierType::Slack, &forbidden.url("/h")),
        ),
    ]);
    let n = start(&notifiers, fast(3, 2000));
    n.notify_pass(&[offline("m1")], at(0));
    drained(&n).await;
    assert_eq!(broken.seen().len(), 3);
    assert_eq!(forbidden.seen().len(), 1);
    let s = n.stats();
    assert_eq!((s.delivered, s.retries, s.failed), (0, 2, 2));
}

/// A receiver that never answers neither blocks the pass (deciding and queueing takes less
/// than one request timeout) nor delays another notifier; it is given up on after its
/// attempts time out.
#[tokio::test]
async fn hanging_receiver_blocks_nothing_and_times_out() {
    let hang = Receiver::start(Behaviour::Hang).await;
    let ok = Receiver::start(Behaviour::Accept).await;
    let dir = tempfile::tempdir().unwrap();
    let notifiers = BTreeMap::from([
        ("a-hangs".into(), spec(dir.path(), "a-hangs", NotifierType::Webhook, &hang.url("/h"))),
        ("b-ok".into(), spec(dir.path(), "b-ok", NotifierType::Webhook, &ok.url("/h"))),
    ]);
    let timeout = Duration::from_millis(300);
    let n = start(&notifiers, fast(2, 300));

    let started = Instant::now();
    let d = n.notify_pass(&[offline("m1")], at(0));
    let took = started.elapsed();
    assert_eq!(d.notices.len(), 2);
    assert!(took < timeout, "the pass waited {took:?} on delivery");

    // The healthy receiver is served while the hanging one is still being waited on.
    ok.wait_for_requests(1, Duration::from_secs(5)).await;
    assert!(n.stats().pending >= 1, "the hanging notice is still in flight");

    drained(&n).await;
    let gave_up_after = started.elapsed();
    assert_eq!(hang.seen().len(), 2, "two attempts, each timed out");
    assert!(gave_up_after >= 2 * timeout, "given up after {gave_up_after:?}");
    let s = n.stats();
    assert_eq!((s.delivered, s.failed, s.pending), (1, 1, 0));
}

/// A full queue drops new notices instead of waiting; the drop is counted.
#[tokio::test]
async fn full_queue_drops_without_waiting() {
    let hang = Receiver::start(Behaviour::Hang).await;
    let dir = tempfile::tempdir().unwrap();
    let notifiers = BTreeMap::from([(
        "ops".into(),
        spec(dir.path(), "ops", NotifierType::Webhook, &hang.url("/h")),
    )]);
    let cfg = DeliveryConfig { queue_capacity: 2, ..fast(1, 200) };
    let n = start(&notifiers, cfg);
    let alerts: Vec<Alert> = (1..=5).map(|i| offline(&format!("m{i}"))).collect();
    // Single-threaded runtime: the worker cannot take a notice off the queue before the pass
    // has queued all five, so exactly two fit.
    let d = n.notify_pass(&alerts, at(0));
    assert_eq!(d.notices.len(), 5);
    let s = n.stats();
    assert_eq!((s.enqueued, s.dropped), (2, 3));
    drained(&n).await;
    assert_eq!(n.stats().failed, 2);
}

/// The de-duplication state, persisted and given to a new instance (a daemon restart), keeps
/// a condition that still holds from being sent again, and its recovery still goes out.
#[tokio::test]
async fn persisted_state_is_exactly_once_across_restarts() {
    let rx = Receiver::start(Behaviour::Accept).await;
    let dir = tempfile::tempdir().unwrap();
    let notifiers = BTreeMap::from([(
        "ops".into(),
        spec(dir.path(), "ops", NotifierType::Ntfy, &rx.url("/t")),
    )]);
    let first = start(&notifiers, fast(2, 2000));
    first.notify_pass(&[offline("m1")], at(0));
    drained(&first).await;
    let saved = serde_json::to_string(&first.state()).unwrap();
    first.shutdown(Duration::from_secs(1)).await;

    let state: NotifyState = serde_json::from_str(&saved).unwrap();
    let (second, errors) = Notifications::start(&notifiers, state, fast(2, 2000)).unwrap();
    assert!(errors.is_empty());
    for pass in 1..20 {
        second.notify_pass(&[offline("m1")], at(pass * 10));
    }
    second.notify_pass([], at(200));
    drained(&second).await;
    let seen = rx.seen();
    assert_eq!(seen.len(), 2, "one escalation before the restart, one recovery after");
    assert_eq!(seen[1].header("tags"), "white_check_mark,homeostat");
}

/// Shutdown with a hanging receiver returns after the grace period, abandoning the notice.
#[tokio::test]
async fn shutdown_abandons_after_grace() {
    let hang = Receiver::start(Behaviour::Hang).await;
    let dir = tempfile::tempdir().unwrap();
    let notifiers = BTreeMap::from([(
        "ops".into(),
        spec(dir.path(), "ops", NotifierType::Webhook, &hang.url("/h")),
    )]);
    let n = start(&notifiers, fast(3, 10_000));
    n.notify_pass(&[offline("m1")], at(0));
    hang.wait_for_requests(1, Duration::from_secs(5)).await;
    tokio::time::timeout(Duration::from_secs(5), n.shutdown(Duration::from_millis(100)))
        .await
        .expect("shutdown returns after its grace period");
    assert_eq!(n.stats().pending, 0);
    // After shutdown, notices are dropped, never queued.
    n.notify_pass(&[offline("m1"), offline("m2")], at(10));
    assert_eq!(n.stats().dropped, 1);
}

/// A notifier whose secret is missing, is not a URL, or (Telegram) has no chat id is left out
/// with an error naming it and its reference; the other notifiers work; no error shows the
/// secret.
#[tokio::test]
async fn unusable_notifiers_are_reported_without_their_secret() {
    let rx = Receiver::start(Behaviour::Accept).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut no_chat = spec(
        d,
        "no-chat",
        NotifierType::Telegram,
        "https://api.telegram.org/botSEKRIT-1/sendMessage",
    );
    no_chat.chat_id = None;
    let notifiers = BTreeMap::from([
        ("good".into(), spec(d, "good", NotifierType::Webhook, &rx.url("/h"))),
        ("not-a-url".into(), spec(d, "not-a-url", NotifierType::Slack, "SEKRIT-2 is no url")),
        ("ftp".into(), spec(d, "ftp", NotifierType::Webhook, "ftp://host/SEKRIT-3")),
        ("no-chat".into(), no_chat),
        (
            "missing".into(),
            NotifierSpec {
                url_from: SecretRef::File(d.join("absent")),
                ..spec(d, "missing", NotifierType::Ntfy, "http://x/")
            },
        ),
    ]);
    let (n, errors) =
        Notifications::start(&notifiers, NotifyState::default(), fast(1, 2000)).unwrap();
    let shown: Vec<String> = errors.iter().map(|e| format!("{e} / {e:?}")).collect();
    assert_eq!(errors.len(), 4, "{shown:#?}");
    assert!(shown.iter().all(|s| !s.contains("SEKRIT")), "{shown:#?}");
    assert!(
        matches!(&errors[..], [
        NotifyError::BadUrl { notifier: a, .. },
        NotifyError::Secret { notifier: b, .. },
        NotifyError::MissingChatId { notifier: c },
        NotifyError::BadUrl { notifier: e, .. },
    ] if a == "ftp" && b == "missing" && c == "no-chat" && e == "not-a-url"),
        "{shown:#?}"
    );
    assert_eq!(n.notifiers(), ["good"]);
    n.notify_pass(&[offline("m1")], at(0));
    drained(&n).await;
    assert_eq!(rx.seen().len(), 1);
}
