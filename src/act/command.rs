//! Running a manifest's command (restart, telemetry): argv only, never a shell; a timeout after
//! which the whole process group is killed; output captured up to a cap; and an environment
//! reduced to an allow-list, so a command cannot read homeostat's secrets from its environment.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::process::Command;

/// Environment variables passed through to commands; everything else is dropped.
pub const ENV_ALLOW: &[&str] =
    &["PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ", "TMPDIR"];

/// Captured output is cut at this many bytes per stream.
pub const OUTPUT_CAP: usize = 64 * 1024;

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutput {
    /// Exit code; `None` when killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

impl CommandOutput {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// The last lines of stderr (or stdout), for an event or an error message.
    pub fn tail(&self) -> String {
        let text = if self.stderr.trim().is_empty() { &self.stdout } else { &self.stderr };
        let lines: Vec<&str> = text.lines().rev().take(5).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join("\n")
    }
}

/// Why a command did not run to completion.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("empty command")]
    Empty,
    #[error("cannot start `{program}`")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{program}` did not finish within {}s and was killed", .after.as_secs_f64())]
    Timeout { program: String, after: Duration },
    #[error("waiting for `{program}` failed")]
    Wait {
        program: String,
        #[source]
        source: std::io::Error,
    },
}

/// Runs `argv` with the environment allow-list and `timeout`. On timeout the process group is
/// killed (SIGKILL) so no child lingers.
pub async fn run(argv: &[String], timeout: Duration) -> Result<CommandOutput, CommandError> {
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
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let read_out = async move { read_capped(out.as_mut()).await };
    let read_err = async move { read_capped(err.as_mut()).await };
    let waited = tokio::time::timeout(timeout, async {
        let (status, stdout, stderr) = tokio::join!(child.wait(), read_out, read_err);
        (status, stdout, stderr)
    })
    .await;
    match waited {
        Ok((status, stdout, stderr)) => {
            let status =
                status.map_err(|source| CommandError::Wait { program: program.clone(), source })?;
            Ok(CommandOutput { code: status.code(), stdout, stderr, took: started.elapsed() })
        }
        Err(_) => {
            kill_group(&child);
            let _ = child.kill().await;
            Err(CommandError::Timeout { program: program.clone(), after: timeout })
        }
    }
}

#[cfg(unix)]
fn kill_group(child: &tokio::process::Child) {
    if let Some(pid) = child.id() {
        // The child leads its own process group (process_group(0)); kill all of it. `kill` is
        // run as a program rather than through libc so this crate stays free of unsafe code.
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{pid}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

#[cfg(not(unix))]
fn kill_group(_child: &tokio::process::Child) {}

async fn read_capped<R: tokio::io::AsyncRead + Unpin>(r: Option<&mut R>) -> String {
    let Some(r) = r else { return String::new() };
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match r.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = OUTPUT_CAP.saturating_sub(buf.len());
                buf.extend_from_slice(&chunk[..n.min(room)]);
                // Keep draining past the cap so the child never blocks on a full pipe.
            }
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(parts: &[&str]) -> Vec<String> {
        parts.iter().map(|s| s.to_string()).collect()
    }

    /// A command runs as argv: shell syntax in an argument is just text.
    #[tokio::test]
    async fn argv_is_not_a_shell() {
        let out =
            run(&argv(&["echo", "a; echo b", "$HOME"]), Duration::from_secs(5)).await.unwrap();
        assert!(out.success());
        assert_eq!(out.stdout, "a; echo b $HOME\n");
    }

    /// Exit codes and stderr are reported.
    #[tokio::test]
    async fn failure_is_reported() {
        let out =
            run(&argv(&["ls", "/definitely/not/here"]), Duration::from_secs(5)).await.unwrap();
        assert!(!out.success());
        assert!(out.tail().contains("/definitely/not/here"), "{}", out.tail());
    }

    /// A command past its timeout is killed, with its children, and reported as such.
    #[tokio::test]
    async fn timeout_kills_the_group() {
        let started = Instant::now();
        let e = run(&argv(&["sleep", "30"]), Duration::from_millis(200)).await.unwrap_err();
        assert!(matches!(e, CommandError::Timeout { .. }), "{e}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    /// Only allow-listed variables reach the command (secrets in homeostat's environment stay).
    #[tokio::test]
    async fn environment_is_allow_listed() {
        let out = run(&argv(&["env"]), Duration::from_secs(5)).await.unwrap();
        for line in out.stdout.lines() {
            let key = line.split('=').next().unwrap_or("");
            assert!(ENV_ALLOW.contains(&key), "unexpected variable {key}");
        }
    }

    /// A program that does not exist is a spawn error naming it.
    #[tokio::test]
    async fn missing_program() {
        let e = run(&argv(&["/no/such/program"]), Duration::from_secs(1)).await.unwrap_err();
        assert!(e.to_string().contains("/no/such/program"), "{e}");
    }
}
