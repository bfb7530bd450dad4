//! Running a manifest's command (a restart command, a telemetry command): argv only, never a
//! shell; a timeout after which the whole process group is killed; output captured up to a cap
//! (a command printing more is killed: it would otherwise block on a full pipe); and an
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
const STDERR_CAP: u64 = 8 * 1024;

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
    #[error("{program} exited with {status}: {stderr}")]
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

/// Runs `argv` with the environment allow-list, `timeout` and the stdout `cap`. A non-zero exit
/// is not an error here (see `CommandOutput::success`); use `output` for that.
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
    let work = async {
        let mut out = Vec::new();
        let mut err = Vec::new();
        let read_out = async {
            let r = match stdout.as_mut() {
                Some(s) => s.take(cap as u64 + 1).read_to_end(&mut out).await.map(|_| ()),
                None => Ok(()),
            };
            if out.len() > cap {
                // Stop it now: it would block on a full pipe (and keep stderr open) until the
                // timeout otherwise.
                kill_group(pid);
            }
            r
        };
        let read_err = async {
            match stderr.as_mut() {
                Some(s) => s.take(STDERR_CAP).read_to_end(&mut err).await.map(|_| ()),
                None => Ok(()),
            }
        };
        let (a, b) = tokio::join!(read_out, read_err);
        a.and(b).map_err(io_err)?;
        if out.len() > cap {
            return Err(CommandError::TooLarge { program: program.clone(), cap });
        }
        let status = child.wait().await.map_err(io_err)?;
        Ok((status, out, err))
    };
    let result = tokio::time::timeout(timeout, work).await;
    let (status, out, err) = match result {
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
    Ok(CommandOutput {
        code: status.code(),
        stdout: String::from_utf8_lossy(&out).into_owned(),
        stderr: String::from_utf8_lossy(&err).into_owned(),
        took: started.elapsed(),
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
        let status = match out.code {
            Some(c) => format!("status {c}"),
            None => "a signal".to_owned(),
        };
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

    /// A program that does not exist is a spawn error naming it.
    #[tokio::test]
    async fn missing_program() {
        let e = run(&argv(&["/no/such/program"]), Duration::from_secs(1), OUTPUT_CAP)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("/no/such/program"), "{e}");
    }
}
