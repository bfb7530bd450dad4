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
use std::time::Duration;

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

pub use crate::command::{CommandError, output as run_command};

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
            return Err(format!("unexpected line {}", quoted(line, 80)));
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
        .map_err(|_| format!("not a number: {}", quoted(f, 40)))
}

/// `s` quoted and escaped like `{:?}`, at most `max` bytes of escapes between the quotes (then
/// `…`). Escaping comes first so the cap holds: a control character escapes to up to 10 bytes,
/// so truncating the raw text before `{:?}` let 80 bytes of input become 480 (found by the
/// `prometheus` fuzz target).
fn quoted(s: &str, max: usize) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        let e = c.escape_debug();
        if out.len() - 1 + e.len() > max {
            out.push('…');
            break;
        }
        out.extend(e);
    }
    out.push('"');
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    const DCGM: &str = r#"# HELP DCGM_FI_DEV_GPU_TEMP GPU temperature (in C).
# TYPE DCGM_FI_DEV_GPU_TEMP gauge
DCGM_FI_DEV_GPU_TEMP{gpu="0",UUID="GPU-9bb57e8e-0000",device="nvidia0",modelName="NVIDIA A100-SXM4-80GB",Hostname="gpu-1",DCGM_FI_DRIVER_VERSION="550.54.15"} 34
DCGM_FI_DEV_GPU_TEMP{gpu="1",UUID="GPU-9bb57e8e-0001",device="nvidia1",modelName="NVIDIA A100-SXM4-80GB",Hostname="gpu-1",DCGM_FI_DRIVER_VERSION="550.54.15"} 71
# HELP DCGM_FI_DEV_FB_FREE Framebuffer memory free (in MiB).
# TYPE DCGM_FI_DEV_FB_FREE gauge
DCGM_FI_DEV_FB_FREE{gpu="0",UUID="GPU-9bb57e8e-0000",device="nvidia0",modelName="NVIDIA A100-SXM4-80GB",Hostname="gpu-1"} 71000
DCGM_FI_DEV_FB_FREE{gpu="1",UUID="GPU-9bb57e8e-0001",device="nvidia1",modelName="NVIDIA A100-SXM4-80GB",Hostname="gpu-1"} 1000
# HELP DCGM_FI_DEV_FB_USED Framebuffer memory used (in MiB).
# TYPE DCGM_FI_DEV_FB_USED gauge
DCGM_FI_DEV_FB_USED{gpu="0",UUID="GPU-9bb57e8e-0000",device="nvidia0",modelName="NVIDIA A100-SXM4-80GB",Hostname="gpu-1"} 10000
DCGM_FI_DEV_FB_USED{gpu="1",UUID="GPU-9bb57e8e-0001",device="nvidia1",modelName="NVIDIA A100-SXM4-80GB",Hostname="gpu-1"} 80000
# HELP DCGM_FI_DEV_XID_ERRORS Value of the last XID error encountered.
# TYPE DCGM_FI_DEV_XID_ERRORS gauge
DCGM_FI_DEV_XID_ERRORS{gpu="0",UUID="GPU-9bb57e8e-0000",device="nvidia0",modelName="NVIDIA A100-SXM4-80GB",Hostname="gpu-1"} 0
DCGM_FI_DEV_XID_ERRORS{gpu="1",UUID="GPU-9bb57e8e-0001",device="nvidia1",modelName="NVIDIA A100-SXM4-80GB",Hostname="gpu-1",err_code="79",err_msg="GPU has fallen off the bus"} 79
"#;

    const NVIDIA_GPU_EXPORTER: &str = r#"# HELP nvidia_smi_temperature_gpu temperature.gpu
# TYPE nvidia_smi_temperature_gpu gauge
nvidia_smi_temperature_gpu{uuid="9bb57e8e-0000"} 50
# HELP nvidia_smi_memory_used_bytes memory.used [MiB]
# TYPE nvidia_smi_memory_used_bytes gauge
nvidia_smi_memory_used_bytes{uuid="9bb57e8e-0000"} 1.0053427e+10
# HELP nvidia_smi_memory_total_bytes memory.total [MiB]
# TYPE nvidia_smi_memory_total_bytes gauge
nvidia_smi_memory_total_bytes{uuid="9bb57e8e-0000"} 2.5769803776e+10
"#;

    const NODE_EXPORTER: &str = r#"# HELP node_memory_SwapFree_bytes Memory information field SwapFree_bytes.
# TYPE node_memory_SwapFree_bytes gauge
node_memory_SwapFree_bytes 6.442450944e+09
# HELP node_memory_SwapTotal_bytes Memory information field SwapTotal_bytes.
# TYPE node_memory_SwapTotal_bytes gauge
node_memory_SwapTotal_bytes 8.589934592e+09
# HELP node_filesystem_avail_bytes Filesystem space available to non-root users in bytes.
# TYPE node_filesystem_avail_bytes gauge
node_filesystem_avail_bytes{device="/dev/nvme0n1p2",fstype="ext4",mountpoint="/"} 2.0e+10
node_filesystem_avail_bytes{device="/dev/nvme1n1",fstype="xfs",mountpoint="/models"} 5.0e+11
node_filesystem_avail_bytes{device="tmpfs",fstype="tmpfs",mountpoint="/run"} 0
node_filesystem_avail_bytes{device="overlay",fstype="overlay",mountpoint="/var/lib/docker/overlay2/x/merged"} 1.0e+09
node_filesystem_avail_bytes{device="/dev/loop3",fstype="squashfs",mountpoint="/snap/core/1"} 0
node_filesystem_avail_bytes{device="/dev/sdb1",fstype="ext4",mountpoint="/mnt/ro"} 0
# HELP node_filesystem_readonly Filesystem read-only status.
# TYPE node_filesystem_readonly gauge
node_filesystem_readonly{device="/dev/sdb1",fstype="ext4",mountpoint="/mnt/ro"} 1
node_filesystem_readonly{device="/dev/nvme0n1p2",fstype="ext4",mountpoint="/"} 0
# HELP node_filesystem_size_bytes Filesystem size in bytes.
# TYPE node_filesystem_size_bytes gauge
node_filesystem_size_bytes{device="/dev/nvme0n1p2",fstype="ext4",mountpoint="/"} 1.0e+11
node_filesystem_size_bytes{device="/dev/nvme1n1",fstype="xfs",mountpoint="/models"} 1.0e+12
node_filesystem_size_bytes{device="tmpfs",fstype="tmpfs",mountpoint="/run"} 1.0e+09
node_filesystem_size_bytes{device="overlay",fstype="overlay",mountpoint="/var/lib/docker/overlay2/x/merged"} 1.0e+11
node_filesystem_size_bytes{device="/dev/loop3",fstype="squashfs",mountpoint="/snap/core/1"} 1.0e+08
node_filesystem_size_bytes{device="/dev/sdb1",fstype="ext4",mountpoint="/mnt/ro"} 1.0e+09
"#;

    /// dcgm-exporter on two GPUs: the hotter temperature, summed MiB converted to bytes
    /// (total = used + free), and the last Xid.
    #[test]
    fn reads_dcgm_exporter() {
        let t = from_prometheus(DCGM);
        assert_eq!(t.gpu_temp_c, Some(71.0));
        assert_eq!(t.vram_used, Some(90_000 * 1024 * 1024));
        assert_eq!(t.vram_total, Some(162_000 * 1024 * 1024));
        assert_eq!(t.xid, Some(79));
        assert_eq!(t.swap_used, None);
        assert_eq!(t.disk_used, None);
    }

    /// nvidia_gpu_exporter reports bytes already.
    #[test]
    fn reads_nvidia_gpu_exporter() {
        let t = from_prometheus(NVIDIA_GPU_EXPORTER);
        assert_eq!(t.gpu_temp_c, Some(50.0));
        assert_eq!(t.vram_used, Some(10_053_427_000));
        assert_eq!(t.vram_total, Some(25_769_803_776));
        assert_eq!(t.xid, None);
    }

    /// node_exporter: swap used = total − free; the disk figure is the fullest real, writable
    /// filesystem (`/` at 80 %), not tmpfs at 100 %, squashfs, an overlay or a read-only mount.
    #[test]
    fn reads_node_exporter() {
        let t = from_prometheus(NODE_EXPORTER);
        assert_eq!(t.swap_used, Some(2 * 1024 * 1024 * 1024));
        let disk = t.disk_used.unwrap();
        assert!((disk - 0.8).abs() < 1e-9, "{disk}");
        assert_eq!(t.gpu_temp_c, None);
    }

    /// Sources merge in order: the first that knows a figure gives it.
    #[test]
    fn first_source_wins() {
        let mut t = from_prometheus(NVIDIA_GPU_EXPORTER);
        merge(&mut t, from_prometheus(DCGM));
        merge(&mut t, from_prometheus(NODE_EXPORTER));
        assert_eq!(t.gpu_temp_c, Some(50.0));
        assert_eq!(t.xid, Some(79));
        assert!(t.swap_used.is_some() && t.disk_used.is_some());
    }

    /// nvidia-smi CSV: two GPUs (hottest temperature, summed memory); `[N/A]` fields make the
    /// figure unknown rather than understated.
    #[test]
    fn reads_nvidia_smi_csv() {
        let t = parse_nvidia_smi("50, 9588, 24576\n61, 1000, 24576\n").unwrap();
        assert_eq!(t.gpu_temp_c, Some(61.0));
        assert_eq!(t.vram_used, Some(10_588 * 1024 * 1024));
        assert_eq!(t.vram_total, Some(49_152 * 1024 * 1024));
        let t = parse_nvidia_smi("45, [N/A], [N/A]\n47, 100, 200\n").unwrap();
        assert_eq!(t.gpu_temp_c, Some(47.0));
        assert_eq!(t.vram_used, None);
        assert_eq!(t.vram_total, None);
        let t = parse_nvidia_smi("[Not Supported], 10, 20\n").unwrap();
        assert_eq!(t.gpu_temp_c, None);
        assert_eq!(t.vram_used, Some(10 * 1024 * 1024));
    }

    /// A header line (csv without `noheader`) maps columns by name, units included.
    #[test]
    fn reads_nvidia_smi_with_header() {
        let text = "index, memory.total [MiB], temperature.gpu, memory.used [MiB]\n0, 24576 MiB, 52, 4096 MiB\n";
        let t = parse_nvidia_smi(text).unwrap();
        assert_eq!(t.gpu_temp_c, Some(52.0));
        assert_eq!(t.vram_used, Some(4096 * 1024 * 1024));
        assert_eq!(t.vram_total, Some(24_576 * 1024 * 1024));
    }

    /// Output that is not the expected CSV is an error that says why.
    #[test]
    fn rejects_unexpected_output() {
        assert!(parse_nvidia_smi("").unwrap_err().contains("no GPU lines"));
        assert!(parse_nvidia_smi("NVIDIA-SMI has failed").unwrap_err().contains("unexpected line"));
        assert!(parse_nvidia_smi("hot, 1, 2").unwrap_err().contains("not a number"));
    }

    /// An error quoting the output stays short whatever the output holds: control characters
    /// (escaped to several bytes each) used to make "unexpected line" 480 bytes long (the
    /// `prometheus` fuzz target's crash, minimized: `# ` and control bytes).
    #[test]
    fn error_quotes_are_capped_after_escaping() {
        let e = parse_nvidia_smi(&"\u{5}".repeat(200)).unwrap_err();
        assert!(e.starts_with("unexpected line \"\\u{5}") && e.ends_with("…\""), "{e}");
        assert!(e.len() <= "unexpected line ".len() + 80 + 5, "{} bytes: {e}", e.len());
        let e = parse_nvidia_smi(&format!("{}, 1, 2", "\u{7f}".repeat(100))).unwrap_err();
        assert!(
            e.starts_with("not a number: ") && e.len() <= "not a number: ".len() + 40 + 5,
            "{e}"
        );
        let e = parse_nvidia_smi("NVIDIA-SMI has failed").unwrap_err();
        assert_eq!(e, "unexpected line \"NVIDIA-SMI has failed\"");
    }

    /// Userinfo never reaches an error text.
    #[test]
    fn strips_userinfo() {
        assert_eq!(without_userinfo("http://u:p@h:9100/metrics"), "http://h:9100/metrics");
        assert_eq!(without_userinfo("http://h:9100"), "http://h:9100");
    }

    proptest::proptest! {
        /// Neither parser panics on arbitrary text.
        #[test]
        fn parsers_never_panic(text in "\\PC*") {
            let _ = from_prometheus(&text);
            let _ = parse_nvidia_smi(&text);
        }

        /// ... nor on text made of their own vocabulary.
        #[test]
        fn parsers_never_panic_on_lookalikes(
            lines in proptest::collection::vec(
                "(DCGM_FI_DEV_FB_USED|node_filesystem_avail_bytes|node_filesystem_size_bytes|[0-9., \\[\\]NA/-]|\\{fstype=\"|\"\\}| |e\\+|-Inf|NaN){0,12}",
                0..8,
            )
        ) {
            let text = lines.join("\n");
            let _ = from_prometheus(&text);
            let _ = parse_nvidia_smi(&text);
        }
    }
}
