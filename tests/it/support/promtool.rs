//! Runs Prometheus's `promtool` (Debian's `prometheus` package, installed by
//! `scripts/test-deps-ops.sh`) when it is on PATH or named by `HOMEOSTAT_PROMTOOL`. Without it a
//! test skips that check, printing why, unless `HOMEOSTAT_REQUIRE_REAL=1`, when it fails.
//!
//! Include with `#[path = "support/promtool.rs"] mod promtool;`.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The promtool binary, or None (after printing SKIP) when it is missing and not required.
pub fn promtool() -> Option<PathBuf> {
    let named = std::env::var_os("HOMEOSTAT_PROMTOOL").map(PathBuf::from);
    let found = named.or_else(|| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths).map(|d| d.join("promtool")).find(|p| p.is_file())
        })
    });
    if found.is_some() {
        return found;
    }
    let required = std::env::var("HOMEOSTAT_REQUIRE_REAL").is_ok_and(|v| v == "1");
    assert!(
        !required,
        "promtool not found and HOMEOSTAT_REQUIRE_REAL=1: run scripts/test-deps-ops.sh \
         (apt-get install prometheus) or set HOMEOSTAT_PROMTOOL"
    );
    eprintln!("SKIP: promtool not found (apt-get install prometheus); its checks are skipped");
    None
}

/// Runs `promtool ARGS` with `stdin`; returns (exit code, stdout + stderr).
pub fn run(promtool: &PathBuf, args: &[&str], stdin: Option<&str>) -> (i32, String) {
    let mut child = Command::new(promtool)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool starts");
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}
