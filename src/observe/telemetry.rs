//! Host and GPU telemetry: from Prometheus exporters a node already runs, and/or from an argv
//! command printing `nvidia-smi --query-gpu=temperature.gpu,memory.used,memory.total
//! --format=csv,noheader,nounits`.
//!
//! Exporter names read:
//! - dcgm-exporter: `DCGM_FI_DEV_GPU_TEMP` (°C), `DCGM_FI_DEV_FB_USED` / `_FREE` / `_RESERVED`
//!   (MiB; total = used + free + reserved), `DCGM_FI_DEV_XID_ERRORS` (the last Xid seen).
//! - nvidia_gpu_exporter: `nvidia_smi_temperature_gpu`, `nvidia_smi_memory_used_bytes`,
//!   `nvidia_smi_memory_total_bytes`.
//! - node_exporter: `node_memory_SwapTotal_bytes` − `node_memory_SwapFree_bytes`, and
//!   `node_filesystem_size_bytes` / `_avail_bytes` of the fullest real, writable filesystem
//!   (pseudo and layered filesystems such as tmpfs, overlay and squashfs are ignored).
//!
//! Several GPUs: the hottest temperature, the summed memory. Several sources: the first source
//! listed that knows a figure gives it (exporters in order, then the command). A source that
//! fails leaves its figures unknown and says why in `Telemetry::error`; telemetry never makes a
//! node unreachable.
//!
//! The command runs as argv (never through a shell), with the probe timeout, its output capped;
//! it is killed when it overruns.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;

use crate::desired::TelemetrySource;
use crate::observe::http::{self, Http};
use crate::observe::prometheus::{self, Sample};
use crate::observe::snapshot::Telemetry;

/// Most output a telemetry command may print (nvidia-smi prints a line per GPU).
pub const COMMAND_OUTPUT_CAP: usize = 64 * 1024;

const MIB: f64 = 1024.0 * 1024.0;

/// Filesystem types that are not real storage (or that mirror another filesystem).
const PSEUDO_FS: &[&str] = &[
    "autofs",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "debugfs",
    "devfs",
    "devpts",
    "devtmpfs",
    "efivarfs",
    "fdesc",
    "fuse.lxcfs",
    "fusectl",
    "hugetlbfs",
    "iso9660",
    "mqueue",
    "nsfs",
    "nullfs",
    "overlay",
    "overlayfs",
    "aufs",
    "proc",
    "pstore",
    "ramfs",
    "rootfs",
    "rpc_pipefs",
    "securityfs",
    "selinuxfs",
    "squashfs",
    "sysfs",
    "tmpfs",
    "tracefs",
];

/// Why a telemetry command gave nothing usable. Never contains a secret (the command comes
/// from the manifest; its stderr is capped).
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
    #[error("{program} did not finish within {}", crate::desired::Dur(*after))]
    TimedOut { program: String, after: Duration },
    #[error("{program} exited with {status}: {stderr}")]
    Failed { program: String, status: String, stderr: String },
    #[error("{program} printed more than {cap} bytes")]
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

/// Reads every source of a node's telemetry concurrently, each within `timeout`.
pub async fn read(source: &TelemetrySource, http: &Http, timeout: Duration) -> Telemetry {
    let scrapes = futures::future::join_all(
        source
            .prometheus
            .iter()
            .map(|url| async move { (url, http.get(url, None, timeout).await) }),
    );
    let command = async {
        match &source.command {
            Some(argv) => Some(run_command(argv, timeout, COMMAND_OUTPUT_CAP).await),
            None => None,
        }
    };
    let (scrapes, command) = tokio::join!(scrapes, command);
    let mut out = Telemetry::default();
    let mut errors = Vec::new();
    for (url, result) in scrapes {
        match result
            .and_then(http::Reply::require_success)
            .and_then(|r| r.text().map(from_prometheus))
        {
            Ok(t) => merge(&mut out, t),
            Err(f) => errors.push(format!("exporter {}: {f}", without_userinfo(url))),
        }
    }
    if let (Some(result), Some(argv)) = (command, &source.command) {
        let program = argv.first().map(String::as_str).unwrap_or("");
        match result {
            Ok(text) => match parse_nvidia_smi(&text) {
                Ok(t) => merge(&mut out, t),
                Err(e) => errors.push(format!("command {program}: {e}")),
            },
            Err(e) => errors.push(format!("command: {}", http::error_chain(&e))),
        }
    }
    if !errors.is_empty() {
        out.error = Some(http::truncate(&errors.join("; "), 500));
    }
    out
}

/// Fills the figures `into` does not know from `from` (the first source wins).
pub fn merge(into: &mut Telemetry, from: Telemetry) {
    into.gpu_temp_c = into.gpu_temp_c.or(from.gpu_temp_c);
    into.vram_used = into.vram_used.or(from.vram_used);
    into.vram_total = into.vram_total.or(from.vram_total);
    into.swap_used = into.swap_used.or(from.swap_used);
    into.disk_used = into.disk_used.or(from.disk_used);
    into.xid = into.xid.or(from.xid);
}

/// The figures in one exporter's `/metrics` text. Pure and total.
pub fn from_prometheus(text: &str) -> Telemetry {
    let s = prometheus::parse(text);
    let bytes =
        |v: f64| if v.is_finite() && v >= 0.0 { Some(v.min(u64::MAX as f64) as u64) } else { None };
    let dcgm_used = prometheus::sum(&s, "DCGM_FI_DEV_FB_USED");
    let dcgm_free = prometheus::sum(&s, "DCGM_FI_DEV_FB_FREE");
    let dcgm_reserved = prometheus::sum(&s, "DCGM_FI_DEV_FB_RESERVED").unwrap_or(0.0);
    let swap = match (
        prometheus::max(&s, "node_memory_SwapTotal_bytes"),
        prometheus::max(&s, "node_memory_SwapFree_bytes"),
    ) {
        (Some(total), Some(free)) => bytes((total - free).max(0.0)),
        _ => None,
    };
    Telemetry {
        gpu_temp_c: prometheus::max(&s, "DCGM_FI_DEV_GPU_TEMP")
            .or_else(|| prometheus::max(&s, "nvidia_smi_temperature_gpu")),
        vram_used: dcgm_used
            .and_then(|u| bytes(u * MIB))
            .or_else(|| prometheus::sum(&s, "nvidia_smi_memory_used_bytes").and_then(bytes)),
        vram_total: match (dcgm_used, dcgm_free) {
            (Some(u), Some(f)) => bytes((u + f + dcgm_reserved) * MIB),
            _ => prometheus::sum(&s, "nvidia_smi_memory_total_bytes").and_then(bytes),
        },
        swap_used: swap,
        disk_used: fullest_filesystem(&s),
        xid: prometheus::max(&s, "DCGM_FI_DEV_XID_ERRORS")
            .filter(|v| *v >= 0.0)
            .map(|v| v.min(f64::from(u32::MAX)) as u32),
        error: None,
    }
}

/// Used fraction (1 − avail/size) of the fullest real, writable filesystem.
fn fullest_filesystem(s: &[Sample]) -> Option<f64> {
    let key_of = |x: &Sample| -> (String, String, String) {
        (
            x.label("device").unwrap_or("").to_owned(),
            x.label("mountpoint").unwrap_or("").to_owned(),
            x.label("fstype").unwrap_or("").to_owned(),
        )
    };
    let mut size: BTreeMap<(String, String, String), f64> = BTreeMap::new();
    let mut readonly = BTreeSet::new();
    for x in prometheus::named(s, "node_filesystem_size_bytes") {
        size.insert(key_of(x), x.value);
    }
    for x in prometheus::named(s, "node_filesystem_readonly") {
        if x.value == 1.0 {
            readonly.insert(key_of(x));
        }
    }
    prometheus::named(s, "node_filesystem_avail_bytes")
        .filter_map(|x| {
            let k = key_of(x);
            if PSEUDO_FS.contains(&k.2.as_str()) || readonly.contains(&k) {
                return None;
            }
            let total = *size.get(&k)?;
            if !(total.is_finite() && total > 0.0 && x.value.is_finite()) {
                return None;
            }
            Some((1.0 - x.value / total).clamp(0.0, 1.0))
        })
        .reduce(f64::max)
}

/// Parses `nvidia-smi --query-gpu=temperature.gpu,memory.used,memory.total
/// --format=csv,noheader,nounits` output: one line per GPU, memory in MiB, `[N/A]` (or any
/// bracketed note) for an unsupported field. A header line (`--format=csv` without
/// `noheader`) is recognised and its column names used, so extra or reordered columns work too.
/// A figure is reported only if every GPU reports it (a partial sum would understate).
pub fn parse_nvidia_smi(text: &str) -> Result<Telemetry, String> {
    let mut columns = ["temperature.gpu", "memory.used", "memory.total"].map(Some).to_vec();
    let mut gpus: Vec<[Option<f64>; 3]> = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.iter().any(|f| f.starts_with("temperature.gpu") || f.starts_with("memory.")) {
            columns = fields
                .iter()
                .map(|f| {
                    let name = f.split_whitespace().next().unwrap_or("");
                    ["temperature.gpu", "memory.used", "memory.total"]
                        .into_iter()
                        .find(|c| *c == name)
                })
                .collect();
            continue;
        }
        if fields.len() < columns.len() {
            return Err(format!("unexpected line {:?}", http::truncate(line, 80)));
        }
        let mut gpu = [None; 3];
        for (field, column) in fields.iter().zip(&columns) {
            let slot = match column {
                Some("temperature.gpu") => 0,
                Some("memory.used") => 1,
                Some("memory.total") => 2,
                _ => continue,
            };
            gpu[slot] = parse_field(field)?;
        }
        gpus.push(gpu);
    }
    if gpus.is_empty() {
        return Err("no GPU lines in the output".into());
    }
    let all = |i: usize| -> Option<Vec<f64>> { gpus.iter().map(|g| g[i]).collect() };
    let mib_sum = |v: Vec<f64>| {
        let total: f64 = v.iter().sum();
        (total.is_finite() && total >= 0.0).then_some((total * MIB) as u64)
    };
    Ok(Telemetry {
        gpu_temp_c: gpus.iter().filter_map(|g| g[0]).reduce(f64::max),
        vram_used: all(1).and_then(mib_sum),
        vram_total: all(2).and_then(mib_sum),
        ..Telemetry::default()
    })
}

fn parse_field(f: &str) -> Result<Option<f64>, String> {
    let f = f.trim();
    if f.starts_with('[') || f.eq_ignore_ascii_case("N/A") || f.is_empty() {
        return Ok(None);
    }
    // `--format=csv` without `nounits` appends the unit: "9588 MiB".
    let number = f.split_whitespace().next().unwrap_or(f);
    number
        .parse::<f64>()
        .map(|v| v.is_finite().then_some(v))
        .map_err(|_| format!("not a number: {:?}", http::truncate(f, 40)))
}

/// Runs `argv` (no shell), returns its stdout. Killed after `timeout`, or as soon as it prints
/// more than `cap` bytes. A non-zero exit is an error carrying the first line of stderr.
pub async fn run_command(
    argv: &[String],
    timeout: Duration,
    cap: usize,
) -> Result<String, CommandError> {
    let (program, args) = argv.split_first().ok_or(CommandError::Empty)?;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| CommandError::Spawn { program: program.clone(), source })?;
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let work = async {
        let mut out = Vec::new();
        let mut err = Vec::new();
        let read_out = async {
            match stdout.as_mut() {
                Some(s) => s.take(cap as u64 + 1).read_to_end(&mut out).await.map(|_| ()),
                None => Ok(()),
            }
        };
        let read_err = async {
            match stderr.as_mut() {
                Some(s) => s.take(4096).read_to_end(&mut err).await.map(|_| ()),
                None => Ok(()),
            }
        };
        let (a, b) = tokio::join!(read_out, read_err);
        a.and(b).map_err(|source| CommandError::Io { program: program.clone(), source })?;
        if out.len() > cap {
            return Err(CommandError::TooLarge { program: program.clone(), cap });
        }
        let status = child
            .wait()
            .await
            .map_err(|source| CommandError::Io { program: program.clone(), source })?;
        Ok((status, out, err))
    };
    let (status, out, err) = match tokio::time::timeout(timeout, work).await {
        Ok(r) => r?,
        Err(_) => {
            // `kill_on_drop` also covers this, but kill now rather than whenever the drop runs.
            let _ = child.start_kill();
            return Err(CommandError::TimedOut { program: program.clone(), after: timeout });
        }
    };
    if !status.success() {
        let first = String::from_utf8_lossy(&err).lines().next().unwrap_or("").trim().to_owned();
        let status = match status.code() {
            Some(c) => format!("status {c}"),
            None => "a signal".to_owned(),
        };
        return Err(CommandError::Failed {
            program: program.clone(),
            status,
            stderr: http::truncate(&first, 200),
        });
    }
    String::from_utf8(out).map_err(|_| CommandError::NotUtf8 { program: program.clone() })
}

/// A URL without `user:password@` (exporter URLs should carry none; never print one anyway).
fn without_userinfo(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = match rest.find('/') {
                Some(i) => rest.split_at(i),
                None => (rest, ""),
            };
            let host = authority.rsplit_once('@').map(|(_, h)| h).unwrap_or(authority);
            format!("{scheme}://{host}{path}")
        }
        None => url.to_owned(),
    }
}
