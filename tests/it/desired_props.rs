//! Property tests of the manifest loader: any valid manifest set, serialised to YAML, loads back
//! to the same value; no input (bytes, YAML-ish token soup, random documents) panics the loader,
//! and a credential planted anywhere in such input (value, key, kind) is never printed.

use std::collections::{BTreeMap, BTreeSet};

use homeostat::desired::diagnostic::looks_like_secret;
use homeostat::desired::*;
use proptest::prelude::*;
use serde::Serialize;

// ---------------------------------------------------------------------------------------------
// Generators of valid manifests.

fn name() -> impl Strategy<Value = String> {
    "[a-z0-9]([a-z0-9._-]{0,10}[a-z0-9])?"
}

/// Free text with YAML-significant characters, never credential-shaped.
fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9][a-zA-Z0-9 ,.?!:#'\"{}\\[\\]&*|>%@`-]{0,30}"
        .prop_filter("not credential-shaped", |s| !looks_like_secret(s))
}

fn dur() -> impl Strategy<Value = Dur> {
    (1u64..=10 * 86_400_000).prop_map(Dur::from_millis)
}

fn secret_ref() -> impl Strategy<Value = SecretRef> {
    prop_oneof![
        "[A-Z_][A-Z0-9_]{0,12}".prop_map(SecretRef::Env),
        "/etc/homeostat/[a-z0-9]{1,8}\\.token".prop_map(|p| SecretRef::File(p.into())),
    ]
}

fn argv() -> impl Strategy<Value = Vec<String>> {
    (
        "[a-z/][a-z0-9/_.-]{0,12}".prop_filter("not credential-shaped", |s| !looks_like_secret(s)),
        prop::collection::vec(
            "[a-zA-Z0-9@.:=/_-]{1,12}"
                .prop_filter("not credential-shaped", |s| !looks_like_secret(s)),
            0..4,
        ),
    )
        .prop_map(|(program, args)| {
            let mut v = vec![program];
            v.extend(args);
            v
        })
}

fn url() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u8..=255, 0u8..=255, 1u16..=65535)
            .prop_map(|(a, b, p)| format!("http://10.{a}.{b}.1:{p}")),
        (1u16..=65535).prop_map(|p| format!("http://127.0.0.1:{p}")),
        "[a-z]{1,8}".prop_map(|h| format!("https://{h}.example.com/v1")),
    ]
}

#[allow(clippy::field_reassign_with_default)] // most fields keep their defaults
fn cluster() -> impl Strategy<Value = ClusterSpec> {
    (
        (dur(), dur(), dur(), dur(), 1u32..=4096, any::<bool>()),
        (1u32..=10, 1u32..=10, dur(), dur(), dur()),
        ((-50.0f64..100.0), (0.0f64..20.0), (0.1f64..30.0)),
        (1u64..1 << 40, 1u64..1 << 40, 0u64..1 << 32),
        (0.0f64..=1.0, 0.0f64..=1.0, 0u32..=10, prop::option::of(name())),
        (
            prop::option::of(secret_ref()),
            prop_oneof![Just(PruneMode::Off), Just(PruneMode::WhenNeeded), Just(PruneMode::Always)],
        ),
    )
        .prop_map(|(probe, heal, thermal, memory, misc, (token, prune))| {
            let mut c = ClusterSpec::default();
            c.reconcile_interval = probe.0;
            c.probe.timeout = probe.1;
            c.probe.local_timeout = probe.2;
            c.probe.retry_delay = probe.3;
            c.probe.concurrency = probe.4;
            c.probe.canary = probe.5;
            c.heal.failure_threshold = heal.0;
            c.heal.max_attempts = heal.1;
            c.heal.unload_settle = heal.2;
            let (a, b) = if heal.3 <= heal.4 { (heal.3, heal.4) } else { (heal.4, heal.3) };
            c.heal.backoff_initial = a;
            c.heal.backoff_max = b;
            let (resume_gap, reroute_gap) = (thermal.1, thermal.2);
            c.thermal.resume_below = Celsius(thermal.0);
            c.thermal.reroute_above = Celsius(thermal.0 + resume_gap);
            c.thermal.hands_off_at = Celsius(thermal.0 + resume_gap + reroute_gap);
            let (lo, hi) = (memory.0.min(memory.1), memory.0.max(memory.1) + 1);
            c.swap.unload_above = ByteSize(lo);
            c.swap.critical_above = ByteSize(hi);
            c.vram.headroom = ByteSize(memory.2 % (1 << 30));
            c.verification.pass_ratio = Fraction(misc.0);
            c.disk.alert_above = Fraction(misc.1);
            c.mass_failure.min_failing = misc.2;
            // A suite reference is resolved by the caller (it must exist).
            c.verification.suite = misc.3.map(|_| "builtin-mini".to_owned());
            c.api.token_from = token;
            c.orphans.prune = prune;
            c
        })
}

fn model(index: usize, vram: u64) -> impl Strategy<Value = ModelSpec> {
    (
        "[a-z0-9]{1,8}(/[a-z0-9.-]{1,10})?(:[0-9]{1,2}b)?",
        1u64..=vram / 4,
        prop::option::of(prop_oneof![Just(Residency::Resident), Just(Residency::OnDemand)]),
        prop::option::of(1u32..=262_144),
        prop::option::of(any::<bool>()),
        prop::option::of(1u32..=4096),
    )
        .prop_map(move |(n, size, residency, ctx, fa, batch)| ModelSpec {
            name: format!("m{index}-{n}"),
            size: ByteSize(size),
            residency,
            context_length: ctx,
            flash_attention: fa,
            eval_batch_size: batch,
            num_experts: None,
            offload_kv_cache_to_gpu: None,
        })
}

fn node() -> impl Strategy<Value = NodeSpec> {
    let backend = prop_oneof![
        Just(Backend::Lmstudio),
        Just(Backend::Ollama),
        Just(Backend::Vllm),
        Just(Backend::Llamacpp),
        Just(Backend::Openai),
    ];
    ((8u64 << 30)..(256u64 << 30)).prop_flat_map(move |vram| {
        (
            backend.clone(),
            url(),
            prop::option::of(secret_ref().prop_map(|r| Auth { bearer_token_from: r })),
            (0usize..3).prop_flat_map(move |n| (0..n).map(|i| model(i, vram)).collect::<Vec<_>>()),
            prop::option::of((prop::collection::vec(url(), 1..3), prop::option::of(argv()))),
            prop::option::of((argv(), prop::option::of(dur()))),
            (any::<bool>(), prop::option::of(dur()), prop::option::of(prop::option::of(dur()))),
        )
            .prop_map(
                move |(backend, url, auth, models, telemetry, restart, (cordoned, probe, hb))| {
                    NodeSpec {
                        backend,
                        url,
                        auth,
                        vram: ByteSize(vram),
                        telemetry: telemetry
                            .map(|(prometheus, command)| TelemetrySource { prometheus, command }),
                        models,
                        restart: restart.map(|(command, timeout)| RestartSpec { command, timeout }),
                        heartbeat: hb.map(|timeout| NodeHeartbeat { timeout }),
                        cordoned,
                        probe_timeout: probe,
                        prune: None,
                        benchmark: None,
                        candidates: Vec::new(),
                    }
                },
            )
    })
}

fn service() -> impl Strategy<Value = ServiceSpec> {
    (url(), 100u16..=599, prop::option::of(dur()), prop::option::of(argv())).prop_map(
        |(url, status, timeout, restart)| ServiceSpec {
            probe: HttpProbe { url, expected_status: status, timeout },
            restart: restart.map(|command| RestartSpec { command, timeout: None }),
        },
    )
}

fn check() -> impl Strategy<Value = Check> {
    prop_oneof![
        text().prop_map(Check::Contains),
        text().prop_map(Check::Exact),
        prop::sample::select(vec![r"\bdef\b", r"^[0-9]+$", r"(?i)paris", r"a|b"])
            .prop_map(|r| Check::Regex(r.into())),
        (-1e9f64..1e9, 0.0f64..10.0)
            .prop_map(|(value, tolerance)| Check::Number(NumberCheck { value, tolerance })),
    ]
}

fn suite() -> impl Strategy<Value = SuiteSpec> {
    (1u32..=4096, dur(), prop::collection::vec((text(), "[a-z]{1,8}", check()), 1..4)).prop_map(
        |(max_tokens, timeout, tasks)| SuiteSpec {
            max_tokens,
            timeout,
            tasks: tasks
                .into_iter()
                .enumerate()
                .map(|(i, (prompt, domain, check))| TaskSpec {
                    name: (i % 2 == 0).then(|| format!("task-{i}")),
                    prompt,
                    domain,
                    check,
                })
                .collect(),
        },
    )
}

fn notifier() -> impl Strategy<Value = NotifierSpec> {
    let kind = prop_oneof![
        Just(NotifierType::Webhook),
        Just(NotifierType::Telegram),
        Just(NotifierType::Slack),
        Just(NotifierType::Ntfy),
    ];
    let severities = prop::sample::subsequence(
        vec![Severity::Info, Severity::Warning, Severity::Critical],
        1..=3,
    );
    (kind, secret_ref(), "-?[0-9]{1,13}", severities, any::<bool>(), dur()).prop_map(
        |(notifier_type, url_from, chat, severities, recoveries, renotify_after)| NotifierSpec {
            notifier_type,
            url_from,
            chat_id: (notifier_type == NotifierType::Telegram).then_some(chat),
            severities,
            recoveries,
            renotify_after,
        },
    )
}

/// A whole valid manifest set (the expected `DesiredState`, without its hash).
fn manifest_set() -> impl Strategy<Value = (Option<ClusterSpec>, DesiredState)> {
    (
        prop::option::of(cluster()),
        prop::collection::btree_map(
            name(),
            (node(), prop::collection::btree_map("[a-z][a-z0-9./-]{0,10}", text(), 0..3)),
            0..6,
        ),
        prop::collection::btree_map(name(), service(), 0..3),
        prop::collection::btree_map(name(), suite(), 0..3),
        prop::collection::btree_map(name(), notifier(), 0..3),
        prop::collection::vec(
            (
                "[a-z][a-z0-9-]{0,8}",
                prop::collection::vec((any::<prop::sample::Index>(), 0.01f64..10.0), 1..4),
            ),
            0..4,
        ),
        prop::collection::vec(
            (name(), url(), 0.01f64..10.0, prop::option::of(secret_ref()), any::<bool>()),
            0..3,
        ),
    )
        .prop_map(|(cluster, nodes, services, suites, notifiers, cats, remotes)| {
            let mut s =
                DesiredState { cluster: cluster.clone().unwrap_or_default(), ..Default::default() };
            for (n, (spec, labels)) in nodes {
                s.node_labels.insert(n.clone(), labels);
                s.nodes.insert(n, spec);
            }
            s.services = services;
            s.suites = suites;
            s.notifiers = notifiers;
            let node_names: Vec<&String> = s.nodes.keys().collect();
            if !node_names.is_empty() {
                for (cat, targets) in cats {
                    let mut seen = BTreeSet::new();
                    let list: Vec<RouteTarget> = targets
                        .into_iter()
                        .map(|(i, weight)| (i.get(&node_names).to_string(), weight))
                        .filter(|(n, _)| seen.insert(n.clone()))
                        .map(|(node, weight)| RouteTarget { node, weight })
                        .collect();
                    s.routing.categories.insert(cat, list);
                }
            }
            let cat_names: Vec<String> = s.routing.categories.keys().cloned().collect();
            let mut remote_names = BTreeSet::new();
            for (name, url, weight, key, all) in remotes {
                if remote_names.insert(name.clone()) {
                    let categories =
                        (!all && !cat_names.is_empty()).then(|| cat_names[..1].to_vec());
                    s.routing.remotes.push(RemoteProvider {
                        name,
                        url,
                        weight,
                        api_key_from: key,
                        categories,
                    });
                }
            }
            (cluster, s)
        })
}

fn doc<S: Serialize>(kind: Kind, name: &str, labels: BTreeMap<String, String>, spec: &S) -> String {
    let d = Document {
        api_version: API_VERSION.to_owned(),
        kind: kind.as_str().to_owned(),
        metadata: Metadata { name: name.to_owned(), labels },
        spec,
    };
    serde_saphyr::to_string(&d).expect("manifests serialise")
}

/// Renders a manifest set as one multi-document YAML file.
fn render(cluster: &Option<ClusterSpec>, s: &DesiredState) -> String {
    let mut docs = Vec::new();
    if let Some(c) = cluster {
        docs.push(doc(Kind::Cluster, "lab", BTreeMap::new(), c));
    }
    for (n, spec) in &s.nodes {
        docs.push(doc(Kind::Node, n, s.node_labels[n].clone(), spec));
    }
    for (n, spec) in &s.services {
        docs.push(doc(Kind::Service, n, BTreeMap::new(), spec));
    }
    if !s.routing.categories.is_empty() || !s.routing.remotes.is_empty() {
        docs.push(doc(Kind::Routing, "routes", BTreeMap::new(), &s.routing));
    }
    for (n, spec) in &s.suites {
        docs.push(doc(Kind::BenchmarkSuite, n, BTreeMap::new(), spec));
    }
    for (n, spec) in &s.notifiers {
        docs.push(doc(Kind::Notifier, n, BTreeMap::new(), spec));
    }
    docs.join("---\n")
}

// ---------------------------------------------------------------------------------------------
// Inputs that are anything but valid.

fn yaml_soup() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("apiVersion: homeostat.dev/v1\n".to_owned()),
        prop::sample::select(vec![
            "Cluster",
            "Node",
            "Service",
            "Routing",
            "BenchmarkSuite",
            "Notifier",
            "Nod",
            "sk-live-0123456789abcdef"
        ])
        .prop_map(|k| format!("kind: {k}\n")),
        Just("metadata:\n  name: m1\n".to_owned()),
        Just("spec:\n".to_owned()),
        Just("  ".to_owned()),
        Just("\t".to_owned()),
        Just("\n".to_owned()),
        Just("- ".to_owned()),
        Just(": ".to_owned()),
        Just("{".to_owned()),
        Just("}".to_owned()),
        Just("[".to_owned()),
        Just("]".to_owned()),
        Just(", ".to_owned()),
        Just("---\n".to_owned()),
        Just("...\n".to_owned()),
        Just("&a ".to_owned()),
        Just("*a".to_owned()),
        Just("<<: ".to_owned()),
        Just("!!str ".to_owned()),
        Just("? ".to_owned()),
        Just("|\n".to_owned()),
        Just("\"".to_owned()),
        Just("'".to_owned()),
        Just("# c\n".to_owned()),
        Just("%YAML 1.2\n".to_owned()),
        prop::sample::select(vec![
            "backend",
            "url",
            "vram",
            "models",
            "auth",
            "bearerTokenFrom",
            "env",
            "file",
            "name",
            "size",
            "categories",
            "node",
            "weight",
            "remotes",
            "tasks",
            "check",
            "regex",
            "thermal",
            "rerouteAbove",
            "urlFrom",
            "type",
            "telemetry",
            "command",
            "restart",
            "probe",
            "sk-live-0123456789abcdef",
        ])
        .prop_map(|k| format!("{k}: ")),
        "[a-z0-9.:/]{1,10}",
        prop::sample::select(vec![
            "8GiB",
            "5s",
            "-1",
            "1e400",
            "0x1f",
            "~",
            "true",
            "http://a:b@x",
            "sk-live-0123456789abcdef"
        ])
        .prop_map(str::to_owned),
    ];
    prop::collection::vec(token, 0..80).prop_map(|t| t.concat())
}

/// A random JSON-like tree whose keys are mostly real field names.
fn tree() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        (-1e6f64..1e6).prop_map(serde_json::Value::from),
        prop::sample::select(vec![
            "8GiB",
            "5s",
            "http://10.0.0.1:1",
            "lmstudio",
            "env",
            "",
            "sk-live-0123456789abcdef",
            "resident",
            "telegram"
        ])
        .prop_map(serde_json::Value::from),
    ];
    let key = prop::sample::select(vec![
        "backend",
        "url",
        "vram",
        "models",
        "auth",
        "bearerTokenFrom",
        "env",
        "file",
        "name",
        "size",
        "categories",
        "node",
        "weight",
        "remotes",
        "tasks",
        "check",
        "regex",
        "number",
        "value",
        "thermal",
        "rerouteAbove",
        "urlFrom",
        "type",
        "telemetry",
        "command",
        "restart",
        "probe",
        "residency",
        "x",
        "prometheus",
        "heartbeat",
        "chatId",
        "severities",
        "labels",
        "apiKey",
        "token",
        "sk-live-0123456789abcdef",
    ]);
    leaf.prop_recursive(5, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map(key.clone(), inner, 0..6).prop_map(|m| {
                serde_json::Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
            }),
        ]
    })
}

/// The secret the generators plant in their inputs; no diagnostic may ever print it.
const PLANTED: &str = "0123456789abcdef";

/// The loader's result must be usable whatever the input: an Ok state or diagnostics that
/// render, each error with a 1-based position when it has one, none quoting the planted secret.
fn assert_well_formed(result: Result<DesiredState, Diagnostics>) {
    if let Err(d) = result {
        assert!(d.error_count() > 0);
        let text = d.to_string();
        assert!(!text.contains(PLANTED), "a secret leaked:\n{text}");
        for x in d.iter() {
            assert!(x.line.is_none_or(|l| l >= 1) && x.column.is_none_or(|c| c >= 1), "{x:?}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Any generated valid manifest set, serialised with serde-saphyr, loads back to the
    /// same `DesiredState`.
    #[test]
    fn valid_sets_round_trip((cluster, expected) in manifest_set()) {
        let text = render(&cluster, &expected);
        prop_assume!(!text.is_empty());
        let loaded = from_yaml_str(&text).map_err(|d| TestCaseError::fail(format!("{d}\n---\n{text}")))?;
        let mut expected = expected;
        expected.hash = loaded.hash.clone();
        prop_assert_eq!(loaded, expected, "{}", text);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Arbitrary bytes never panic the directory loader (UTF-8 check, BOM, YAML).
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x.yaml"), &bytes).unwrap();
        let _ = load_dir(dir.path()).map(|l| l.state).map_err(|d| d.to_string());
        assert_well_formed(from_yaml_str(&String::from_utf8_lossy(&bytes)));
    }

    /// YAML-ish token soup (tabs, anchors, merge keys, directives, broken flow collections)
    /// never panics the loader, and the credential it may contain is never printed.
    #[test]
    fn yaml_soup_never_panics(text in yaml_soup()) {
        assert_well_formed(from_yaml_str(&text));
    }

    /// Well-formed documents of every kind with random specs built from real field names never
    /// panic the schema and semantic layers, and never print the credential planted as a key or
    /// a value.
    #[test]
    fn random_documents_never_panic(kind in prop::sample::select(Kind::ALL.to_vec()), spec in tree()) {
        let doc = serde_json::json!({
            "apiVersion": API_VERSION, "kind": kind.as_str(), "metadata": { "name": "x" }, "spec": spec,
        });
        let text = serde_saphyr::to_string(&doc).unwrap();
        assert_well_formed(from_yaml_str(&text));
    }
}
