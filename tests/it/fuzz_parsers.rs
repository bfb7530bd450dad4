//! The fuzz targets' entry points (fuzz/src/lib.rs, included here as it is) run as proptests, so
//! CI exercises every parser of outside input without cargo-fuzz or a nightly toolchain:
//! arbitrary bytes, JSON built from each API's own field names, mutated real answers and
//! mutated real manifests. Every entry asserts that no parser panics and that what it reports
//! about a hostile input is bounded (see the entry points).

#[path = "../../fuzz/src/lib.rs"]
mod entry;

use proptest::prelude::*;
use serde_json::{Map, Value, json};

/// Field names the four backends' answers use, so generated JSON reaches the parsers' semantic
/// paths and not only serde's "wrong shape" error.
const FIELDS: &[&str] = &[
    "models",
    "data",
    "key",
    "id",
    "name",
    "size",
    "size_bytes",
    "size_vram",
    "loaded_instances",
    "config",
    "context_length",
    "state",
    "instance_id",
    "model_instance_id",
    "load_config",
    "expires_at",
    "message",
    "content",
    "eval_count",
    "eval_duration",
    "choices",
    "usage",
    "completion_tokens",
    "timings",
    "predicted_per_second",
    "max_model_len",
    "parent",
    "aliases",
    "status",
    "value",
    "failed",
    "exit_code",
    "args",
    "meta",
    "n_ctx",
    "is_processing",
    "error",
    "type",
    "detail",
    "model",
];

/// Scalars that the parsers treat specially, and some that break numeric conversions.
fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter("JSON has no NaN", |f| f.is_finite()).prop_map(Value::from),
        Just(json!(u64::MAX)),
        Just(json!(-1)),
        Just(json!(0)),
        Just(json!(1e308)),
        prop::sample::select(vec![
            "loaded",
            "loading",
            "unloaded",
            "sleeping",
            "downloading",
            "--ctx-size",
            "-c",
            "4294967296",
            "qwen/qwen3-8b",
            "llama3.2:3b",
            "tiny-llama.gguf",
            "",
            "2026-11-24T10:00:00Z",
            "2318-01-01T00:00:00.123456789+02:00",
            "0001-01-01T00:00:00Z",
            "9999-99-99T99:99:99Z",
            "é:é",
            "\u{0}",
        ])
        .prop_map(Value::from),
        "\\PC{0,24}".prop_map(Value::from),
    ]
}

/// JSON trees whose object keys are the APIs' field names.
fn api_json() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(FIELDS), inner), 0..6).prop_map(|kv| {
                Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect::<Map<_, _>>())
            }),
        ]
    })
}

/// A byte-level mutation of `seed`: cut it, flip bytes, splice in random bytes.
fn mutate(seed: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = seed.len().max(1);
    (0..len, prop::collection::vec((0..len, any::<u8>()), 0..8), 0..4u8).prop_map(
        move |(cut, flips, mode)| {
            let mut b = seed.clone();
            match mode {
                0 => b.truncate(cut),
                1 => {
                    for (i, v) in &flips {
                        if let Some(x) = b.get_mut(*i) {
                            *x = *v;
                        }
                    }
                }
                2 => {
                    let bytes: Vec<u8> = flips.iter().map(|(_, v)| *v).collect();
                    let at = cut.min(b.len());
                    b.splice(at..at, bytes);
                }
                _ => {
                    // Duplicate a slice (repeated keys, repeated lines).
                    let at = cut.min(b.len());
                    let tail = b[at..].to_vec();
                    b.extend_from_slice(&tail);
                }
            }
            b
        },
    )
}

/// The recorded answers of real servers (tests/fixtures/observe).
fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/observe/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every entry point at once (each parser sees every input).
fn all_backends(data: &[u8]) {
    entry::lmstudio(data);
    entry::ollama(data);
    entry::openai(data);
    entry::llamacpp(data);
    entry::prometheus(data);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Arbitrary bytes never panic any backend parser, the Prometheus parser or nvidia-smi's.
    #[test]
    fn arbitrary_bytes_never_panic_a_backend_parser(data in prop::collection::vec(any::<u8>(), 0..2048)) {
        all_backends(&data);
    }

    /// JSON shaped like the APIs' answers (their field names, extreme numbers, odd dates) is
    /// parsed or rejected with a bounded, body-free message.
    #[test]
    fn api_shaped_json_never_panics(v in api_json(), date in "\\PC{0,40}") {
        let body = serde_json::to_vec(&v).expect("a Value serialises");
        all_backends(&body);
        let mut with_date = date.replace('\n', " ").into_bytes();
        with_date.push(b'\n');
        with_date.extend_from_slice(&body);
        entry::ollama(&with_date);
    }

    /// Prometheus-like text (names, label sets with escapes, odd values) never panics, and
    /// every figure telemetry derives stays in range.
    #[test]
    fn metric_soup_never_panics(
        lines in prop::collection::vec(
            (
                prop::sample::select(vec![
                    "DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE",
                    "DCGM_FI_DEV_XID_ERRORS", "node_filesystem_size_bytes",
                    "node_filesystem_avail_bytes", "node_filesystem_readonly",
                    "node_memory_SwapTotal_bytes", "node_memory_SwapFree_bytes",
                    "vllm:num_requests_running", "vllm:engine_sleep_state", "# TYPE x gauge", "",
                ]),
                "(\\{([a-z_]{1,8}=\"([^\"\\\\]|\\\\.){0,8}\",?){0,3}\\}?)?",
                prop::sample::select(vec![
                    "0", "1", "-1", "NaN", "+Inf", "-Inf", "1e308", "-1e308", "85.5", "9e999",
                    "0x10", "", "1 1700000000000",
                ]),
            ),
            0..24,
        )
    ) {
        let text: String =
            lines.iter().map(|(n, l, v)| format!("{n}{l} {v}\n")).collect();
        entry::prometheus(text.as_bytes());
        entry::openai(text.as_bytes());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Mutations of real servers' recorded answers (cut, flipped, spliced, repeated) never
    /// panic a parser.
    #[test]
    fn mutated_real_answers_never_panic(
        data in prop::sample::select(vec![
            "lmstudio_v1_models.json", "ollama_ps.json", "ollama_tags.json", "ollama_chat.json",
            "vllm_models.json", "vllm_metrics.txt", "llamacpp_chat.json",
            "llamacpp_router_models.json", "llamacpp_single_models.json",
        ]).prop_flat_map(|name| mutate(fixture(name)))
    ) {
        all_backends(&data);
    }

    /// Mutations of the shipped example manifests never panic the manifest loader, and its
    /// diagnostics carry positions from 1.
    #[test]
    fn mutated_real_manifests_never_panic(
        data in prop::sample::select(example_manifests()).prop_flat_map(mutate)
    ) {
        entry::manifest(&data);
    }

    /// Arbitrary bytes never panic the manifest loader.
    #[test]
    fn arbitrary_bytes_never_panic_the_manifest_loader(data in prop::collection::vec(any::<u8>(), 0..1024)) {
        entry::manifest(&data);
    }
}

/// The YAML files under examples/ and desired-state/.
fn example_manifests() -> Vec<Vec<u8>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    let mut dirs = vec![root.join("examples"), root.join("desired-state")];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
                out.push(std::fs::read(&p).expect("an example manifest is readable"));
            }
        }
    }
    out.sort();
    assert!(out.len() >= 3, "expected the example manifests, found {}", out.len());
    out
}

/// The seeds themselves pass every entry point (the fixtures are real answers, so each parser
/// must accept its own: a fuzz entry that rejected them would only test error paths).
#[test]
fn real_answers_pass_the_entry_points() {
    for name in [
        "lmstudio_v1_models.json",
        "ollama_ps.json",
        "vllm_models.json",
        "llamacpp_single_models.json",
        "vllm_metrics.txt",
    ] {
        all_backends(&fixture(name));
    }
    let r = |b: &[u8]| homeostat::observe::lmstudio::parse_v1_models(&reply(b), &names());
    assert!(r(&fixture("lmstudio_v1_models.json")).is_ok());
    assert!(homeostat::observe::openai::parse_models(&reply(&fixture("vllm_models.json"))).is_ok());
    for m in example_manifests() {
        entry::manifest(&m);
    }
}

fn reply(body: &[u8]) -> homeostat::observe::http::Reply {
    homeostat::observe::http::Reply {
        status: 200,
        headers: Default::default(),
        body: bytes::Bytes::copy_from_slice(body),
        latency: std::time::Duration::from_millis(5),
    }
}

fn names() -> homeostat::observe::driver::DesiredNames {
    homeostat::observe::driver::DesiredNames(vec!["qwen/qwen3-8b".into()])
}

/// Inputs cargo-fuzz found to break an entry point, kept so CI replays them. Each must now pass
/// its entry point (the entry's checks are what failed).
#[test]
fn cargo_fuzz_crashes_stay_fixed() {
    // prometheus, 2026-11-24 (minimized with `cargo fuzz tmin`): a line of control characters
    // made nvidia-smi's "unexpected line" error 480 bytes long (the input was cut to 80 bytes
    // before `{:?}` escaped each character to up to 10); the cap now applies after escaping.
    entry::prometheus(b"\x23\x20\x05\x05\x05\x05\x05\x05\x05\x05\x05\x05\x05\x05\x05\x01\x00\x05\x05\x05\x05\x05\x05\x05\x05\x05\x05\x05\x08\x00\x00\x00\x72\x79\x2e\x65\x6f\x01\x00\x00\x00\x05\x05\x05\x71\x05\x6f\x72\x79\x2e\x65");
    entry::prometheus("\u{5}".repeat(200).as_bytes());
}
