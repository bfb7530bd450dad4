//! Validation in layers, collecting every problem at once (vector's `compile`):
//!
//! 1. **YAML** (`yaml`): syntax (recovering at the next `---`), duplicate keys, depth.
//! 2. **Header**: `apiVersion`, `kind` (with a "did you mean"), `metadata.name`.
//! 3. **Secret hygiene** (`hygiene`): literal secrets, credential URLs, before anything quotes
//!    a value.
//! 4. **JSON Schema** (`schema`): the document against its own kind's generated schema.
//! 5. **Typed**: serde-saphyr deserialises the document's own text straight into
//!    `Document<KindSpec>` (no tag/flatten buffering, so errors keep their line and column).
//! 6. **Semantic**: limits in order, argv non-empty, regexes compile, then across documents:
//!    unique names, one `Cluster`, routes name existing nodes, suites exist, models fit VRAM.
//!
//! A document goes to layer 5 only when layers 1–4 found nothing in it, so each problem is
//! reported once, by the layer that explains it best. Cross-document checks use the names of
//! every document, even broken ones, so a typo in one node does not also report every route to
//! it as dangling.
//!
//! Pure: no I/O. Only this module constructs a `DesiredState`.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::diagnostic::{
    Diagnostic, Mark, Seg, did_you_mean, looks_like_secret, redact_token_like, render_path,
};
use super::types::*;
use super::units::{ByteSize, Dur};
use super::yaml::{self, Node, printable};
use super::{DesiredState, defaults};

/// One file to validate: how to name it in diagnostics, and its text.
pub(crate) struct Source<'a> {
    pub display: &'a str,
    pub text: &'a str,
}

/// A validated set, before the loader adds its hash.
pub(crate) struct Compiled {
    pub state: DesiredState,
    pub objects: BTreeMap<Kind, usize>,
    pub warnings: Vec<Diagnostic>,
}

/// `p!["spec", "models", 0]` → a path.
macro_rules! p {
    ($($s:expr),* $(,)?) => { &[$(Seg::from($s)),*][..] };
}

/// A document that passed the YAML layer and names a known kind.
struct Doc<'a> {
    file: &'a str,
    /// The document's own text (whole lines) and the file line it starts on.
    text: &'a str,
    first_line: usize,
    root: &'a Node,
    kind: Kind,
    name: Option<&'a str>,
    /// Nothing found by layers 1–4: the typed pass may run.
    clean: bool,
    /// The document as JSON (layer 4's input), kept for the typed pass's fast path.
    json: serde_json::Value,
}

impl Doc<'_> {
    fn error(&self, path: &[Seg], message: impl Into<String>) -> Diagnostic {
        Diagnostic::error(self.file, message)
            .at(Some(self.root.value_mark(path)))
            .path(render_path(path))
    }

    fn error_at_key(&self, path: &[Seg], message: impl Into<String>) -> Diagnostic {
        Diagnostic::error(self.file, message)
            .at(Some(self.root.key_mark(path)))
            .path(render_path(path))
    }

    fn warning(&self, path: &[Seg], message: impl Into<String>) -> Diagnostic {
        Diagnostic::warning(self.file, message)
            .at(Some(self.root.value_mark(path)))
            .path(render_path(path))
    }

    fn name_mark(&self) -> Mark {
        self.root.value_mark(p!["metadata", "name"])
    }

    fn display_name(&self) -> String {
        self.name.map_or_else(|| "?".to_owned(), printable)
    }
}

/// A document's spec after the typed pass.
enum Spec {
    Cluster(Box<ClusterSpec>),
    Node(Box<NodeSpec>),
    Service(ServiceSpec),
    Routing(RoutingSpec),
    Suite(SuiteSpec),
    Notifier(NotifierSpec),
}

struct Typed<'d, 'a> {
    doc: &'d Doc<'a>,
    metadata: Metadata,
    spec: Spec,
}

/// Validates a set of files; `set` names the whole set (the directory) in diagnostics that
/// belong to no file.
/// `unreadable` counts the files the loader found but could not read (already reported): with
/// any, an empty set is not reported again as "no manifests".
pub(crate) fn compile(
    sources: &[Source<'_>],
    set: &str,
    unreadable: usize,
) -> Result<Compiled, Vec<Diagnostic>> {
    let mut diags: Vec<Diagnostic> = Vec::new();

    // Layer 1: YAML.
    let parsed: Vec<yaml::File> = sources.iter().map(|s| yaml::parse(s.text)).collect();
    let mut docs: Vec<Doc<'_>> = Vec::new();
    let mut document_count = 0usize;
    for (source, file) in sources.iter().zip(&parsed) {
        for e in &file.syntax_errors {
            diags.push(problem(source.display, e));
        }
        let mut non_empty = 0usize;
        for d in &file.docs {
            super::work::add(1);
            for e in &d.problems {
                diags.push(problem(source.display, e));
            }
            let Some(root) = &d.root else { continue };
            non_empty += 1;
            // Layer 2: header.
            if let Some(doc) =
                header(source.display, &source.text[d.text.clone()], d, root, &mut diags)
            {
                docs.push(doc);
            }
        }
        document_count += non_empty;
        if non_empty == 0
            && file.syntax_errors.is_empty()
            && file.docs.iter().all(|d| d.problems.is_empty())
        {
            diags.push(
                Diagnostic::warning(source.display, "no documents in this file; it is ignored")
                    .hint("a manifest file holds one or more documents separated by `---`"),
            );
        }
    }
    if document_count == 0
        && unreadable == 0
        && parsed
            .iter()
            .all(|f| f.syntax_errors.is_empty() && f.docs.iter().all(|d| d.problems.is_empty()))
    {
        let message = if sources.is_empty() {
            "no manifests found: expected *.yaml or *.yml files".to_owned()
        } else {
            "no manifest documents found".to_owned()
        };
        diags.push(Diagnostic::error(set, message).hint(format!(
            "a manifest starts with `apiVersion: {API_VERSION}` and `kind:` (one of {})",
            kind_list()
        )));
    }

    // Layers 3 and 4: secret hygiene, then the JSON Schema.
    for doc in &mut docs {
        super::work::add(1);
        let found = super::hygiene::check(doc.kind, doc.root, doc.file);
        let mut handled = found.handled;
        // The header layer reported these already.
        handled.push(vec![Seg::from("apiVersion")]);
        handled.push(vec![Seg::from("kind")]);
        doc.json = doc.root.to_json();
        let schema_errors = super::schema::check(
            doc.kind,
            doc.root,
            &doc.json,
            doc.file,
            &handled,
            &found.refused_in,
        );
        if !found.diagnostics.is_empty() || !schema_errors.is_empty() {
            doc.clean = false;
        }
        diags.extend(found.diagnostics);
        diags.extend(schema_errors);
    }

    // Layer 5: typed.
    let mut typed: Vec<Typed<'_, '_>> = Vec::new();
    for doc in docs.iter().filter(|d| d.clean) {
        let result = match doc.kind {
            Kind::Cluster => {
                deserialize::<ClusterSpec>(doc).map(|(m, s)| (m, Spec::Cluster(Box::new(s))))
            }
            Kind::Node => deserialize::<NodeSpec>(doc).map(|(m, s)| (m, Spec::Node(Box::new(s)))),
            Kind::Service => deserialize::<ServiceSpec>(doc).map(|(m, s)| (m, Spec::Service(s))),
            Kind::Routing => deserialize::<RoutingSpec>(doc).map(|(m, s)| (m, Spec::Routing(s))),
            Kind::BenchmarkSuite => deserialize::<SuiteSpec>(doc).map(|(m, s)| (m, Spec::Suite(s))),
            Kind::Notifier => deserialize::<NotifierSpec>(doc).map(|(m, s)| (m, Spec::Notifier(s))),
        };
        match result {
            Ok((metadata, spec)) => typed.push(Typed { doc, metadata, spec }),
            Err(d) => diags.push(*d),
        }
    }

    // Layer 6: semantic, per document then across documents.
    for t in &typed {
        match &t.spec {
            Spec::Cluster(c) => check_cluster(t.doc, c, &mut diags),
            Spec::Node(n) => check_node(t.doc, n, &mut diags),
            Spec::Service(s) => check_service(t.doc, s, &mut diags),
            Spec::Routing(_) => {}
            Spec::Suite(s) => check_suite(t.doc, s, &mut diags),
            Spec::Notifier(n) => check_notifier(t.doc, n, &mut diags),
        }
    }
    check_across(&docs, &typed, &mut diags);

    if diags.iter().any(Diagnostic::is_error) {
        return Err(diags);
    }

    let mut state = DesiredState::default();
    let mut objects: BTreeMap<Kind, usize> = BTreeMap::new();
    for t in typed {
        *objects.entry(t.doc.kind).or_default() += 1;
        let name = t.metadata.name;
        match t.spec {
            Spec::Cluster(c) => state.cluster = *c,
            Spec::Node(n) => {
                state.node_labels.insert(name.clone(), t.metadata.labels);
                state.nodes.insert(name, *n);
            }
            Spec::Service(s) => {
                state.services.insert(name, s);
            }
            Spec::Routing(r) => {
                state.routing.categories.extend(r.categories);
                state.routing.remotes.extend(r.remotes);
            }
            Spec::Suite(s) => {
                state.suites.insert(name, s);
            }
            Spec::Notifier(n) => {
                state.notifiers.insert(name, n);
            }
        }
    }
    Ok(Compiled { state, objects, warnings: diags })
}

fn problem(file: &str, p: &yaml::Problem) -> Diagnostic {
    Diagnostic::error(file, redact_token_like(&p.message))
        .at(Some(p.mark))
        .maybe_hint(p.hint.clone())
}

fn kind_list() -> String {
    Kind::ALL.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", ")
}

/// Layer 2: the document must be a mapping with our `apiVersion` and a known `kind`.
fn header<'a>(
    file: &'a str,
    text: &'a str,
    d: &yaml::Doc,
    root: &'a Node,
    diags: &mut Vec<Diagnostic>,
) -> Option<Doc<'a>> {
    if !root.is_map() {
        diags.push(
            Diagnostic::error(
                file,
                format!("a document must be a mapping, found {}", root.describe()),
            )
            .at(Some(root.mark))
            .hint(format!(
                "start it with `apiVersion: {API_VERSION}`, `kind:`, `metadata:` and `spec:`"
            )),
        );
        return None;
    }
    let mut clean = d.problems.is_empty();
    match root.get("apiVersion") {
        None => {
            clean = false;
            diags.push(
                Diagnostic::error(file, "missing field `apiVersion`")
                    .at(Some(root.mark))
                    .path("apiVersion")
                    .hint(format!(
                        "add `apiVersion: {API_VERSION}` (is this a homeostat manifest?)"
                    )),
            );
        }
        Some(v) if v.as_str() == Some(API_VERSION) => {}
        Some(v) => {
            clean = false;
            let found = match v.as_str() {
                Some(s) if s.chars().count() <= 40 && !looks_like_secret(s) => {
                    format!("`{}`", printable(s))
                }
                _ => v.describe().to_owned(),
            };
            diags.push(
                Diagnostic::error(
                    file,
                    format!("unsupported apiVersion {found}: expected `{API_VERSION}`"),
                )
                .at(Some(v.mark))
                .path("apiVersion")
                .hint(format!("write `apiVersion: {API_VERSION}`")),
            );
        }
    }
    let kind = match root.get("kind") {
        None => {
            diags.push(
                Diagnostic::error(file, "missing field `kind`")
                    .at(Some(root.mark))
                    .path("kind")
                    .hint(format!("add `kind:` with one of {}", kind_list())),
            );
            return None;
        }
        Some(k) => match k.as_str() {
            Some(s) => match Kind::parse(s) {
                Some(kind) => kind,
                None => {
                    let hint = match did_you_mean(s, Kind::ALL.iter().map(|k| k.as_str())) {
                        Some(m) => format!("did you mean `{m}`?"),
                        None => format!("known kinds: {}", kind_list()),
                    };
                    let shown = if s.chars().count() <= 40 && !looks_like_secret(s) {
                        printable(s)
                    } else {
                        "(not shown)".into()
                    };
                    diags.push(
                        Diagnostic::error(file, format!("unknown kind `{shown}`"))
                            .at(Some(k.mark))
                            .path("kind")
                            .hint(hint),
                    );
                    return None;
                }
            },
            None => {
                diags.push(
                    Diagnostic::error(
                        file,
                        format!("`kind` must be a string, found {}", k.describe()),
                    )
                    .at(Some(k.mark))
                    .path("kind")
                    .hint(format!("one of {}", kind_list())),
                );
                return None;
            }
        },
    };
    let name = root.get("metadata").and_then(|m| m.get("name")).and_then(Node::as_str);
    Some(Doc {
        file,
        text,
        first_line: d.first_line,
        root,
        kind,
        name,
        clean,
        json: serde_json::Value::Null,
    })
}

/// Layer 5: the document straight into `Document<S>` (its kind picked `S`; no tagged enum, so
/// nothing is buffered and errors keep their position).
///
/// Fast path: the document already passed its JSON Schema, so its JSON value (built from the
/// same YAML events) almost always deserialises as is, several times faster than parsing the
/// text again. When it does not (a number too large for its field, ...), serde-saphyr reads the
/// document's own text and is the authority: its value is used, or its error is reported with
/// its line and column.
fn deserialize<S: DeserializeOwned>(doc: &Doc<'_>) -> Result<(Metadata, S), Box<Diagnostic>> {
    if let Ok(d) = Document::<S>::deserialize(&doc.json) {
        return Ok((d.metadata, d.spec));
    }
    match serde_saphyr::from_str::<Document<S>>(doc.text) {
        Ok(d) => Ok((d.metadata, d.spec)),
        Err(e) => {
            let mark = e.location().filter(|l| l.line() > 0).map(|l| Mark {
                line: usize::try_from(l.line()).unwrap_or(0) + doc.first_line - 1,
                column: usize::try_from(l.column()).unwrap_or(0).max(1),
            });
            let text = e.without_snippet().to_string();
            let text = match text.rfind(" at line ") {
                Some(i) => text[..i].to_owned(),
                None => text,
            };
            let message = match text.strip_prefix("invalid ") {
                Some("u8") => "expected an integer from 0 to 255".to_owned(),
                Some("u16") => "expected an integer from 0 to 65535".to_owned(),
                Some("u32") => "expected an integer from 0 to 4294967295".to_owned(),
                Some("u64") => "expected an integer from 0 to 18446744073709551615".to_owned(),
                _ => redact_token_like(&text),
            };
            let path = mark.and_then(|m| path_at(doc.root, m)).map(|p| render_path(&p));
            Err(Box::new(
                Diagnostic::error(doc.file, message)
                    .at(mark.or(Some(doc.root.mark)))
                    .path(path.unwrap_or_default()),
            ))
        }
    }
}

/// The path of the node (or key) written at `mark`, to name where a typed error is.
fn path_at(root: &Node, mark: Mark) -> Option<Vec<Seg>> {
    let mut stack: Vec<(Vec<Seg>, &Node)> = vec![(Vec::new(), root)];
    while let Some((path, node)) = stack.pop() {
        if node.mark == mark && !path.is_empty() {
            return Some(path);
        }
        match &node.value {
            yaml::Value::Map(entries) => {
                for e in entries {
                    let mut p = path.clone();
                    p.push(Seg::Key(e.key.clone()));
                    if e.key_mark == mark {
                        return Some(p);
                    }
                    stack.push((p, &e.value));
                }
            }
            yaml::Value::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    let mut p = path.clone();
                    p.push(Seg::Index(i));
                    stack.push((p, item));
                }
            }
            yaml::Value::Scalar(_) => {}
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Layer 6, per document.

fn positive(doc: &Doc<'_>, path: &[Seg], d: Dur, diags: &mut Vec<Diagnostic>) {
    if d.get().is_zero() {
        diags.push(doc.error(path, "must be longer than 0s"));
    }
}

fn check_argv(doc: &Doc<'_>, path: &[Seg], argv: &[String], diags: &mut Vec<Diagnostic>) {
    let hint = "commands run as argv without a shell: write a list such as \
                `command: [systemctl, restart, lmstudio]`";
    match argv.first() {
        None => diags.push(doc.error(path, "must not be empty").hint(hint)),
        Some(program) if program.trim().is_empty() => {
            let mut p = path.to_vec();
            p.push(Seg::Index(0));
            diags.push(doc.error(&p, "the program name is empty").hint(hint));
        }
        Some(program)
            if argv.len() == 1 && program.trim().contains(' ') && !program.starts_with('/') =>
        {
            let mut p = path.to_vec();
            p.push(Seg::Index(0));
            diags.push(
                doc.warning(&p, "looks like a shell command line in one string; it will run as a single program name")
                    .hint(hint),
            );
        }
        Some(_) => {}
    }
    for (i, arg) in argv.iter().enumerate() {
        let mut p = path.to_vec();
        p.push(Seg::Index(i));
        if arg.contains('\0') {
            diags.push(
                doc.error(&p, "contains a NUL character, which no program argument can hold"),
            );
        } else if arg.len() > MAX_ARG_BYTES {
            diags.push(doc.error(
                &p,
                format!("is {} bytes long; an argument is at most {MAX_ARG_BYTES}", arg.len()),
            ));
        }
    }
}

/// Longest command argument accepted: Linux refuses one of 128 KiB or more (`MAX_ARG_STRLEN`
/// counts the terminating NUL) when the command runs; better said at validation.
const MAX_ARG_BYTES: usize = 128 * 1024 - 1;

fn check_cluster(doc: &Doc<'_>, c: &ClusterSpec, diags: &mut Vec<Diagnostic>) {
    let t = &c.thermal;
    if t.reroute_above.0 >= t.hands_off_at.0 {
        diags.push(
            doc.error(
                p!["spec", "thermal", "rerouteAbove"],
                format!("rerouteAbove ({}) must be below handsOffAt ({})", t.reroute_above, t.hands_off_at),
            )
            .hint("a hot node is first rerouted, then left alone entirely at the hands-off temperature"),
        );
    }
    if t.resume_below.0 > t.reroute_above.0 {
        diags.push(doc.error(
            p!["spec", "thermal", "resumeBelow"],
            format!(
                "resumeBelow ({}) must not be above rerouteAbove ({})",
                t.resume_below, t.reroute_above
            ),
        ));
    }
    let s = &c.swap;
    if s.unload_above >= s.critical_above {
        diags.push(doc.error(
            p!["spec", "swap", "unloadAbove"],
            format!(
                "unloadAbove ({}) must be below criticalAbove ({})",
                s.unload_above.human(),
                s.critical_above.human()
            ),
        ));
    }
    let h = &c.heal;
    if h.backoff_initial > h.backoff_max {
        diags.push(doc.error(
            p!["spec", "heal", "backoffInitial"],
            format!(
                "backoffInitial ({}) must not exceed backoffMax ({})",
                h.backoff_initial, h.backoff_max
            ),
        ));
    }
    positive(doc, p!["spec", "reconcileInterval"], c.reconcile_interval, diags);
    positive(doc, p!["spec", "probe", "timeout"], c.probe.timeout, diags);
    positive(doc, p!["spec", "probe", "localTimeout"], c.probe.local_timeout, diags);
    positive(doc, p!["spec", "heal", "loadTimeout"], h.load_timeout, diags);
    positive(doc, p!["spec", "heal", "restartTimeout"], h.restart_timeout, diags);
    positive(doc, p!["spec", "heartbeat", "timeout"], c.heartbeat.timeout, diags);
    match c.api.listen.parse::<std::net::SocketAddr>() {
        Err(_) => diags.push(
            doc.error(p!["spec", "api", "listen"], "expected an address and port such as `127.0.0.1:9464`"),
        ),
        Ok(addr) if !addr.ip().is_loopback() && c.api.token_from.is_none() => diags.push(
            doc.warning(
                p!["spec", "api", "listen"],
                "the API listens beyond loopback without `tokenFrom`: mutating endpoints will be refused",
            )
            .hint("add `tokenFrom: { env: NAME }` to allow them"),
        ),
        Ok(_) => {}
    }
}

/// LM Studio load settings, meaningless for other backends.
const LMSTUDIO_ONLY: [&str; 4] =
    ["flashAttention", "evalBatchSize", "numExperts", "offloadKvCacheToGpu"];

fn check_node(doc: &Doc<'_>, n: &NodeSpec, diags: &mut Vec<Diagnostic>) {
    if n.vram.bytes() == 0 {
        diags.push(doc.error(p!["spec", "vram"], "must be larger than 0B"));
    }
    if n.models.is_empty() {
        diags.push(
            doc.warning(
                p!["spec", "models"],
                "no expected models: homeostat will only probe this node",
            )
            .hint("list the models it must serve, the primary first"),
        );
    }
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, m) in n.models.iter().enumerate() {
        if let Some(first) = seen.insert(m.name.as_str(), i) {
            diags.push(doc.error(
                p!["spec", "models", i, "name"],
                format!(
                    "model `{}` is listed twice (first at spec.models[{first}])",
                    printable(&m.name)
                ),
            ));
        }
        if m.name.trim().is_empty() {
            diags.push(doc.error(p!["spec", "models", i, "name"], "must not be empty"));
        }
        if m.size.bytes() == 0 {
            diags.push(doc.error(p!["spec", "models", i, "size"], "must be larger than 0B"));
        }
        if m.context_length == Some(0) {
            diags.push(doc.error(p!["spec", "models", i, "contextLength"], "must be at least 1"));
        }
        if n.backend != Backend::Lmstudio {
            let model = doc.root.at(p!["spec", "models", i]);
            for field in LMSTUDIO_ONLY {
                if model.and_then(|m| m.get(field)).is_some() {
                    diags.push(doc.warning(
                        p!["spec", "models", i, field],
                        format!("`{field}` is an LM Studio load setting; ignored by {}", n.backend),
                    ));
                }
            }
        }
    }
    if let Some(r) = &n.restart {
        check_argv(doc, p!["spec", "restart", "command"], &r.command, diags);
        if let Some(t) = r.timeout {
            positive(doc, p!["spec", "restart", "timeout"], t, diags);
        }
    }
    if let Some(t) = &n.telemetry {
        if let Some(cmd) = &t.command {
            check_argv(doc, p!["spec", "telemetry", "command"], cmd, diags);
        }
        if t.prometheus.is_empty() && t.command.is_none() {
            diags.push(doc.warning(
                p!["spec", "telemetry"],
                "no telemetry source: give `prometheus: [URL]` and/or `command: [...]`",
            ));
        }
    }
    if let Some(t) = n.probe_timeout {
        positive(doc, p!["spec", "probeTimeout"], t, diags);
    }
    if let Some(t) = n.heartbeat.as_ref().and_then(|h| h.timeout) {
        positive(doc, p!["spec", "heartbeat", "timeout"], t, diags);
    }
    if let Some(b) = &n.benchmark {
        positive(doc, p!["spec", "benchmark", "every"], b.every, diags);
    }
    check_candidates(doc, n, diags);
}

/// Arena candidates: named once, not the primary itself, with a size and a usable context.
fn check_candidates(doc: &Doc<'_>, n: &NodeSpec, diags: &mut Vec<Diagnostic>) {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, c) in n.candidates.iter().enumerate() {
        if let Some(first) = seen.insert(c.name.as_str(), i) {
            diags.push(doc.error(
                p!["spec", "candidates", i, "name"],
                format!(
                    "candidate `{}` is listed twice (first at spec.candidates[{first}])",
                    printable(&c.name)
                ),
            ));
        }
        if c.name.trim().is_empty() {
            diags.push(doc.error(p!["spec", "candidates", i, "name"], "must not be empty"));
        }
        if n.primary()
            .is_some_and(|p| p.name == c.name && LoadSettingsView::of(p) == LoadSettingsView::of(c))
        {
            diags.push(
                doc.warning(
                    p!["spec", "candidates", i],
                    "this candidate is the primary model with the same settings; the arena skips it",
                )
                .hint("give the candidate other settings, or remove it"),
            );
        }
        if c.size.bytes() == 0 {
            diags.push(doc.error(p!["spec", "candidates", i, "size"], "must be larger than 0B"));
        }
        if c.context_length == Some(0) {
            diags.push(
                doc.error(p!["spec", "candidates", i, "contextLength"], "must be at least 1"),
            );
        }
        if c.residency.is_some() {
            diags.push(doc.warning(
                p!["spec", "candidates", i, "residency"],
                "a candidate is loaded only by the arena, pinned while it runs; `residency` is ignored",
            ));
        }
    }
}

/// The load settings of a model entry, to compare two entries.
#[derive(PartialEq)]
struct LoadSettingsView(Option<u32>, Option<bool>, Option<u32>, Option<u32>, Option<bool>);

impl LoadSettingsView {
    fn of(m: &ModelSpec) -> Self {
        LoadSettingsView(
            m.context_length,
            m.flash_attention,
            m.eval_batch_size,
            m.num_experts,
            m.offload_kv_cache_to_gpu,
        )
    }
}

fn check_service(doc: &Doc<'_>, s: &ServiceSpec, diags: &mut Vec<Diagnostic>) {
    if let Some(t) = s.probe.timeout {
        positive(doc, p!["spec", "probe", "timeout"], t, diags);
    }
    if let Some(r) = &s.restart {
        check_argv(doc, p!["spec", "restart", "command"], &r.command, diags);
        if let Some(t) = r.timeout {
            positive(doc, p!["spec", "restart", "timeout"], t, diags);
        }
    }
}

fn check_suite(doc: &Doc<'_>, s: &SuiteSpec, diags: &mut Vec<Diagnostic>) {
    positive(doc, p!["spec", "timeout"], s.timeout, diags);
    let mut names: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, t) in s.tasks.iter().enumerate() {
        if let Some(name) = &t.name
            && let Some(first) = names.insert(name.as_str(), i)
        {
            diags.push(doc.error(
                p!["spec", "tasks", i, "name"],
                format!(
                    "task name `{}` is used twice (first at spec.tasks[{first}])",
                    printable(name)
                ),
            ));
        }
        if t.prompt.trim().is_empty() {
            diags.push(doc.error(p!["spec", "tasks", i, "prompt"], "must not be empty"));
        }
        match &t.check {
            Check::Regex(re) => {
                if let Err(e) = regex::Regex::new(re) {
                    let text = e.to_string();
                    let last = text.lines().last().unwrap_or_default().trim();
                    let first_line = last.strip_prefix("error: ").unwrap_or(last).to_owned();
                    diags.push(
                        doc.error(
                            p!["spec", "tasks", i, "check", "regex"],
                            format!("invalid regular expression: {first_line}"),
                        )
                        .hint(
                            "the syntax is Rust's `regex` crate (no look-around or backreferences)",
                        ),
                    );
                }
            }
            Check::Contains(s) | Check::Exact(s) if s.is_empty() => {
                let key = if matches!(t.check, Check::Contains(_)) { "contains" } else { "exact" };
                diags.push(doc.error(p!["spec", "tasks", i, "check", key], "must not be empty"));
            }
            Check::Number(n) if !n.value.is_finite() || !n.tolerance.is_finite() => {
                diags.push(
                    doc.error(p!["spec", "tasks", i, "check", "number"], "must be finite numbers"),
                );
            }
            _ => {}
        }
    }
}

fn check_notifier(doc: &Doc<'_>, n: &NotifierSpec, diags: &mut Vec<Diagnostic>) {
    match (n.notifier_type, &n.chat_id) {
        (NotifierType::Telegram, None) => diags.push(
            doc.error_at_key(p!["spec", "type"], "a telegram notifier needs `chatId`")
                .hint("add `chatId: \"-1001234567890\"` (the chat the bot posts to)"),
        ),
        (NotifierType::Telegram, Some(id)) if id.trim().is_empty() => {
            diags.push(doc.error(p!["spec", "chatId"], "must not be empty"));
        }
        (t, Some(_)) if t != NotifierType::Telegram => {
            diags.push(doc.warning(
                p!["spec", "chatId"],
                "`chatId` is only used by telegram notifiers; ignored",
            ))
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Layer 6, across documents.

fn check_across(docs: &[Doc<'_>], typed: &[Typed<'_, '_>], diags: &mut Vec<Diagnostic>) {
    // Unique kind + name, naming both places; at most one Cluster.
    let mut seen: BTreeMap<(Kind, &str), &Doc<'_>> = BTreeMap::new();
    let mut first_cluster: Option<&Doc<'_>> = None;
    for doc in docs {
        if doc.kind == Kind::Cluster {
            match first_cluster {
                None => first_cluster = Some(doc),
                Some(first) => {
                    let m = first.root.mark;
                    diags.push(
                        Diagnostic::error(
                            doc.file,
                            format!(
                                "a second Cluster document (the first is at {}:{}:{})",
                                first.file, m.line, m.column
                            ),
                        )
                        .at(Some(doc.root.mark))
                        .hint("cluster-wide policy lives in one Cluster document; merge them"),
                    );
                    continue;
                }
            }
        }
        let Some(name) = doc.name else { continue };
        match seen.get(&(doc.kind, name)) {
            Some(first) => {
                let m = first.name_mark();
                diags.push(
                    doc.error(
                        p!["metadata", "name"],
                        format!(
                            "duplicate {} `{}`: also defined at {}:{}:{}",
                            doc.kind,
                            doc.display_name(),
                            first.file,
                            m.line,
                            m.column
                        ),
                    )
                    .hint(format!(
                        "names are unique per kind; rename or remove one of the two {}s",
                        doc.kind
                    )),
                );
            }
            None => {
                seen.insert((doc.kind, name), doc);
            }
        }
    }

    check_references(docs, diags);

    // The cluster's headroom for the VRAM check: the declared one, the default when no Cluster
    // is declared, none (skip) when the Cluster document itself is broken.
    let headroom = match first_cluster {
        None => Some(defaults::VRAM_HEADROOM),
        Some(_) => typed.iter().find_map(|t| match &t.spec {
            Spec::Cluster(c) => Some(c.vram.headroom),
            _ => None,
        }),
    };
    for t in typed {
        match &t.spec {
            Spec::Node(n) => {
                if let Some(h) = headroom {
                    check_fit(t.doc, n, h, diags);
                }
            }
            Spec::Routing(r) => {
                for (cat, targets) in &r.categories {
                    for (i, target) in targets.iter().enumerate() {
                        if !(target.weight.is_finite() && target.weight > 0.0) {
                            diags.push(t.doc.error(
                                p!["spec", "categories", cat.as_str(), i, "weight"],
                                "weight must be greater than 0",
                            ));
                        }
                    }
                }
                for (i, remote) in r.remotes.iter().enumerate() {
                    if !(remote.weight.is_finite() && remote.weight > 0.0) {
                        diags.push(t.doc.error(
                            p!["spec", "remotes", i, "weight"],
                            "weight must be greater than 0",
                        ));
                    }
                }
            }
            _ => {}
        }
    }
}

/// References between documents, read from the YAML trees of every document (even ones with
/// other errors), so one validation run reports them all: routes name nodes, remotes name
/// categories, suites exist; categories and remotes are declared once.
fn check_references(docs: &[Doc<'_>], diags: &mut Vec<Diagnostic>) {
    let names = |kind: Kind| -> BTreeSet<&str> {
        docs.iter().filter(|d| d.kind == kind).filter_map(|d| d.name).collect()
    };
    let nodes = names(Kind::Node);
    let mut suites = names(Kind::BenchmarkSuite);
    suites.insert(defaults::BUILTIN_SUITE);

    let suite_ref = |doc: &Doc<'_>, path: &[Seg], diags: &mut Vec<Diagnostic>| {
        let Some(name) = doc.root.at(path).and_then(Node::as_str) else { return };
        if !suites.contains(name) {
            let hint = match did_you_mean(name, suites.iter().copied()) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!(
                    "declare it with `kind: BenchmarkSuite`, or leave it out to use the built-in `{}`",
                    defaults::BUILTIN_SUITE
                ),
            };
            diags.push(
                doc.error(path, format!("unknown BenchmarkSuite `{}`", printable(name))).hint(hint),
            );
        }
    };

    let mut categories: BTreeMap<&str, &Doc<'_>> = BTreeMap::new();
    let mut remotes: BTreeMap<&str, &Doc<'_>> = BTreeMap::new();
    for doc in docs {
        match doc.kind {
            Kind::Cluster => suite_ref(doc, p!["spec", "verification", "suite"], diags),
            Kind::Node => suite_ref(doc, p!["spec", "benchmark", "suite"], diags),
            Kind::Routing => {
                let cats = doc.root.at(p!["spec", "categories"]).map_or(&[][..], Node::entries);
                for entry in cats {
                    let cat = entry.key.as_str();
                    let cat_path = p!["spec", "categories", cat];
                    if let Some(first) = categories.insert(cat, doc) {
                        let m = first.root.key_mark(cat_path);
                        diags.push(doc.error_at_key(
                            cat_path,
                            format!(
                                "category `{}` is already routed at {}:{}:{}",
                                printable(cat),
                                first.file,
                                m.line,
                                m.column
                            ),
                        ));
                    }
                    let mut in_category: BTreeSet<&str> = BTreeSet::new();
                    for (i, target) in entry.value.items().iter().enumerate() {
                        let Some(node) = target.get("node").and_then(Node::as_str) else {
                            continue;
                        };
                        let path = p!["spec", "categories", cat, i, "node"];
                        if !nodes.contains(node) {
                            let hint = match did_you_mean(node, nodes.iter().copied()) {
                                Some(s) => format!("did you mean `{s}`?"),
                                None => "declare it with `kind: Node`".to_owned(),
                            };
                            diags.push(
                                doc.error(
                                    path,
                                    format!("routes to unknown Node `{}`", printable(node)),
                                )
                                .hint(hint),
                            );
                        }
                        if !in_category.insert(node) {
                            diags.push(doc.error(
                                path,
                                format!(
                                    "Node `{}` is listed twice in category `{}`",
                                    printable(node),
                                    printable(cat)
                                ),
                            ));
                        }
                    }
                }
                let list = doc.root.at(p!["spec", "remotes"]).map_or(&[][..], Node::items);
                for (i, remote) in list.iter().enumerate() {
                    let Some(name) = remote.get("name").and_then(Node::as_str) else { continue };
                    if let Some(first) = remotes.insert(name, doc) {
                        let m = first.root.mark;
                        diags.push(doc.error(
                            p!["spec", "remotes", i, "name"],
                            format!(
                                "remote `{}` is declared twice (also in the Routing at {}:{})",
                                printable(name),
                                first.file,
                                m.line
                            ),
                        ));
                    }
                }
            }
            _ => {}
        }
    }

    // Remotes serve declared categories; every category has somewhere to go.
    let mut served_remotely_all = false;
    let mut served_remotely: BTreeSet<&str> = BTreeSet::new();
    for doc in docs.iter().filter(|d| d.kind == Kind::Routing) {
        let list = doc.root.at(p!["spec", "remotes"]).map_or(&[][..], Node::items);
        for (i, remote) in list.iter().enumerate() {
            match remote.get("categories") {
                None => served_remotely_all = true,
                Some(cats) => {
                    for (j, c) in cats.items().iter().enumerate() {
                        let Some(cat) = c.as_str() else { continue };
                        served_remotely.insert(cat);
                        if !categories.contains_key(cat) {
                            let hint = match did_you_mean(cat, categories.keys().copied()) {
                                Some(s) => format!("did you mean `{s}`?"),
                                None => "a remote serves categories listed under `categories`"
                                    .to_owned(),
                            };
                            diags.push(
                                doc.error(
                                    p!["spec", "remotes", i, "categories", j],
                                    format!("unknown category `{}`", printable(cat)),
                                )
                                .hint(hint),
                            );
                        }
                    }
                }
            }
        }
    }
    for (cat, doc) in &categories {
        let path = p!["spec", "categories", *cat];
        let empty = doc.root.at(path).is_some_and(|n| n.items().is_empty());
        if empty && !served_remotely_all && !served_remotely.contains(cat) {
            diags.push(doc.warning(
                path,
                format!("category `{}` has no nodes and no remote serves it", printable(cat)),
            ));
        }
    }
}

/// Every model must fit the node's VRAM with the headroom, and the resident ones together.
fn check_fit(doc: &Doc<'_>, n: &NodeSpec, headroom: ByteSize, diags: &mut Vec<Diagnostic>) {
    let vram = n.vram.bytes();
    let h = headroom.bytes();
    for (i, c) in n.candidates.iter().enumerate() {
        let need = c.size.bytes().saturating_add(h);
        if need > vram {
            diags.push(doc.error(
                p!["spec", "candidates", i, "size"],
                format!(
                    "candidate `{}` needs {} + {} headroom = {}, more than the node's VRAM ({})",
                    printable(&c.name),
                    c.size.human(),
                    headroom.human(),
                    ByteSize(need).human(),
                    n.vram.human()
                ),
            ));
        }
    }
    let mut resident: u64 = 0;
    let mut resident_count = 0usize;
    for (i, m) in n.models.iter().enumerate() {
        let need = m.size.bytes().saturating_add(h);
        if need > vram {
            diags.push(
                doc.error(
                    p!["spec", "models", i, "size"],
                    format!(
                        "model `{}` needs {} + {} headroom = {}, more than the node's VRAM ({})",
                        printable(&m.name),
                        m.size.human(),
                        headroom.human(),
                        ByteSize(need).human(),
                        n.vram.human()
                    ),
                )
                .hint("pick a smaller quantisation or context, or a node with more VRAM"),
            );
        } else if n.is_resident(i) {
            resident = resident.saturating_add(m.size.bytes());
            resident_count += 1;
        }
    }
    if resident_count > 1 && resident.saturating_add(h) > vram {
        diags.push(
            doc.error(
                p!["spec", "models"],
                format!(
                    "the resident models need {} + {} headroom together, more than the node's VRAM ({})",
                    ByteSize(resident).human(),
                    headroom.human(),
                    n.vram.human()
                ),
            )
            .hint("mark some of them `residency: onDemand`"),
        );
        return;
    }
    for (i, m) in n.models.iter().enumerate() {
        let need = resident.saturating_add(m.size.bytes()).saturating_add(h);
        if !n.is_resident(i) && m.size.bytes().saturating_add(h) <= vram && need > vram {
            diags.push(doc.warning(
                p!["spec", "models", i, "size"],
                format!(
                    "on-demand model `{}` does not fit beside the resident models ({} + {} + {} headroom > {})",
                    printable(&m.name),
                    ByteSize(resident).human(),
                    m.size.human(),
                    headroom.human(),
                    n.vram.human()
                ),
            ));
        }
    }
}
