//! The Prometheus text a simulated node's exporters would serve, at
//! `GET /_sim/exporter/metrics` (a path that does not clash with the backends' own `/metrics`).
//!
//! Names are the real ones: dcgm-exporter (`DCGM_FI_DEV_GPU_TEMP` in °C, `DCGM_FI_DEV_FB_USED`
//! and `DCGM_FI_DEV_FB_FREE` in MiB, `DCGM_FI_DEV_XID_ERRORS` = last Xid, per NVIDIA's
//! `etc/default-counters.csv`) and node_exporter (`node_memory_SwapTotal_bytes`,
//! `node_memory_SwapFree_bytes`, `node_filesystem_size_bytes`, `node_filesystem_avail_bytes`).
//!
//! Pure: text from a model snapshot.

use std::fmt::Write;

use super::model::NodeModel;

const MIB: u64 = 1 << 20;

/// The exporter text for `node`.
pub fn exporter_text(name: &str, node: &NodeModel) -> String {
    let t = node.telemetry();
    let gpu = format!(
        "gpu=\"0\",UUID=\"GPU-sim-{name}\",device=\"nvidia0\",modelName=\"NVIDIA Simulated GPU\",Hostname=\"{name}\""
    );
    let fs = "device=\"/dev/sim0\",fstype=\"ext4\",mountpoint=\"/\"";
    let mut out = String::with_capacity(1600);
    let mut gauge = |metric: &str, help: &str, labels: &str, value: String| {
        let _ = writeln!(out, "# HELP {metric} {help}");
        let _ = writeln!(out, "# TYPE {metric} gauge");
        let _ = writeln!(out, "{metric}{{{labels}}} {value}");
    };
    gauge("DCGM_FI_DEV_GPU_TEMP", "GPU temperature (in C).", &gpu, format!("{}", t.gpu_celsius));
    gauge(
        "DCGM_FI_DEV_FB_USED",
        "Framebuffer memory used (in MiB).",
        &gpu,
        (t.vram_used / MIB).to_string(),
    );
    gauge(
        "DCGM_FI_DEV_FB_FREE",
        "Framebuffer memory free (in MiB).",
        &gpu,
        (t.vram_total.saturating_sub(t.vram_used) / MIB).to_string(),
    );
    gauge(
        "DCGM_FI_DEV_XID_ERRORS",
        "Value of the last XID error encountered.",
        &gpu,
        t.xid.to_string(),
    );
    let mut plain = |metric: &str, help: &str, labels: &str, value: u64| {
        let _ = writeln!(out, "# HELP {metric} {help}");
        let _ = writeln!(out, "# TYPE {metric} gauge");
        if labels.is_empty() {
            let _ = writeln!(out, "{metric} {value}");
        } else {
            let _ = writeln!(out, "{metric}{{{labels}}} {value}");
        }
    };
    plain(
        "node_memory_SwapTotal_bytes",
        "Memory information field SwapTotal_bytes.",
        "",
        t.swap_total,
    );
    plain(
        "node_memory_SwapFree_bytes",
        "Memory information field SwapFree_bytes.",
        "",
        t.swap_total.saturating_sub(t.swap_used),
    );
    plain("node_filesystem_size_bytes", "Filesystem size in bytes.", fs, t.disk_size);
    plain(
        "node_filesystem_avail_bytes",
        "Filesystem space available to non-root users in bytes.",
        fs,
        t.disk_size.saturating_sub(t.disk_used),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::units::ByteSize;
    use crate::sim::config::{NodeConfig, SimBackend};
    use crate::sim::fault::{Fault, FaultKind};
    use crate::time::Timestamp;

    /// Every metric the telemetry reader looks for is present with the node's figures.
    #[test]
    fn exporter_names_and_values() {
        let mut cfg = NodeConfig::new("m1", SimBackend::Ollama);
        cfg.vram = ByteSize::gib(24);
        cfg.gpu.tau = crate::desired::units::Dur::from_millis(0);
        let mut node = NodeModel::new(&cfg, Timestamp(1));
        node.inject(Fault::new(FaultKind::Swap { bytes: ByteSize::gib(9) }), Timestamp(1));
        node.inject(Fault::new(FaultKind::Hot { celsius: 91.0 }), Timestamp(1));
        let text = exporter_text("m1", &node);
        for line in [
            "DCGM_FI_DEV_GPU_TEMP{gpu=\"0\"",
            "Hostname=\"m1\"} 91\n",
            "DCGM_FI_DEV_FB_USED{",
            "} 0\n",
            "DCGM_FI_DEV_FB_FREE{",
            "} 24576\n",
            "DCGM_FI_DEV_XID_ERRORS{",
            "node_memory_SwapTotal_bytes 17179869184\n",
            "node_memory_SwapFree_bytes 7516192768\n",
            "node_filesystem_size_bytes{device=\"/dev/sim0\",fstype=\"ext4\",mountpoint=\"/\"} ",
            "node_filesystem_avail_bytes{",
        ] {
            assert!(text.contains(line), "{line:?} missing in\n{text}");
        }
    }
}
