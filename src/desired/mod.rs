//! Desired state: the manifest language (`types`), its units and defaults, loading a directory
//! of YAML, validation in layers, and the JSON Schemas.
//!
//! Entry points: [`load_dir`] (a manifest directory → [`Loaded`] or every problem as
//! [`Diagnostics`]) and [`from_yaml_str`] (one in-memory file, for tests and tools).
//!
//! - `yaml`: the file as a tree of documents with line/column on every node (pass 1: syntax,
//!   duplicate keys, the `kind` header of each document).
//! - `hygiene`: secrets by reference only; URLs without credentials.
//! - `schema`: JSON Schemas generated from `types`, and the JSON Schema layer.
//! - `validate`: the layers in order, typed deserialisation per kind (pass 2), semantic and
//!   cross-document checks; the only code that builds a `DesiredState`.
//! - `load`: reading the directory (the only I/O), the set's hash.
//! - `diagnostic`: [`Diagnostic`] and its compiler-like rendering.
//!
//! Invariants: outside `load` (and `schema::write_all`) nothing here does I/O; no diagnostic
//! contains a secret from a manifest. Validation constructs `DesiredState`, so one obtained from
//! `load_dir` proves the manifests were valid. The YAML is the source of truth; nothing here
//! writes to it.

// The manifest types and their validation are pure (see clippy.toml); `load` reads the
// manifest files and `schema` writes the JSON Schemas.
#[forbid(clippy::disallowed_methods, clippy::disallowed_types)]
pub mod defaults;
#[forbid(clippy::disallowed_methods, clippy::disallowed_types)]
pub mod diagnostic;
#[forbid(clippy::disallowed_methods, clippy::disallowed_types)]
mod hygiene;
mod load;
pub mod schema;
#[forbid(clippy::disallowed_methods, clippy::disallowed_types)]
pub mod types;
#[forbid(clippy::disallowed_methods, clippy::disallowed_types)]
pub mod units;
#[forbid(clippy::disallowed_methods, clippy::disallowed_types)]
mod validate;
#[forbid(clippy::disallowed_methods, clippy::disallowed_types)]
pub mod yaml;

use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::time::Duration;

pub use diagnostic::{Diagnostic, Diagnostics, Level};
pub use load::{Loaded, Summary, from_yaml_str, load_dir};
pub use types::*;
pub use units::{ByteSize, Celsius, Dur, Fraction};

/// A validated manifest set.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DesiredState {
    pub cluster: ClusterSpec,
    pub nodes: BTreeMap<String, NodeSpec>,
    /// `metadata.labels` of each node.
    pub node_labels: BTreeMap<String, BTreeMap<String, String>>,
    pub services: BTreeMap<String, ServiceSpec>,
    /// All `Routing` documents merged (categories are unique across them).
    pub routing: RoutingSpec,
    pub suites: BTreeMap<String, SuiteSpec>,
    pub notifiers: BTreeMap<String, NotifierSpec>,
    /// sha256 over the loaded files (path and content, sorted): identifies the manifest set in
    /// status and events.
    pub hash: String,
}

impl DesiredState {
    /// The suite run after every heal: the cluster's `verification.suite`, else the built-in one.
    pub fn verification_suite(&self) -> (&str, &SuiteSpec) {
        match &self.cluster.verification.suite {
            Some(name) => match self.suites.get(name) {
                Some(s) => (name.as_str(), s),
                // Validation guarantees the reference exists; fall back rather than panic.
                None => (defaults::BUILTIN_SUITE, &BUILTIN_SUITE),
            },
            None => (defaults::BUILTIN_SUITE, &BUILTIN_SUITE),
        }
    }

    /// A suite by name, including the built-in one.
    pub fn suite(&self, name: &str) -> Option<&SuiteSpec> {
        if name == defaults::BUILTIN_SUITE {
            return Some(&BUILTIN_SUITE);
        }
        self.suites.get(name)
    }

    /// Timeout for one probe request to `node`: the node's own, else local/remote default.
    pub fn probe_timeout(&self, node: &NodeSpec) -> Duration {
        match node.probe_timeout {
            Some(t) => t.get(),
            None if node.is_local() => self.cluster.probe.local_timeout.get(),
            None => self.cluster.probe.timeout.get(),
        }
    }

    /// The effective orphan prune mode of `node`.
    pub fn prune_mode(&self, node: &NodeSpec) -> PruneMode {
        node.prune.unwrap_or(self.cluster.orphans.prune)
    }

    /// The effective heartbeat timeout of `node`, if it is a push-style worker.
    pub fn heartbeat_timeout(&self, node: &NodeSpec) -> Option<Duration> {
        node.heartbeat.as_ref().map(|h| h.timeout.unwrap_or(self.cluster.heartbeat.timeout).get())
    }
}

/// The built-in 3-prompt verification suite (R3: "3 quick prompts with checkable answers").
pub static BUILTIN_SUITE: LazyLock<SuiteSpec> = LazyLock::new(|| SuiteSpec {
    max_tokens: defaults::SUITE_MAX_TOKENS,
    timeout: defaults::SUITE_TIMEOUT,
    tasks: vec![
        TaskSpec {
            name: Some("arithmetic".into()),
            prompt: "What is 17 + 25? Answer with the number only.".into(),
            domain: "math".into(),
            check: Check::Number(NumberCheck { value: 42.0, tolerance: 0.0 }),
        },
        TaskSpec {
            name: Some("capital".into()),
            prompt: "What is the capital of France? Answer with one word.".into(),
            domain: "general".into(),
            check: Check::Contains("Paris".into()),
        },
        TaskSpec {
            name: Some("python-keyword".into()),
            prompt: "Which Python keyword defines a function? Answer with the keyword only.".into(),
            domain: "code".into(),
            check: Check::Regex(r"\bdef\b".into()),
        },
    ],
});
