//! Telemetry from real argv commands (a script file, `printf`, `yes`, `sleep`) and from an
//! exporter served over loopback: parsed, merged, and failures reported without breaking the
//! figures that other sources gave.

use crate::support::observe as observe_support;

use std::time::Duration;

use homeostat::desired::TelemetrySource;
use homeostat::observe::telemetry::{self, CommandError, run_command};
use observe_support::{Behaviour, http, refused_addr, response, serve_always};

const TIMEOUT: Duration = Duration::from_secs(5);

fn argv(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

/// Writes an executable script into `dir` and returns its path.
fn script(dir: &tempfile::TempDir, name: &str, body: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.path().join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("the temp dir is writable");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
        .expect("the script is ours to chmod");
    path.display().to_string()
}

/// A script printing nvidia-smi's CSV for two GPUs, one without memory figures: the hottest
/// temperature; memory unknown because one GPU does not report it.
#[tokio::test]
async fn script_output_is_parsed() {
    let dir = tempfile::tempdir().unwrap();
    let smi = script(&dir, "fake-smi", "printf '72, [N/A], [N/A]\\n64, 20000, 24576\\n'");
    let source = TelemetrySource { prometheus: vec![], command: Some(vec![smi]) };
    let t = telemetry::read(&source, &http(1 << 20), TIMEOUT).await;
    assert_eq!(t.gpu_temp_c, Some(72.0));
    assert_eq!(t.vram_used, None);
    assert_eq!(t.error, None);
}

/// `printf` as the command itself, arguments passed as argv (no shell involved).
#[tokio::test]
async fn printf_argv() {
    let out = run_command(&argv(&["printf", "%s, %s, %s\\n", "55", "1024", "8192"]), TIMEOUT, 1024)
        .await
        .unwrap();
    assert_eq!(out, "55, 1024, 8192\n");
    let t = telemetry::parse_nvidia_smi(&out).unwrap();
    assert_eq!(t.vram_total, Some(8192 * 1024 * 1024));
}

/// Shell metacharacters in arguments stay literal: no shell interprets them.
#[tokio::test]
async fn arguments_are_not_interpreted() {
    let out =
        run_command(&argv(&["printf", "%s", "$(echo hi); `x` | y"]), TIMEOUT, 1024).await.unwrap();
    assert_eq!(out, "$(echo hi); `x` | y");
}

/// A non-zero exit is an error with the status and stderr's first line.
#[tokio::test]
async fn failing_command_reports_status_and_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let smi = script(
        &dir,
        "lost-gpu",
        "echo 'Unable to determine the device handle for GPU0000:01:00.0: Unknown Error' >&2\nexit 9",
    );
    match run_command(&[smi], TIMEOUT, 1024).await.unwrap_err() {
        CommandError::Failed { status, stderr, .. } => {
            assert_eq!(status, "exited with status 9");
            assert!(stderr.starts_with("Unable to determine the device handle"), "{stderr}");
        }
        other => panic!("unexpected {other:?}"),
    }
}

/// A command that overruns is killed at the timeout.
#[tokio::test]
async fn slow_command_times_out() {
    let err =
        run_command(&argv(&["sleep", "30"]), Duration::from_millis(200), 1024).await.unwrap_err();
    assert!(matches!(err, CommandError::TimedOut { .. }), "{err:?}");
}

/// Endless output is cut at the cap (the process is killed, not waited for).
#[tokio::test]
async fn endless_output_is_too_large() {
    let err = run_command(&argv(&["yes"]), TIMEOUT, 4096).await.unwrap_err();
    assert!(matches!(err, CommandError::TooLarge { cap: 4096, .. }), "{err:?}");
}

/// A program that does not exist cannot be started; an empty argv is rejected.
#[tokio::test]
async fn missing_program_and_empty_argv() {
    let err = run_command(&argv(&["/nonexistent/nvidia-smi"]), TIMEOUT, 1024).await.unwrap_err();
    assert!(matches!(err, CommandError::Spawn { .. }), "{err:?}");
    assert!(matches!(run_command(&[], TIMEOUT, 1024).await.unwrap_err(), CommandError::Empty));
}

/// An exporter over loopback and a command together: figures from both; an exporter that is
/// down is named in `error` while the others still count.
#[tokio::test]
async fn exporters_and_command_merge() {
    let node_exporter = "node_memory_SwapTotal_bytes 4.0e+09\nnode_memory_SwapFree_bytes 1.0e+09\n";
    let exporter = serve_always(Behaviour::Respond(response(
        200,
        "text/plain; version=0.0.4",
        node_exporter.as_bytes(),
    )))
    .await;
    let down = refused_addr().await;
    let source = TelemetrySource {
        prometheus: vec![format!("http://{down}/metrics"), format!("{}/metrics", exporter.url())],
        command: Some(argv(&["printf", "81, 100, 200\\n"])),
    };
    let t = telemetry::read(&source, &http(1 << 20), TIMEOUT).await;
    assert_eq!(t.swap_used, Some(3_000_000_000));
    assert_eq!(t.gpu_temp_c, Some(81.0));
    assert_eq!(t.vram_total, Some(200 * 1024 * 1024));
    let error = t.error.unwrap();
    assert_eq!(error, format!("exporter http://{down}/metrics: connection refused"));
}
