//! Security (issue 8, item 5): secrets planted in every place a secret can come from (node
//! tokens by environment variable and by file, a wrong token the node refuses, a token a hostile
//! server echoes back in its error, notifier URLs) never appear in any output channel: stdout
//! and stderr of every command (with trace logging, text and JSON), events.jsonl, the diff in
//! both formats, status, history, routes.json, error messages, and the raw bytes of the SQLite
//! database and its WAL. Commands from manifests get argv verbatim (shell metacharacters are
//! not interpreted) and an environment without homeostat's secrets. The state directory is 0700
//! and its files 0600.

#![allow(clippy::unwrap_used)]

use crate::support::harness;
use crate::support::hostile;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use harness::{Harness, split};
use homeostat::command;

/// The secrets, each distinct and unlikely to appear by chance.
const S_ENV: &str = "sEcReT-env-7f3a9c2e51d04b68";
const S_FILE: &str = "sEcReT-file-0b1e84d2c9a7f356";
const S_WRONG: &str = "sEcReT-wrong-5c6d7e8f9a0b1c2d";
const S_ECHO: &str = "sEcReT-echo-a1b2c3d4e5f60718";
const S_HOOK: &str = "sEcReT-hook-99f0e1d2c3b4a596";
const S_TELEGRAM: &str = "sEcReT-tg-123456789:AAHfiqksKZ8";
/// In homeostat's environment but referenced by nothing: a command must not see it either.
const S_OTHER: &str = "sEcReT-other-3141592653589793";
const SECRETS: [&str; 7] = [S_ENV, S_FILE, S_WRONG, S_ECHO, S_HOOK, S_TELEGRAM, S_OTHER];

const SIM: &str = "
nodes:
  - name: envnode
    backend: lmstudio
    listen: 127.0.0.1:0
    vram: 24GiB
    load-time: 20ms
    token: sEcReT-env-7f3a9c2e51d04b68
    models:
      - { name: qwen/qwen3-8b, size: 6GiB, loaded: false, context-length: 8192 }
  - name: filenode
    backend: vllm
    listen: 127.0.0.1:0
    vram: 24GiB
    token: sEcReT-file-0b1e84d2c9a7f356
    models:
      - { name: org/served, size: 6GiB, loaded: true }
  - name: wrongnode
    backend: lmstudio
    listen: 127.0.0.1:0
    vram: 24GiB
    token: the-right-token-is-not-the-one-we-send
    models:
      - { name: qwen/qwen3-8b, size: 6GiB, loaded: true, context-length: 8192 }
";

/// Millisecond waits; the mass-failure hold off (most nodes here fail on purpose, and the hold
/// would only keep the heals this test wants to see).
const CLUSTER: &str = "\
apiVersion: homeostat.dev/v1
kind: Cluster
metadata: { name: sec }
spec:
  reconcileInterval: 200ms
  probe: { timeout: 500ms, localTimeout: 500ms, retryDelay: 5ms }
  heal:
    failureThreshold: 2
    actionDelay: 10ms
    maxAttempts: 3
    unloadSettle: 10ms
    loadTimeout: 2s
    restartTimeout: 2s
    backoffInitial: 10ms
    backoffMax: 50ms
  breaker: { failureThreshold: 3, coolDown: 1s }
  massFailure: { fraction: 0.95, minFailing: 10 }
";

/// Shell metacharacters a restart command's arguments carry; a shell would run the `touch`es.
fn hostile_args(dir: &Path) -> Vec<String> {
    let p = |n: &str| dir.join(n).display().to_string();
    vec![
        format!("$(touch {})", p("pwned1")),
        format!("`touch {}`", p("pwned2")),
        format!("; touch {}", p("pwned3")),
        format!("| touch {}", p("pwned4")),
        format!("&& touch {} #", p("pwned5")),
        format!("> {}", p("pwned6")),
        "*".to_owned(),
        "$HOME ${PATH} '\"".to_owned(),
        "two words\nand a newline".to_owned(),
    ]
}

fn assert_not_pwned(dir: &Path) {
    for i in 1..=6 {
        assert!(!dir.join(format!("pwned{i}")).exists(), "pwned{i}: an argument reached a shell");
    }
}

fn manifests(h_dir: &Path, sim: &homeostat::sim::SimCluster, echo: &str) -> String {
    let token_file = h_dir.join("filenode.token");
    std::fs::write(&token_file, format!("{S_FILE}\n")).unwrap();
    let tg_file = h_dir.join("telegram.url");
    std::fs::write(&tg_file, format!("http://127.0.0.1:9/bot{S_TELEGRAM}/sendMessage\n")).unwrap();
    // The restart command records its environment and its arguments; the arguments are given
    // to `sh` as positional parameters ("$@"), which a shell never re-parses: if homeostat
    // joined the argv into a string, the metacharacters would run.
    let mut restart = vec![
        "/bin/sh".to_owned(),
        "-c".to_owned(),
        format!(
            "env > '{}'; printf '%s\\n' \"$@\" > '{}'; exit 3",
            h_dir.join("restart.env").display(),
            h_dir.join("restart.argv").display()
        ),
        "sh".to_owned(),
    ];
    restart.extend(hostile_args(h_dir));
    let restart = serde_json::to_string(&restart).unwrap();
    let node = |name: &str, backend: &str, url: &str, auth: &str, model: &str| {
        format!(
            "apiVersion: homeostat.dev/v1\nkind: Node\nmetadata: {{ name: {name} }}\nspec:\n  backend: {backend}\n  url: {url}\n  auth: {{ bearerTokenFrom: {auth} }}\n  vram: 24GiB\n  models:\n    - {{ name: {model}, size: 6GiB }}\n"
        )
    };
    [
        CLUSTER.to_owned(),
        node(
            "envnode",
            "lmstudio",
            &sim.url("envnode").unwrap(),
            "{ env: HOMEOSTAT_TEST_TOKEN_A }",
            "qwen/qwen3-8b",
        ),
        node(
            "filenode",
            "vllm",
            &sim.url("filenode").unwrap(),
            &format!("{{ file: '{}' }}", token_file.display()),
            "org/served",
        ),
        node(
            "wrongnode",
            "lmstudio",
            &sim.url("wrongnode").unwrap(),
            "{ env: HOMEOSTAT_TEST_TOKEN_WRONG }",
            "qwen/qwen3-8b",
        ),
        node("echonode", "lmstudio", echo, "{ env: HOMEOSTAT_TEST_TOKEN_ECHO }", "qwen/qwen3-8b"),
        format!(
            "apiVersion: homeostat.dev/v1\nkind: Service\nmetadata: {{ name: gateway }}\nspec:\n  probe: {{ url: \"http://127.0.0.1:9/health\" }}\n  restart: {{ command: {restart} }}\n"
        ),
        "apiVersion: homeostat.dev/v1\nkind: Notifier\nmetadata: { name: hook }\nspec:\n  type: webhook\n  urlFrom: { env: HOMEOSTAT_TEST_HOOK }\n  severities: [critical, warning]\n".to_owned(),
        format!(
            "apiVersion: homeostat.dev/v1\nkind: Notifier\nmetadata: {{ name: tg }}\nspec:\n  type: telegram\n  urlFrom: {{ file: '{}' }}\n  chatId: \"42\"\n",
            tg_file.display()
        ),
    ]
    .join("---\n")
}

/// Every secret planted at once, through every command; no output and no file holds any.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_any_output_or_file() {
    // A hostile LM Studio: lists its model as downloaded but not loaded (so homeostat loads
    // it), and answers the load with an error that echoes the bearer token it was sent, as a
    // careless server might.
    let echo = hostile::serve(|path| {
        if path == "/api/v1/models" {
            hostile::json(200, r#"{"models":[{"key":"qwen/qwen3-8b","loaded_instances":[]}]}"#)
        } else if path.starts_with("/api/v1/models/load") {
            hostile::json(
                500,
                &format!(
                    r#"{{"error":{{"message":"bad request from Bearer {S_ECHO}","type":"x"}}}}"#
                ),
            )
        } else {
            hostile::normal(path)
        }
    })
    .await;
    let echo_url = echo.url();
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().to_path_buf();
    let h = Harness::start(SIM, |sim| manifests(&work, sim, &echo_url)).await;

    let run = |args: Vec<&'static str>, log: Option<&'static str>| {
        let mut c = h.command(&args);
        c.env("HOMEOSTAT_TEST_TOKEN_A", S_ENV)
            .env("HOMEOSTAT_TEST_TOKEN_WRONG", S_WRONG)
            .env("HOMEOSTAT_TEST_TOKEN_ECHO", S_ECHO)
            .env("HOMEOSTAT_TEST_HOOK", format!("http://127.0.0.1:9/hook/{S_HOOK}"))
            .env("HOMEOSTAT_TEST_OTHER", S_OTHER);
        if let Some(l) = log {
            c.env("HOMEOSTAT_LOG", l);
        }
        async move {
            let o = tokio::task::spawn_blocking(move || c.output().unwrap()).await.unwrap();
            let (code, out, err) = split(o);
            (args.join(" "), code, out, err)
        }
    };

    let mut outputs = Vec::new();
    outputs.push(run(vec!["validate"], None).await);
    outputs.push(run(vec!["reconcile", "diff"], None).await);
    outputs.push(run(vec!["reconcile", "diff", "-o", "json"], Some("trace")).await);
    // Several passes: failures are counted, then heals, escalations and the restart run.
    for (i, args) in [
        vec!["reconcile", "--once", "-vv"],
        vec!["reconcile", "--once", "-vv", "--log-format", "json"],
        vec!["reconcile", "--once"],
        vec!["reconcile", "--once", "-vv"],
    ]
    .into_iter()
    .enumerate()
    {
        outputs.push(run(args, if i == 1 { Some("trace") } else { None }).await);
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    outputs.push(run(vec!["reconcile", "diff", "-vv"], None).await);
    outputs.push(run(vec!["status"], None).await);
    outputs.push(run(vec!["status", "-o", "json"], None).await);
    outputs.push(run(vec!["history"], None).await);
    outputs.push(run(vec!["history", "-o", "json"], None).await);

    // The secrets were really in play: the tokens opened their nodes, the wrong one was
    // refused, the echoing server received its token, the restart command ran.
    let status = &outputs.iter().find(|o| o.0 == "status -o json").unwrap().2;
    let status: serde_json::Value = serde_json::from_str(status).unwrap();
    let text = status.to_string();
    assert!(
        h.node("envnode").state().instances.iter().any(|i| i.model == "qwen/qwen3-8b"),
        "envnode was healed with its token: {text}"
    );
    let all_out: String = outputs.iter().map(|o| format!("{}\n{}\n", o.2, o.3)).collect();
    assert!(all_out.contains("401"), "wrongnode's refusal is reported");
    assert!(
        echo.requests().iter().any(|r| r.contains(&format!("Bearer {S_ECHO}"))),
        "the echoing server received its token"
    );
    assert!(
        echo.request_lines().iter().any(|l| l.starts_with("POST /api/v1/models/load")),
        "a load was sent to the echoing server (its error carries the token)"
    );
    if std::env::var_os("HOMEOSTAT_TEST_DEBUG").is_some() {
        for o in &outputs {
            eprintln!("== {} -> {}\n{}\n{}", o.0, o.1, o.2, &o.3[..o.3.len().min(3000)]);
        }
    }
    let env_file = std::fs::read_to_string(work.join("restart.env"))
        .expect("the gateway's restart command ran");

    // No output channel holds a secret.
    for (cmd, code, out, err) in &outputs {
        assert!(*code >= 0, "{cmd}: killed");
        for s in SECRETS {
            assert!(!out.contains(s), "{cmd}: stdout holds {s}:\n{out}");
            assert!(!err.contains(s), "{cmd}: stderr holds {s}:\n{err}");
        }
    }
    // The trace run produced real logs (the grep above read something).
    assert!(outputs.iter().any(|o| o.3.len() > 10_000), "trace logs were written");

    // No file of the state directory holds a secret, byte for byte (SQLite, WAL, events).
    let files = files_under(&h.state_dir());
    let names: Vec<String> =
        files.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    for want in ["events.jsonl", "routes.json"] {
        assert!(names.iter().any(|n| n == want), "{want} is written: {names:?}");
    }
    assert!(names.iter().any(|n| n.ends_with(".db") || n.ends_with(".sqlite")), "{names:?}");
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        for s in SECRETS {
            assert!(
                !bytes.windows(s.len()).any(|w| w == s.as_bytes()),
                "{} holds {s}",
                f.display()
            );
        }
    }
    let events = std::fs::read_to_string(h.state_dir().join("events.jsonl")).unwrap();
    assert!(events.lines().count() >= 3, "events were written:\n{events}");

    // The command ran with the allow-listed environment only.
    assert!(env_file.contains("PATH="), "{env_file}");
    for s in SECRETS {
        assert!(!env_file.contains(s), "the restart command saw {s}");
    }
    assert!(!env_file.contains("HOMEOSTAT_"), "homeostat's variables leaked:\n{env_file}");

    // Its arguments arrived verbatim: one line per argument, nothing expanded.
    let argv = std::fs::read_to_string(work.join("restart.argv")).unwrap();
    assert_eq!(argv, format!("{}\n", hostile_args(&work).join("\n")));
    assert_not_pwned(&work);

    // The state directory is private.
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&h.state_dir()), 0o700, "state dir mode");
    for f in &files {
        assert_eq!(mode(f) & 0o077, 0, "{} is readable by others: {:o}", f.display(), mode(f));
    }
}

/// Every regular file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if p.is_file() {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// `command::run` passes each argument as one argv entry: shell metacharacters, globs,
/// variables and newlines reach the program unchanged and nothing runs them.
#[tokio::test]
async fn commands_are_argv_never_a_shell_string() {
    let tmp = tempfile::tempdir().unwrap();
    let mut argv = vec!["printf".to_owned(), "%s\\n".to_owned()];
    argv.extend(hostile_args(tmp.path()));
    let out = command::run(&argv, Duration::from_secs(10), command::OUTPUT_CAP).await.unwrap();
    assert!(out.success(), "{out:?}");
    assert_eq!(out.stdout, format!("{}\n", hostile_args(tmp.path()).join("\n")));
    assert_not_pwned(tmp.path());

    // A whole command line in one string is one program name, not a shell line.
    let one = vec![format!("touch {}", tmp.path().join("pwned1").display())];
    let err = command::run(&one, Duration::from_secs(10), command::OUTPUT_CAP).await.unwrap_err();
    assert!(matches!(err, command::CommandError::Spawn { .. }), "{err:?}");
    assert_not_pwned(tmp.path());
}

/// The API's bearer token.
const S_API: &str = "sEcReT-api-8e7d6c5b4a392817";

/// The daemon (the real binary, trace logs) with every secret of the test above plus the API
/// token, and the webhook pointing at a loopback receiver: no API answer (`/api/v1/status`,
/// events, routes, `/metrics`, health), no webhook delivery (headers and body), no log line and
/// no file of the state directory holds a secret. Mutating calls without the token, or with a
/// wrong one, are refused with a JSON error that does not echo the token sent; with the right
/// token they succeed without echoing it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_never_leaks_a_secret() {
    let echo = hostile::serve(|path| {
        if path == "/api/v1/models" {
            hostile::json(200, r#"{"models":[{"key":"qwen/qwen3-8b","loaded_instances":[]}]}"#)
        } else if path.starts_with("/api/v1/models/load") {
            hostile::json(
                500,
                &format!(
                    r#"{{"error":{{"message":"bad request from Bearer {S_ECHO}","type":"x"}}}}"#
                ),
            )
        } else {
            hostile::normal(path)
        }
    })
    .await;
    let hook = Receiver::start().await;
    let echo_url = echo.url();
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().to_path_buf();
    let h = Harness::start(SIM, |sim| {
        manifests(&work, sim, &echo_url).replacen(
            "  massFailure:",
            "  api: { tokenFrom: { env: HOMEOSTAT_TEST_API_TOKEN } }\n  massFailure:",
            1,
        )
    })
    .await;
    let log = work.join("daemon.log");
    let mut c = h.command(&["reconcile", "--listen", "127.0.0.1:0", "-vv"]);
    c.env("HOMEOSTAT_TEST_TOKEN_A", S_ENV)
        .env("HOMEOSTAT_TEST_TOKEN_WRONG", S_WRONG)
        .env("HOMEOSTAT_TEST_TOKEN_ECHO", S_ECHO)
        .env("HOMEOSTAT_TEST_HOOK", format!("{}/hook/{S_HOOK}", hook.url()))
        .env("HOMEOSTAT_TEST_OTHER", S_OTHER)
        .env("HOMEOSTAT_TEST_API_TOKEN", S_API)
        .env("HOMEOSTAT_LOG", "trace")
        .stdout(std::fs::File::create(work.join("daemon.out")).unwrap())
        .stderr(std::fs::File::create(&log).unwrap());
    let mut child = c.spawn().expect("homeostat starts");
    let addr_file = h.state_dir().join(homeostat::daemon::API_ADDR_FILE);
    let start = std::time::Instant::now();
    let addr = loop {
        if let Ok(a) = std::fs::read_to_string(&addr_file)
            && !a.trim().is_empty()
        {
            break a.trim().to_owned();
        }
        if let Some(st) = child.try_wait().unwrap() {
            panic!("the daemon exited ({st}): {}", std::fs::read_to_string(&log).unwrap());
        }
        assert!(start.elapsed() < Duration::from_secs(30), "the daemon did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = |p: &str| format!("http://{addr}{p}");

    // Let it heal, fail, escalate and notify: a webhook delivery arrives.
    let delivered = harness::wait_for(Duration::from_secs(30), || {
        hook.requests().iter().any(|r| r.starts_with("POST /hook/"))
    })
    .await;
    assert!(delivered, "a webhook delivery arrived: {}", std::fs::read_to_string(&log).unwrap());
    let healed = harness::wait_for(Duration::from_secs(20), || {
        h.node("envnode").state().instances.iter().any(|i| i.model == "qwen/qwen3-8b")
    })
    .await;
    assert!(healed, "envnode was healed with its token");

    // Every read endpoint.
    let mut answers: Vec<(String, u16, String)> = Vec::new();
    for p in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/api/v1/status?actions=100",
        "/api/v1/routes",
        "/api/v1/events?since=0&limit=1000",
        "/api/v1/nosuch",
    ] {
        let r = client.get(url(p)).send().await.unwrap();
        let code = r.status().as_u16();
        answers.push((format!("GET {p}"), code, r.text().await.unwrap()));
    }
    let status: serde_json::Value = serde_json::from_str(&answers[3].2).unwrap();
    assert!(status["nodes"]["wrongnode"].to_string().contains("401"), "{status}");
    assert!(answers[5].2.contains("action.started"), "events are listed: {}", answers[5].2);
    assert!(answers[2].2.contains("homeostat_"), "metrics are served");

    // Mutating calls: refused without the token or with a wrong one, never echoing it.
    let post = |p: &str, token: Option<&str>| {
        let mut r = client.post(url(p)).header("content-type", "application/json");
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.body(r#"{"reason": "maintenance"}"#)
    };
    for (label, token, want) in [
        ("no token", None, 401),
        ("wrong token", Some(S_WRONG), 401),
        ("token of a node", Some(S_ENV), 401),
        ("right token", Some(S_API), 200),
    ] {
        for p in ["/api/v1/nodes/envnode/cordon", "/api/v1/nodes/envnode/uncordon"] {
            let r = post(p, token).send().await.unwrap();
            let code = r.status().as_u16();
            let headers = format!("{:?}", r.headers());
            let body = r.text().await.unwrap();
            assert_eq!(code, want, "{label} POST {p}: {body}");
            if want == 401 {
                let err: serde_json::Value = serde_json::from_str(&body).unwrap();
                assert!(err["error"].is_string(), "a JSON error: {body}");
            }
            answers.push((format!("{label} POST {p} {headers}"), code, body));
        }
    }
    let r = post("/api/v1/reload", Some(S_WRONG)).send().await.unwrap();
    answers.push(("wrong token reload".into(), r.status().as_u16(), r.text().await.unwrap()));
    // A token in a header other than Authorization or in a malformed one is not accepted either.
    let r = client
        .post(url("/api/v1/reload"))
        .header("authorization", format!("Token {S_API}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    answers.push(("scheme Token".into(), 401, r.text().await.unwrap()));

    // Graceful stop, then every byte the daemon wrote is checked.
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -TERM");
    let stopped = tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap();
    assert!(stopped.success(), "the daemon stopped cleanly: {stopped}");
    let logs = std::fs::read_to_string(&log).unwrap()
        + &std::fs::read_to_string(work.join("daemon.out")).unwrap();
    assert!(logs.len() > 10_000, "trace logs were written");
    assert!(logs.contains("homeostat daemon started"), "the daemon's log was captured");

    for (what, _, body) in &answers {
        for s in SECRETS.iter().chain([&S_API]) {
            assert!(!body.contains(s), "{what}: the answer holds {s}:\n{body}");
            assert!(!what.contains(s), "{what}: the headers hold {s}");
        }
    }
    for s in SECRETS.iter().chain([&S_API]) {
        assert!(!logs.contains(s), "the daemon's log holds {s}");
    }
    // Deliveries: the hook's own URL carries its secret (it is where the operator sent it);
    // nothing else in the request (headers, body) does, nor any other secret.
    let deliveries = hook.requests();
    assert!(!deliveries.is_empty());
    for d in &deliveries {
        let (line, rest) = d.split_once('\n').unwrap_or((d, ""));
        assert!(line.contains(S_HOOK), "{line}");
        for s in SECRETS.iter().chain([&S_API]) {
            assert!(!rest.contains(s), "a webhook delivery holds {s}:\n{d}");
        }
        assert!(!line.contains(S_API) && !line.contains(S_ENV), "{line}");
    }
    for f in files_under(&h.state_dir()) {
        let bytes = std::fs::read(&f).unwrap();
        for s in SECRETS.iter().chain([&S_API]) {
            assert!(
                !bytes.windows(s.len()).any(|w| w == s.as_bytes()),
                "{} holds {s}",
                f.display()
            );
        }
    }
}

/// A loopback webhook receiver that records each request whole: its line, headers and body.
struct Receiver {
    addr: std::net::SocketAddr,
    got: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Receiver {
    async fn start() -> Receiver {
        use axum::http::{HeaderMap, Method, Uri};
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let keep = got.clone();
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: axum::body::Bytes| {
                let keep = keep.clone();
                async move {
                    let mut r = format!("{method} {uri}\n");
                    for (k, v) in &headers {
                        r.push_str(&format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes())));
                    }
                    r.push('\n');
                    r.push_str(&String::from_utf8_lossy(&body));
                    keep.lock().unwrap().push(r);
                    "{}"
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { addr, got }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn requests(&self) -> Vec<String> {
        self.got.lock().unwrap().clone()
    }
}
