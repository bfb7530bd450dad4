//! Running a manifest's command (a restart command, a telemetry command): argv only, never a
//! shell; a timeout after which the whole process group is killed; output captured up to a cap
//! (a command printing more on stdout is killed: it would otherwise block on a full pipe; stderr
//! past its cap is read and dropped); exit means done (see [`run`]); and an
//! environment reduced to an allow-list, so a command cannot read homeostat's secrets from its
//! environment.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::process::Command;

/// Environment variables passed through to commands; everything else is dropped.
pub const ENV_ALLOW: &[&str] =
    &["PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ", "TMPDIR"];

/// Default cap on captured stdout.
pub const OUTPUT_CAP: usize = 64 * 1024;

/// Captured stderr is cut at this many bytes.
const STDERR_CAP: usize = 8 * 1024;

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutput {
    /// Exit code; `None` when killed by a signal.
    pub code: Option<i32>,
    /// The signal that ended it, when one did.
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

impl CommandOutput {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// How it ended, for people: "exited with status 1", "killed by signal 9 (SIGKILL)".
    pub fn status_text(&self) -> String {
        describe_exit(self.code, self.signal)
    }

    /// The last lines of stderr (or stdout), for an event or an error message.
    pub fn tail(&self) -> String {
        let text = if self.stderr.trim().is_empty() { &self.stdout } else { &self.stderr };
        let lines: Vec<&str> = text.lines().rev().take(5).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join("\n")
    }
}

/// Why a command gave nothing usable. Never contains a secret (the command comes from the
/// manifest; its output is capped).
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("the command is empty")]
    Empty,
    #[error("cannot start {program}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} did not finish within {} and was killed", crate::desired::Dur(*after))]
    TimedOut { program: String, after: Duration },
    #[error("{program} {status}: {stderr}")]
    Failed { program: String, status: String, stderr: String },
    #[error("{program} printed more than {cap} bytes and was killed")]
    TooLarge { program: String, cap: usize },
    #[error("{program} printed text that is not UTF-8")]
    NotUtf8 { program: String },
    #[error("cannot read the output of {program}")]
    Io {
        program: String,
        #[source]
        source: std::io::Error,
    },
}

/// After the command exits, how long output still arriving on its pipes is read (a background
/// child it started may hold them open: the command is done at its exit, see [`run`]).
const EXIT_GRACE: Duration = Duration::from_millis(200);

/// Runs `argv` with the environment allow-list, `timeout` and the stdout `cap`. A non-zero exit
/// is not an error here (see `CommandOutput::success`); use `output` for that.
///
/// Stdout and stderr are drained together: stdout up to `cap` (more is [`CommandError::TooLarge`]
/// and the group is killed), stderr kept up to 8 KiB and the rest read and dropped, so a chatty
/// command never blocks on a full pipe. **Exit means done**: the command is finished when its
/// own process exits. A child it left running in the background (a restart script starting a
/// server with `&`) is left alone, neither waited for nor killed; if it inherited the pipes they
/// are drained (and dropped) until it closes them, so it never dies of a broken pipe. Only a
/// command still running at `timeout` has its whole process group killed.
pub async fn run(
    argv: &[String],
    timeout: Duration,
    cap: usize,
) -> Result<CommandOutput, CommandError> {
    let (program, args) = argv.split_first().ok_or(CommandError::Empty)?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for key in ENV_ALLOW {
        if let Some(v) = std::env::var_os(key) {
            cmd.env(key, v);
        }
    }
    #[cfg(unix)]
    cmd.process_group(0);
    let started = Instant::now();
    let mut child =
        cmd.spawn().map_err(|source| CommandError::Spawn { program: program.clone(), source })?;
    let pid = child.id();
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let io_err = |source| CommandError::Io { program: program.clone(), source };
    let mut out = Vec::new();
    let mut err = Vec::new();
    let work = async {
        let mut status = None;
        let mut grace_until: Option<tokio::time::Instant> = None;
        let (mut obuf, mut ebuf) = ([0u8; 8192], [0u8; 8192]);
        loop {
            if status.is_some() && stdout.is_none() && stderr.is_none() {
                break;
            }
            let grace = async {
                match grace_until {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = read_some(&mut stdout, &mut obuf) => match r.map_err(io_err)? {
                    0 => stdout = None,
                    n => {
                        out.extend_from_slice(&obuf[..n]);
                        if out.len() > cap {
                            // Stop it now: it would block on a full pipe until the timeout.
                            kill_group(pid);
                            return Err(CommandError::TooLarge { program: program.clone(), cap });
                        }
                    }
                },
                r = read_some(&mut stderr, &mut ebuf) => match r.map_err(io_err)? {
                    0 => stderr = None,
                    n => {
                        let room = STDERR_CAP.saturating_sub(err.len());
                        err.extend_from_slice(&ebuf[..n.min(room)]);
                    }
                },
                s = child.wait(), if status.is_none() => {
                    status = Some(s.map_err(io_err)?);
                    grace_until = Some(tokio::time::Instant::now() + EXIT_GRACE);
                }
                () = grace => break,
            }
        }
        // The loop ends only once the exit status is known.
        status.ok_or_else(|| io_err(std::io::Error::other("no exit status")))
    };
    let result = tokio::time::timeout(timeout, work).await;
    let status = match result {
        Ok(Ok(done)) => done,
        Ok(Err(e)) => {
            kill_group(pid);
            return Err(e);
        }
        Err(_) => {
            kill_group(pid);
            return Err(CommandError::TimedOut { program: program.clone(), after: timeout });
        }
    };
    // Pipes still open after the exit belong to a background child: drain them (discarding) until
    // it closes them, so its writes never fail; it is not ours to wait for or to kill.
    if stdout.is_some() || stderr.is_some() {
        tracing::debug!(program = %program,
            "the command exited leaving a background process with its output open; left alone");
        tokio::spawn(drain(stdout, stderr));
    }
    Ok(CommandOutput {
        code: status.code(),
        signal: signal_of(&status),
        stdout: String::from_utf8_lossy(&out).into_owned(),
        stderr: String::from_utf8_lossy(&err).into_owned(),
        took: started.elapsed(),
    })
}

/// Reads into `buf` from the pipe if it is still open; never resolves for a closed one.
async fn read_some<R: tokio::io::AsyncRead + Unpin>(
    pipe: &mut Option<R>,
    buf: &mut [u8],
) -> std::io::Result<usize> {
    match pipe.as_mut() {
        Some(p) => p.read(buf).await,
        None => std::future::pending().await,
    }
}

/// Reads both pipes to their end, dropping what arrives.
async fn drain(
    mut stdout: Option<tokio::process::ChildStdout>,
    mut stderr: Option<tokio::process::ChildStderr>,
) {
    let a = async {
        if let Some(s) = stdout.as_mut() {
            let _ = tokio::io::copy(s, &mut tokio::io::sink()).await;
        }
    };
    let b = async {
        if let Some(s) = stderr.as_mut() {
            let _ = tokio::io::copy(s, &mut tokio::io::sink()).await;
        }
    };
    tokio::join!(a, b);
}

#[cfg(unix)]
fn signal_of(status: &std::process::ExitStatus) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    status.signal()
}

#[cfg(not(unix))]
fn signal_of(_status: &std::process::ExitStatus) -> Option<i32> {
    None
}

/// How a process ended, for people: "exited with status 1", "killed by signal 9 (SIGKILL)".
pub fn describe_exit(code: Option<i32>, signal: Option<i32>) -> String {
    match (code, signal) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(s)) => match signal_name(s) {
            Some(name) => format!("killed by signal {s} ({name})"),
            None => format!("killed by signal {s}"),
        },
        (None, None) => "ended without an exit status".to_owned(),
    }
}

fn signal_name(s: i32) -> Option<&'static str> {
    Some(match s {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        _ => return None,
    })
}

/// Runs `argv` like `run` and returns its stdout; a non-zero exit is an error carrying the
/// first line of stderr, and stdout must be UTF-8.
pub async fn output(
    argv: &[String],
    timeout: Duration,
    cap: usize,
) -> Result<String, CommandError> {
    let program = argv.first().cloned().unwrap_or_default();
    let out = run(argv, timeout, cap).await?;
    if !out.success() {
        let first = out.stderr.lines().next().unwrap_or("").trim();
        let status = out.status_text();
        let stderr = match first.char_indices().nth(200) {
            Some((i, _)) => format!("{}…", &first[..i]),
            None => first.to_owned(),
        };
        return Err(CommandError::Failed { program, status, stderr });
    }
    if out.stdout.contains('\u{FFFD}') {
        return Err(CommandError::NotUtf8 { program });
    }
    Ok(out.stdout)
}

/// Kills the child's whole process group (it leads its own: `process_group(0)`). `kill` runs as
/// a program rather than through libc so the crate stays free of unsafe code.
#[cfg(unix)]
fn kill_group(pid: Option<u32>) {
    if let Some(pid) = pid {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{pid}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

#[cfg(not(unix))]
fn kill_group(_pid: Option<u32>) {}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(parts: &[&str]) -> Vec<String> {
        parts.iter().map(|s| s.to_string()).collect()
    }

    /// A command runs as argv: shell syntax in an argument is just text.
    #[tokio::test]
    async fn argv_is_not_a_shell() {
        let out = run(&argv(&["echo", "a; echo b", "$HOME"]), Duration::from_secs(5), OUTPUT_CAP)
            .await
            .unwrap();
        assert!(out.success());
        assert_eq!(out.stdout, "a; echo b $HOME\n");
    }

    /// Exit codes and stderr are reported.
    #[tokio::test]
    async fn failure_is_reported() {
        let out = run(&argv(&["ls", "/definitely/not/here"]), Duration::from_secs(5), OUTPUT_CAP)
            .await
            .unwrap();
        assert!(!out.success());
        assert!(out.tail().contains("/definitely/not/here"), "{}", out.tail());
    }

    /// A command past its timeout is killed, with its children, and reported as such.
    #[tokio::test]
    async fn timeout_kills_the_group() {
        let started = Instant::now();
        let e =
            run(&argv(&["sleep", "30"]), Duration::from_millis(200), OUTPUT_CAP).await.unwrap_err();
        assert!(matches!(e, CommandError::TimedOut { .. }), "{e}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    /// Only allow-listed variables reach the command (secrets in homeostat's environment stay).
    #[tokio::test]
    async fn environment_is_allow_listed() {
        let out = run(&argv(&["env"]), Duration::from_secs(5), OUTPUT_CAP).await.unwrap();
        for line in out.stdout.lines() {
            let key = line.split('=').next().unwrap_or("");
            assert!(ENV_ALLOW.contains(&key), "unexpected variable {key}");
        }
    }

    /// Issue 17, failure 6: a command writing more than 8 KiB to stderr blocked on the full pipe
    /// (no longer drained past the cap) and was reported as a timeout. Now it finishes; the
    /// first 8 KiB of stderr are kept.
    #[tokio::test]
    async fn a_chatty_stderr_is_not_a_timeout() {
        let script = "head -c 200000 /dev/zero | tr '\\0' e >&2; echo done";
        let out =
            run(&argv(&["sh", "-c", script]), Duration::from_secs(20), OUTPUT_CAP).await.unwrap();
        assert!(out.success(), "{}", out.status_text());
        assert_eq!(out.stdout, "done\n");
        assert_eq!(out.stderr.len(), STDERR_CAP);
    }

    /// Issue 17, failure 6: a restart script that starts a server in the background and exits
    /// 0 was reported as a timeout (the child holds the pipes) and the child was killed with the
    /// group. Exit means done: the command succeeds at its exit and the child keeps running.
    #[tokio::test]
    async fn exit_means_done_and_the_background_child_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let script = format!("sleep 30 & echo $! > {}; echo started", pidfile.display());
        let started = Instant::now();
        let out =
            run(&argv(&["sh", "-c", &script]), Duration::from_secs(10), OUTPUT_CAP).await.unwrap();
        assert!(out.success(), "{}", out.status_text());
        assert_eq!(out.stdout, "started\n");
        assert!(started.elapsed() < Duration::from_secs(5), "it waited for the child");
        let pid = std::fs::read_to_string(&pidfile).unwrap().trim().to_owned();
        let alive = std::process::Command::new("kill").args(["-0", &pid]).status().unwrap();
        assert!(alive.success(), "the background child was killed");
        let _ = std::process::Command::new("kill").args(["-KILL", &pid]).status();
    }

    /// Issue 17 (weak spot): "exited with Some(1)" is worded for people.
    #[tokio::test]
    async fn exit_status_is_worded_for_people() {
        let out =
            run(&argv(&["sh", "-c", "exit 3"]), Duration::from_secs(5), OUTPUT_CAP).await.unwrap();
        assert_eq!(out.status_text(), "exited with status 3");
        let out = run(&argv(&["sh", "-c", "kill -9 $$"]), Duration::from_secs(5), OUTPUT_CAP)
            .await
            .unwrap();
        assert_eq!(out.status_text(), "killed by signal 9 (SIGKILL)");
        let e = output(&argv(&["sh", "-c", "echo nope >&2; exit 1"]), Duration::from_secs(5), 100)
            .await
            .unwrap_err()
            .to_string();
        assert_eq!(e, "sh exited with status 1: nope");
    }

    /// A program that does not exist is a spawn error naming it.
    #[tokio::test]
    async fn missing_program() {
        let e = run(&argv(&["/no/such/program"]), Duration::from_secs(1), OUTPUT_CAP)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("/no/such/program"), "{e}");
    }
}
