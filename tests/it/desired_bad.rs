//! The table of broken manifests (tests/fixtures/bad/<case>/): each case is a directory loaded
//! with `load_dir`, and the test asserts the exact diagnostics (message, file, line, column,
//! hint) as an inline snapshot. `UPDATE_EXPECT=1 cargo test --test it desired_bad` rewrites them.
//!
//! Every secret in the fixtures contains the word `SECRET`; `check` also asserts it never
//! appears in the output.

use std::path::Path;

use expect_test::{Expect, expect};

/// Loads `tests/fixtures/bad/<case>`, which must be invalid, and compares the rendered
/// diagnostics (paths shown relative to the case directory).
#[track_caller]
fn check(case: &str, expect: Expect) {
    let dir = format!("tests/fixtures/bad/{case}");
    let diags = match homeostat::desired::load_dir(Path::new(&dir)) {
        Ok(_) => panic!("{case} should be invalid"),
        Err(d) => d,
    };
    let text = diags.to_string().replace(&format!("{dir}/"), "").replace(&dir, "<dir>");
    assert!(!text.contains("SECRET"), "a secret leaked:\n{text}");
    assert!(diags.error_count() > 0);
    expect.assert_eq(&format!("{text}\n"));
}

/// A restart command written as one shell string is refused, showing the argv form.
#[test]
fn argv_as_shell_string() {
    check(
        "argv_as_shell_string",
        expect![[r#"
        nodes.yaml:11:23: error: spec.restart.command: expected a list, found a string
          hint: commands run as argv without a shell: write a list such as `command: [systemctl, restart, lmstudio]`
    "#]],
    );
}

/// A duration with a space and a word for a unit is refused, showing valid forms.
#[test]
fn bad_duration() {
    check(
        "bad_duration",
        expect![[r#"
        cluster.yaml:5:22: error: spec.reconcileInterval: invalid duration "1 minute": expected a whole number followed by ms, s, m, h or d, e.g. 250ms, 5s, 10m, 1h30m
    "#]],
    );
}

/// Names are lower-case DNS-like words.
#[test]
fn bad_name() {
    check(
        "bad_name",
        expect![[r#"
        nodes.yaml:4:9: error: metadata.name: invalid name "M1_Primary"
          hint: names use lower-case letters, digits, `-`, `_` and `.`, and start and end with a letter or digit
    "#]],
    );
}

/// A regex check must compile.
#[test]
fn bad_regex() {
    check(
        "bad_regex",
        expect![[r#"
            suites.yaml:6:72: error: spec.tasks[0].check.regex: invalid regular expression: unclosed group
              hint: the syntax is Rust's `regex` crate (no look-around or backreferences)
        "#]],
    );
}

/// A size with a space between number and unit is refused, showing valid forms.
#[test]
fn bad_size() {
    check(
        "bad_size",
        expect![[r#"
        nodes.yaml:8:9: error: spec.vram: invalid size "46 GB": expected a number followed by B, KB, MB, GB, TB, KiB, MiB, GiB or TiB, e.g. 46GiB or 512MB
    "#]],
    );
}

/// A URL without a scheme is refused with an example of the right form.
#[test]
fn bad_url() {
    check(
        "bad_url",
        expect![[r#"
        nodes.yaml:7:8: error: spec.url: invalid URL: relative URL without a base
          hint: write it like `http://10.5.0.2:1234` or `https://api.example.com/v1`
    "#]],
    );
}

/// A misspelt check variant gets a hint; a bare string where a check mapping belongs is refused.
#[test]
fn check_typo() {
    check(
        "check_typo",
        expect![[r#"
        suites.yaml:6:48: error: spec.tasks[0].check.numbr: unknown field `numbr`: expected `contains`, `regex`, `exact` or `number`
          hint: did you mean `number`?
        suites.yaml:7:63: error: spec.tasks[1].check: expected a mapping with one of `contains`, `regex`, `exact` or `number`, found a string
    "#]],
    );
}

/// A document that is a list is refused.
#[test]
fn document_not_a_mapping() {
    check(
        "document_not_a_mapping",
        expect![[r#"
        nodes.yaml:1:1: error: a document must be a mapping, found a list
          hint: start it with `apiVersion: homeostat.dev/v1`, `kind:`, `metadata:` and `spec:`
    "#]],
    );
}

/// A category routed by two Routing documents is refused, naming the first.
#[test]
fn duplicate_category() {
    check(
        "duplicate_category",
        expect![[r#"
        b.yaml:6:5: error: spec.categories.code: category `code` is already routed at a.yaml:6:5
    "#]],
    );
}

/// The same kind and name in two files is refused, naming both places.
#[test]
fn duplicate_name_across_files() {
    check(
        "duplicate_name_across_files",
        expect![[r#"
        b.yaml:5:9: error: metadata.name: duplicate Node `m1`: also defined at a.yaml:4:9
          hint: names are unique per kind; rename or remove one of the two Nodes
    "#]],
    );
}

/// A key given twice in one mapping is refused at the second, naming the first's line.
#[test]
fn duplicate_yaml_key() {
    check(
        "duplicate_yaml_key",
        expect![[r#"
        nodes.yaml:11:3: error: duplicate key `url` (first at line 7)
          hint: YAML allows each key once per mapping; remove one
    "#]],
    );
}

/// An empty restart command is refused, showing the argv form.
#[test]
fn empty_argv() {
    check(
        "empty_argv",
        expect![[r#"
        nodes.yaml:11:23: error: spec.restart.command: must not be empty
          hint: commands run as argv without a shell: write a list such as `command: [systemctl, restart, lmstudio]`
    "#]],
    );
}

/// An empty file is a warning; a set with no documents at all is an error.
#[test]
fn empty_file() {
    check(
        "empty_file",
        expect![[r#"
        <dir>: error: no manifest documents found
          hint: a manifest starts with `apiVersion: homeostat.dev/v1` and `kind:` (one of Cluster, Node, Service, Routing, BenchmarkSuite, Notifier)
        empty.yaml: warning: no documents in this file; it is ignored
          hint: a manifest file holds one or more documents separated by `---`
    "#]],
    );
}

/// A secret pasted as the environment variable's name is refused without echoing it.
#[test]
fn env_reference_holding_a_secret() {
    check(
        "env_reference_holding_a_secret",
        expect![[r#"
        nodes.yaml:12:24: error: spec.auth.bearerTokenFrom.env: `env` must name an environment variable (letters, digits and `_`, not starting with a digit); the value given is not shown
          hint: write `bearerTokenFrom: { env: NAME }` or `bearerTokenFrom: { file: /path/to/secret }`
    "#]],
    );
}

/// A remote provider's literal `apiKey` is refused with the `apiKeyFrom` form.
#[test]
fn literal_api_key() {
    check(
        "literal_api_key",
        expect![[r#"
        routing.yaml:11:7: error: spec.remotes[0].apiKey: literal secret refused: secrets never live in manifests (value not shown)
          hint: reference it instead: `apiKeyFrom: { env: NAME }` (or `{ file: /path/to/key }`)
    "#]],
    );
}

/// A token given as the whole `auth` value is refused without echoing it.
#[test]
fn literal_auth_string() {
    check(
        "literal_auth_string",
        expect![[r#"
        nodes.yaml:11:3: error: spec.auth: literal secret refused: secrets never live in manifests (value not shown)
          hint: reference it instead: `auth: { bearerTokenFrom: { env: NAME } }` (or `{ file: /path/to/token }`)
    "#]],
    );
}

/// A bearer token written in `auth` is refused, shows the reference form, never the token.
#[test]
fn literal_token() {
    check(
        "literal_token",
        expect![[r#"
        nodes.yaml:11:11: error: spec.auth.bearerToken: literal secret refused: secrets never live in manifests (value not shown)
          hint: reference it instead: `auth: { bearerTokenFrom: { env: NAME } }` (or `{ file: /path/to/token }`)
    "#]],
    );
}

/// A literal where a `{ env | file }` reference is expected is refused without echoing it.
#[test]
fn literal_token_in_reference() {
    check(
        "literal_token_in_reference",
        expect![[r#"
        nodes.yaml:12:5: error: spec.auth.bearerTokenFrom: `bearerTokenFrom` expects a reference to a secret, not a literal value (value not shown)
          hint: write `bearerTokenFrom: { env: NAME }` or `bearerTokenFrom: { file: /path/to/secret }`
    "#]],
    );
}

/// A webhook URL written where its reference belongs is refused without echoing it.
#[test]
fn literal_webhook_url() {
    check(
        "literal_webhook_url",
        expect![[r#"
        notifiers.yaml:6:3: error: spec.urlFrom: `urlFrom` expects a reference to a secret, not a literal value (value not shown)
          hint: write `urlFrom: { env: NAME }` or `urlFrom: { file: /path/to/secret }`; a webhook URL embeds its secret, so it is referenced too
    "#]],
    );
}

/// YAML that is not a homeostat manifest (no apiVersion, no kind) is refused.
#[test]
fn missing_api_version() {
    check(
        "missing_api_version",
        expect![[r#"
        compose.yaml:1:1: error: apiVersion: missing field `apiVersion`
          hint: add `apiVersion: homeostat.dev/v1` (is this a homeostat manifest?)
        compose.yaml:1:1: error: kind: missing field `kind`
          hint: add `kind:` with one of Cluster, Node, Service, Routing, BenchmarkSuite, Notifier
    "#]],
    );
}

/// A missing required field is reported at its parent with what the field is for.
#[test]
fn missing_required_field() {
    check(
        "missing_required_field",
        expect![[r#"
        nodes.yaml:4:1: error: spec.url: missing field `url`
          hint: add `url:` (Base URL of the server, e.g. `http://10.5.0.2:1234`. No credentials in it)
    "#]],
    );
}

/// A model that cannot fit the node's VRAM with the headroom is refused, with the arithmetic.
#[test]
fn model_larger_than_vram() {
    check(
        "model_larger_than_vram",
        expect![[r#"
        nodes.yaml:10:37: error: spec.models[0].size: model `qwen/qwen3-32b` needs 20.0 GiB + 1.0 GiB headroom = 21.0 GiB, more than the node's VRAM (16.0 GiB)
          hint: pick a smaller quantisation or context, or a node with more VRAM
    "#]],
    );
}

/// A negative routing weight is refused.
#[test]
fn negative_weight() {
    check(
        "negative_weight",
        expect![[r#"
        routing.yaml:7:29: error: spec.categories.code[0].weight: must be greater than 0, found -1.4
    "#]],
    );
}

/// A file that is not UTF-8 is refused with the byte offset.
#[test]
fn not_utf8() {
    check(
        "not_utf8",
        expect![[r#"
            nodes.yaml:3:22: error: not valid UTF-8
              hint: save the file as UTF-8
        "#]],
    );
}

/// A file of comments only counts as empty.
#[test]
fn only_comments() {
    check(
        "only_comments",
        expect![[r#"
        <dir>: error: no manifest documents found
          hint: a manifest starts with `apiVersion: homeostat.dev/v1` and `kind:` (one of Cluster, Node, Service, Routing, BenchmarkSuite, Notifier)
        notes.yaml: warning: no documents in this file; it is ignored
          hint: a manifest file holds one or more documents separated by `---`
    "#]],
    );
}

/// A remote serving an undeclared category is refused, with a hint.
#[test]
fn remote_unknown_category() {
    check(
        "remote_unknown_category",
        expect![[r#"
        routing.yaml:9:89: error: spec.remotes[0].categories[1]: unknown category `reasoninng`
          hint: did you mean `reasoning`?
    "#]],
    );
}

/// The reroute temperature must be below the hands-off temperature.
#[test]
fn reroute_not_below_hands_off() {
    check(
        "reroute_not_below_hands_off",
        expect![[r#"
        cluster.yaml:5:28: error: spec.thermal.rerouteAbove: rerouteAbove (90 °C) must be below handsOffAt (90 °C)
          hint: a hot node is first rerouted, then left alone entirely at the hands-off temperature
    "#]],
    );
}

/// Resident models that fit one by one but not together (with the cluster's headroom) are refused.
#[test]
fn residents_exceed_vram() {
    check(
        "residents_exceed_vram",
        expect![[r#"
        nodes.yaml:10:5: error: spec.models: the resident models need 22.0 GiB + 3.0 GiB headroom together, more than the node's VRAM (24.0 GiB)
          hint: mark some of them `residency: onDemand`
    "#]],
    );
}

/// The resume temperature must not be above the reroute temperature.
#[test]
fn resume_above_reroute() {
    check(
        "resume_above_reroute",
        expect![[r#"
        cluster.yaml:5:61: error: spec.thermal.resumeBelow: resumeBelow (87 °C) must not be above rerouteAbove (85 °C)
    "#]],
    );
}

/// A route naming an undeclared node is refused, with a hint when a declared name is close.
#[test]
fn route_to_missing_node() {
    check(
        "route_to_missing_node",
        expect![[r#"
        routing.yaml:8:17: error: spec.categories.code[1].node: routes to unknown Node `m11`
          hint: did you mean `m1`?
        routing.yaml:10:17: error: spec.categories.fast[0].node: routes to unknown Node `gpu-box`
          hint: declare it with `kind: Node`
    "#]],
    );
}

/// A credential-shaped value anywhere (here a label) is refused without echoing it.
#[test]
fn secret_looking_label() {
    check(
        "secret_looking_label",
        expect![[r#"
            nodes.yaml:5:13: error: metadata.labels.owner: value looks like a secret and is refused: secrets never live in manifests (value not shown)
              hint: secrets never live in manifests, not even in labels: keep it in an environment variable or a file
        "#]],
    );
}

/// The swap unload limit must be below the critical limit.
#[test]
fn swap_limits_reversed() {
    check(
        "swap_limits_reversed",
        expect![[r#"
        cluster.yaml:5:24: error: spec.swap.unloadAbove: unloadAbove (12.0 GiB) must be below criticalAbove (8.0 GiB)
    "#]],
    );
}

/// A syntax error in one document does not hide the errors of the next.
#[test]
fn syntax_error_recovers() {
    check(
        "syntax_error_recovers",
        expect![[r#"
        nodes.yaml:4:7: error: YAML syntax error: unclosed bracket '{'
        nodes.yaml:13:9: error: spec.vram: invalid size "1.5TB GPU": expected a number followed by B, KB, MB, GB, TB, KiB, MiB, GiB or TiB, e.g. 46GiB or 512MB
    "#]],
    );
}

/// Tab indentation is a YAML syntax error with a hint to use spaces.
#[test]
fn tab_indented() {
    check(
        "tab_indented",
        expect![[r#"
        nodes.yaml:4:2: error: YAML syntax error: tabs disallowed within this context (block indentation)
          hint: YAML indentation must use spaces, not tabs
    "#]],
    );
}

/// A Telegram notifier needs a chat id.
#[test]
fn telegram_without_chat_id() {
    check(
        "telegram_without_chat_id",
        expect![[r#"
        notifiers.yaml:5:3: error: spec.type: a telegram notifier needs `chatId`
          hint: add `chatId: "-1001234567890"` (the chat the bot posts to)
    "#]],
    );
}

/// At most one Cluster document.
#[test]
fn two_clusters() {
    check(
        "two_clusters",
        expect![[r#"
        b.yaml:1:1: error: a second Cluster document (the first is at a.yaml:1:1)
          hint: cluster-wide policy lives in one Cluster document; merge them
    "#]],
    );
}

/// A misspelt field is an unknown field, with the closest real field as a hint.
#[test]
fn typo_field() {
    check(
        "typo_field",
        expect![[r#"
        nodes.yaml:9:3: error: spec.modles: unknown field `modles`
          hint: did you mean `models`?
    "#]],
    );
}

/// An unknown backend lists the backends, with the closest as a hint.
#[test]
fn unknown_backend() {
    check(
        "unknown_backend",
        expect![[r#"
        nodes.yaml:6:12: error: spec.backend: invalid value "lmstudo": expected `lmstudio`, `ollama`, `vllm`, `llamacpp` or `openai`
          hint: did you mean `lmstudio`?
    "#]],
    );
}

/// An unknown kind far from every real one lists the known kinds.
#[test]
fn unknown_kind() {
    check(
        "unknown_kind",
        expect![[r#"
        deploy.yaml:2:7: error: kind: unknown kind `Deployment`
          hint: known kinds: Cluster, Node, Service, Routing, BenchmarkSuite, Notifier
    "#]],
    );
}

/// An unknown kind close to a real one gets a "did you mean".
#[test]
fn unknown_kind_with_hint() {
    check(
        "unknown_kind_with_hint",
        expect![[r#"
        nodes.yaml:2:7: error: kind: unknown kind `Nodes`
          hint: did you mean `Node`?
    "#]],
    );
}

/// The verification suite must exist (or be left out for the built-in one).
#[test]
fn unknown_suite() {
    check(
        "unknown_suite",
        expect![[r#"
        cluster.yaml:5:26: error: spec.verification.suite: unknown BenchmarkSuite `lab-mni`
          hint: did you mean `lab-mini`?
    "#]],
    );
}

/// Only http and https URLs are accepted.
#[test]
fn url_scheme() {
    check(
        "url_scheme",
        expect![[r#"
        services.yaml:5:17: error: spec.probe.url: URL scheme must be http or https, found `ftp`
          hint: write it like `http://10.5.0.2:1234` or `https://api.example.com/v1`
    "#]],
    );
}

/// A URL with user:password is refused without printing it.
#[test]
fn url_with_credentials() {
    check(
        "url_with_credentials",
        expect![[r#"
        nodes.yaml:7:8: error: spec.url: URL carries credentials (`user:password@`); secrets never live in manifests (URL not shown)
          hint: reference it instead: `auth: { bearerTokenFrom: { env: NAME } }` (or `{ file: /path/to/token }`)
    "#]],
    );
}

/// A URL with a token query parameter is refused, naming the parameter only.
#[test]
fn url_with_token_query() {
    check(
        "url_with_token_query",
        expect![[r#"
        services.yaml:5:17: error: spec.probe.url: URL carries a credential in its query (`access_token=...`); secrets never live in manifests (URL not shown)
          hint: health probes send no credentials: probe an endpoint that answers without them (most `/health` endpoints do)
    "#]],
    );
}

/// Another apiVersion is refused with the expected one.
#[test]
fn wrong_api_version() {
    check(
        "wrong_api_version",
        expect![[r#"
        nodes.yaml:1:13: error: apiVersion: unsupported apiVersion `apps/v1`: expected `homeostat.dev/v1`
          hint: write `apiVersion: homeostat.dev/v1`
    "#]],
    );
}

/// A number where a size string is expected says what a size looks like.
#[test]
fn wrong_type() {
    check(
        "wrong_type",
        expect![[r#"
        nodes.yaml:8:9: error: spec.vram: expected a size such as 46GiB or 512MB, found an integer
    "#]],
    );
}

/// A word that is not true/false where a boolean is expected.
#[test]
fn wrong_type_bool() {
    check(
        "wrong_type_bool",
        expect![[r#"
        cluster.yaml:5:20: error: spec.probe.canary: expected a boolean (true or false), found a string
    "#]],
    );
}

/// A number the schema accepts but the field cannot hold is reported by the typed pass, with the
/// line and column of the document's own text mapped back into the file.
#[test]
fn number_too_large() {
    check(
        "number_too_large",
        expect![[r#"
        nodes.yaml:16:22: error: spec.models[0].contextLength: expected an integer from 0 to 4294967295
    "#]],
    );
}
