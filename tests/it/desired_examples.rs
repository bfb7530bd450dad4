//! The manifests that ship with homeostat (desired-state/ and every manifest directory under
//! examples/), the committed JSON Schemas, and the `validate` / `schema` commands.
//!
//! Which directories under examples/ are manifest directories: a directory that directly holds
//! a `*.yaml` / `*.yml` file containing the line `apiVersion: homeostat.dev/v1`, unless a
//! directory above it (below examples/) already is one — `load_dir` reads subdirectories, so the
//! outer one covers them. Other YAML (a simulator's `sim.yaml`) has no such line and does not
//! make its directory a manifest directory.

use std::path::{Path, PathBuf};
use std::process::Command;

use homeostat::desired::{self, Backend, Kind, load_dir, schema};

const BIN: &str = env!("CARGO_BIN_EXE_homeostat");

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("a directory of the repository")
        .map(|e| e.expect("a readable entry").path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    out.sort();
    out
}

fn is_manifest_dir(dir: &Path) -> bool {
    yaml_files(dir).iter().any(|f| {
        std::fs::read_to_string(f)
            .is_ok_and(|t| t.lines().any(|l| l.trim_end() == "apiVersion: homeostat.dev/v1"))
    })
}

/// The manifest directories under `examples/`, by the rule in this file's header.
fn example_manifest_dirs() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        if is_manifest_dir(dir) {
            out.push(dir.to_path_buf());
            return;
        }
        let mut subdirs: Vec<PathBuf> = std::fs::read_dir(dir)
            .expect("a directory of the repository")
            .map(|e| e.expect("a readable entry").path())
            .filter(|p| p.is_dir())
            .collect();
        subdirs.sort();
        for d in subdirs {
            walk(&d, out);
        }
    }
    let mut out = Vec::new();
    walk(Path::new("examples"), &mut out);
    out
}

/// Every manifest file below `dir` (recursively).
fn manifest_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = yaml_files(dir);
    let mut subdirs: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("a directory of the repository")
        .map(|e| e.expect("a readable entry").path())
        .filter(|p| p.is_dir())
        .collect();
    subdirs.sort();
    for d in subdirs {
        out.extend(manifest_files(&d));
    }
    out
}

/// The lab in desired-state/ is valid, warning-free, and is the lab docs/requirements.md describes:
/// three LM Studio boxes and a local Ollama node, the R5 cascade, a 3-task suite used for
/// verification, thermal 85/90 °C, tokens by reference.
#[test]
fn desired_state_is_the_lab() {
    let loaded = load_dir(Path::new("desired-state")).unwrap_or_else(|d| panic!("{d}"));
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    assert_eq!(loaded.summary.counts(), "1 Cluster, 4 Node, 1 Routing, 1 BenchmarkSuite");
    let s = &loaded.state;
    let lmstudio = s.nodes.values().filter(|n| n.backend == Backend::Lmstudio).count();
    assert_eq!(lmstudio, 3);
    let ollama = &s.nodes["ollama-local"];
    assert_eq!(ollama.backend, Backend::Ollama);
    assert!(ollama.is_local());
    assert!(s.nodes.values().all(|n| n.primary().is_some()));
    assert!(s.nodes.values().filter(|n| n.backend == Backend::Lmstudio).all(|n| n.auth.is_some()));

    let weight = |cat: &str, node: &str| {
        s.routing.categories[cat].iter().find(|t| t.node == node).map(|t| t.weight)
    };
    // Primary down: code and reasoning to the secondary at 1.4, fast work to Ollama at 1.3.
    assert_eq!(s.routing.categories["code"][0].node, "m1");
    assert_eq!(weight("code", "m2"), Some(1.4));
    assert_eq!(weight("reasoning", "m2"), Some(1.4));
    assert_eq!(weight("fast", "ollama-local"), Some(1.3));
    // Secondary down: the primary absorbs at 1.8.
    assert_eq!(weight("general", "m1"), Some(1.8));
    // Everything local down: two remotes at 1.2.
    assert_eq!(s.routing.remotes.len(), 2);
    assert!(s.routing.remotes.iter().all(|r| r.weight == 1.2 && r.api_key_from.is_some()));

    let (suite_name, suite) = s.verification_suite();
    assert_eq!(suite_name, "lab-mini");
    assert_eq!(suite.tasks.len(), 3);
    assert_eq!(s.cluster.thermal.reroute_above.0, 85.0);
    assert_eq!(s.cluster.thermal.hands_off_at.0, 90.0);
    assert_eq!(s.hash.len(), 64);
}

/// Every manifest directory under examples/ validates; the two shipped with the manifest
/// language (fleet, two-macs) are among them and are warning-free.
#[test]
fn example_manifest_directories_are_valid() {
    let dirs = example_manifest_dirs();
    for d in ["examples/fleet", "examples/two-macs"] {
        assert!(dirs.iter().any(|x| x == Path::new(d)), "{d} not discovered in {dirs:?}");
    }
    for dir in &dirs {
        let loaded = load_dir(dir).unwrap_or_else(|d| panic!("{}:\n{d}", dir.display()));
        assert!(loaded.summary.total() > 0);
        if dir.ends_with("fleet") || dir.ends_with("two-macs") {
            assert!(loaded.warnings.is_empty(), "{}: {:?}", dir.display(), loaded.warnings);
        }
    }
    let fleet = load_dir(Path::new("examples/fleet")).unwrap().state;
    assert_eq!(fleet.nodes.len(), 20);
    assert!(fleet.nodes.values().all(|n| matches!(n.backend, Backend::Vllm | Backend::Llamacpp)));
    let macs = load_dir(Path::new("examples/two-macs")).unwrap().state;
    assert!(macs.nodes.values().all(|n| n.backend == Backend::Ollama));
    assert_eq!(macs.services.len(), 3);
    assert!(macs.services.values().all(|s| {
        s.restart.as_ref().is_some_and(|r| r.command[0] == "pm2" || r.command[0] == "ssh")
    }));
    assert_eq!(macs.cluster.swap.unload_above, desired::ByteSize::gib(8));
}

/// Each shipped manifest file starts with a yaml-language-server `$schema` line pointing at a
/// committed schema, and every document of the file passes that schema (what an editor checks).
#[test]
fn manifest_files_name_a_schema_that_accepts_them() {
    let mut dirs = vec![PathBuf::from("desired-state")];
    dirs.extend(example_manifest_dirs());
    let mut checked = 0;
    for dir in dirs {
        for file in manifest_files(&dir) {
            let text = std::fs::read_to_string(&file).unwrap();
            let first = text.lines().next().unwrap_or_default();
            let rel = first.strip_prefix("# yaml-language-server: $schema=").unwrap_or_else(|| {
                panic!("{}: first line is not a $schema comment", file.display())
            });
            let schema_path = file.parent().unwrap().join(rel);
            let schema_text = std::fs::read_to_string(&schema_path)
                .unwrap_or_else(|e| panic!("{}: {}: {e}", file.display(), schema_path.display()));
            let schema_json: serde_json::Value = serde_json::from_str(&schema_text).unwrap();
            let validator = jsonschema::validator_for(&schema_json).unwrap();
            let parsed = desired::yaml::parse(&text);
            for doc in parsed.docs.iter().filter_map(|d| d.root.as_ref()) {
                let json = doc.to_json();
                let errors: Vec<String> =
                    validator.iter_errors(&json).map(|e| e.to_string()).collect();
                assert!(errors.is_empty(), "{}: {errors:?}", file.display());
                checked += 1;
            }
        }
    }
    assert!(checked > 30, "only {checked} documents checked");
}

/// The committed schemas/ are exactly what the code generates (`HOMEOSTAT_BLESS=1` rewrites
/// them instead of failing).
#[test]
fn schemas_are_current() {
    let dir = Path::new("schemas");
    if std::env::var_os("HOMEOSTAT_BLESS").is_some() {
        schema::write_all(dir).unwrap();
    }
    let mut expected_files: Vec<&str> = Vec::new();
    for (name, text) in schema::all() {
        expected_files.push(name);
        let committed = std::fs::read_to_string(dir.join(name)).unwrap_or_default();
        assert!(
            committed == text,
            "schemas/{name} is stale: run `HOMEOSTAT_BLESS=1 cargo test --test it desired_examples` \
             or `cargo run -- schema --out schemas/`"
        );
    }
    let mut on_disk: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    expected_files.sort();
    assert_eq!(on_disk, expected_files, "schemas/ holds files the generator does not write");
    assert_eq!(expected_files.len(), Kind::ALL.len() + 1);
}

/// `homeostat schema --out DIR` writes files byte-identical to the committed schemas/.
#[test]
fn schema_command_reproduces_committed_schemas() {
    let out = tempfile::tempdir().unwrap();
    let status = Command::new(BIN).args(["schema", "--out"]).arg(out.path()).output().unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    for (name, _) in schema::all() {
        let written = std::fs::read(out.path().join(name)).unwrap();
        let committed = std::fs::read(Path::new("schemas").join(name)).unwrap();
        assert!(written == committed, "{name} differs from schemas/{name}");
    }
}

/// `validate` prints the summary line and exits 0 on a valid set; on an invalid one it prints
/// each diagnostic to stderr and exits 1; `-o json` prints a parseable report.
#[test]
fn validate_command() {
    let ok = Command::new(BIN).args(["validate", "-f", "desired-state/"]).output().unwrap();
    assert_eq!(ok.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&ok.stdout),
        "desired-state/: 7 objects valid (1 Cluster, 4 Node, 1 Routing, 1 BenchmarkSuite)\n"
    );

    let bad = Command::new(BIN)
        .args(["validate", "-f", "tests/fixtures/bad/route_to_missing_node"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains(
            "tests/fixtures/bad/route_to_missing_node/routing.yaml:8:17: error: \
             spec.categories.code[1].node: routes to unknown Node `m11`"
        ),
        "{stderr}"
    );
    assert!(
        stderr.ends_with("tests/fixtures/bad/route_to_missing_node: invalid: 2 errors\n"),
        "{stderr}"
    );
    assert!(bad.stdout.is_empty());

    let json = Command::new(BIN)
        .args(["validate", "-f", "desired-state/", "-o", "json"])
        .output()
        .unwrap();
    assert_eq!(json.status.code(), Some(0));
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["apiVersion"], "homeostat.dev/v1");
    assert_eq!(report["kind"], "ValidationReport");
    assert_eq!(report["valid"], true);
    assert_eq!(report["objects"]["Node"], 4);
    assert_eq!(report["files"], 4);

    let json = Command::new(BIN)
        .args(["validate", "-f", "tests/fixtures/bad/literal_token", "-o", "json"])
        .output()
        .unwrap();
    assert_eq!(json.status.code(), Some(1));
    let text = String::from_utf8_lossy(&json.stdout);
    assert!(!text.contains("SECRET"), "{text}");
    let report: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(report["valid"], false);
    assert_eq!(report["errors"][0]["line"], 11);
    assert_eq!(report["errors"][0]["path"], "spec.auth.bearerToken");
}

/// `from_yaml_str` builds a `DesiredState` from one in-memory file, with defaults for what is
/// left out, and names the file `<inline>` in diagnostics.
#[test]
fn from_yaml_str_builds_a_state() {
    let state = desired::from_yaml_str(
        "apiVersion: homeostat.dev/v1\nkind: Node\nmetadata: { name: a }\n\
         spec: { backend: ollama, url: 'http://127.0.0.1:11434', vram: 8GiB, \
         models: [{ name: 'llama3.2:3b', size: 3GiB }] }\n",
    )
    .unwrap();
    assert_eq!(state.cluster, desired::ClusterSpec::default());
    assert_eq!(state.nodes["a"].models[0].size, desired::ByteSize::gib(3));
    assert_eq!(state.hash.len(), 64);
    let err = desired::from_yaml_str("apiVersion: homeostat.dev/v1\nkind: Nod\n").unwrap_err();
    assert_eq!(
        err.to_string(),
        "<inline>:2:7: error: kind: unknown kind `Nod`\n  hint: did you mean `Node`?"
    );
}

/// The README's table of Cluster defaults is exactly `defaults::cluster_table()` (which
/// `validate --help` prints and the schemas carry), row for row.
#[test]
fn readme_defaults_table_is_current() {
    let readme = std::fs::read_to_string("README.md").unwrap();
    let begin = readme.find("<!-- cluster-defaults:begin -->").expect("table start marker");
    let end = readme.find("<!-- cluster-defaults:end -->").expect("table end marker");
    let rows: Vec<(String, String)> = readme[begin..end]
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            (cells[1].trim_matches('`').to_owned(), cells[2].trim_matches('`').to_owned())
        })
        .collect();
    assert_eq!(rows, desired::defaults::cluster_table());
}
