//! The secret in a notifier's URL never reaches the logs. A test binary of its own: it installs
//! a process-wide tracing subscriber that captures every thread's log lines into a buffer.

#[path = "it/support/notify.rs"]
mod notify_support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use homeostat::desired::NotifierType;
use notify_support::{Behaviour, Receiver, at, drained, fast, offline, spec, start};

/// Captured logs, at TRACE, of deliveries that succeed, fail with 500, hang until the timeout,
/// and cannot connect, name the notifiers but never contain the token in their URLs.
#[tokio::test]
async fn secret_url_never_appears_in_logs() {
    let buf = Arc::new(Mutex::new(Vec::<u8>::new()));
    let writer = {
        let buf = buf.clone();
        move || LogBuffer(buf.clone())
    };
    let subscriber = tracing_subscriber::fmt()
        .with_writer(writer)
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .finish();
    // Process-wide, so no log line of any task or thread escapes the buffer. This binary holds
    // only this test.
    tracing::subscriber::set_global_default(subscriber).unwrap();

    const TOKEN: &str = "123456789:AAE-top-SECRET-token";
    let ok = Receiver::start(Behaviour::Accept).await;
    let failing = Receiver::start(Behaviour::FailFirst { n: usize::MAX, status: 500 }).await;
    let hang = Receiver::start(Behaviour::Hang).await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
        // dropped here: nothing listens on that port any more
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let path = format!("/bot{TOKEN}/sendMessage");
    let notifiers = BTreeMap::from([
        ("tg-ok".into(), spec(d, "tg-ok", NotifierType::Telegram, &ok.url(&path))),
        ("tg-500".into(), spec(d, "tg-500", NotifierType::Telegram, &failing.url(&path))),
        ("tg-hang".into(), spec(d, "tg-hang", NotifierType::Telegram, &hang.url(&path))),
        (
            "tg-closed".into(),
            spec(d, "tg-closed", NotifierType::Telegram, &format!("http://{closed}{path}")),
        ),
    ]);
    let n = start(&notifiers, fast(2, 200));
    n.notify_pass(&[offline("m1")], at(0));
    drained(&n).await;
    n.notify_pass([], at(60));
    drained(&n).await;
    n.shutdown(Duration::from_millis(100)).await;

    let logs = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
    assert_eq!(ok.seen().len(), 2, "the token did reach the receiver, in the path");
    assert_eq!(ok.seen()[0].path, path);
    for name in ["tg-ok", "tg-500", "tg-hang", "tg-closed"] {
        assert!(logs.contains(name), "no log line names {name}:\n{logs}");
    }
    assert!(logs.contains("notification dropped"), "{logs}");
    assert!(logs.contains("no answer within"), "{logs}");
    assert!(logs.contains("cannot connect"), "{logs}");
    assert!(logs.contains("alert: m1 is offline"), "{logs}");
    assert!(logs.contains("alert resolved"), "{logs}");
    assert!(!logs.contains("SECRET"), "the token leaked into the logs:\n{logs}");
    assert!(!logs.contains("/bot"), "the URL path leaked into the logs:\n{logs}");
}

struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer lock").extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
