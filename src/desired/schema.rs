//! The JSON Schemas of the manifest kinds, generated from the Rust types (`types.rs`), and the
//! JSON Schema layer of validation: each document is checked against its own kind's schema and
//! every error is turned into a [`Diagnostic`] with a position and a message that says what was
//! expected.
//!
//! The schemas written by `homeostat schema` and committed in `schemas/` are exactly the ones
//! `validate` uses, so an editor (yaml-language-server) and homeostat agree. Pure: no I/O except
//! [`write_all`].
//!
//! Messages are written here rather than taken from the jsonschema crate, whose texts quote the
//! offending value: a value is quoted only when it cannot be a secret (durations, sizes, enum
//! names, numbers).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::paths::LocationSegment;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use super::diagnostic::{Diagnostic, Seg, did_you_mean, looks_like_secret, render_path};
use super::types::{
    API_VERSION, ClusterSpec, Document, Kind, NAME_PATTERN, NodeSpec, NotifierSpec, RoutingSpec,
    ServiceSpec, SuiteSpec,
};
use super::units::{DURATION_EXPECTED, DURATION_PATTERN, SIZE_EXPECTED, SIZE_PATTERN};
use super::yaml::{Node, printable};

/// The file each kind's schema is written to.
pub fn file_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Cluster => "cluster.schema.json",
        Kind::Node => "node.schema.json",
        Kind::Service => "service.schema.json",
        Kind::Routing => "routing.schema.json",
        Kind::BenchmarkSuite => "benchmark-suite.schema.json",
        Kind::Notifier => "notifier.schema.json",
    }
}

/// The schema accepting any document (dispatching on `kind`).
pub const DOCUMENT_FILE: &str = "document.schema.json";

/// The schema of one kind's documents: `Document<Spec>` with `apiVersion` and `kind` pinned.
pub fn kind_schema(kind: Kind) -> Value {
    let generator = SchemaSettings::draft2020_12().into_generator();
    let schema = match kind {
        Kind::Cluster => generator.into_root_schema_for::<Document<ClusterSpec>>(),
        Kind::Node => generator.into_root_schema_for::<Document<NodeSpec>>(),
        Kind::Service => generator.into_root_schema_for::<Document<ServiceSpec>>(),
        Kind::Routing => generator.into_root_schema_for::<Document<RoutingSpec>>(),
        Kind::BenchmarkSuite => generator.into_root_schema_for::<Document<SuiteSpec>>(),
        Kind::Notifier => generator.into_root_schema_for::<Document<NotifierSpec>>(),
    };
    let mut v = Value::from(schema);
    let spec_description = v
        .pointer("/properties/spec/$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix('#'))
        .and_then(|p| v.pointer(&format!("{p}/description")))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if let Some(obj) = v.as_object_mut() {
        obj.insert("title".into(), json!(format!("homeostat {kind}")));
        obj.insert(
            "description".into(),
            json!(format!("A `{kind}` manifest document (homeostat). {spec_description}")),
        );
    }
    if let Some(props) = v.get_mut("properties").and_then(Value::as_object_mut) {
        props.insert(
            "apiVersion".into(),
            json!({ "description": "Always `homeostat.dev/v1`.", "type": "string", "const": API_VERSION }),
        );
        props.insert(
            "kind".into(),
            json!({ "description": "The document's kind.", "type": "string", "const": kind.as_str() }),
        );
    }
    v
}

/// One schema for any document: `kind` picks the kind's schema (if/then, which editors report
/// better than `oneOf`).
pub fn document_schema() -> Value {
    let mut defs = Map::new();
    let mut all_of = Vec::new();
    for kind in Kind::ALL {
        let mut k = kind_schema(kind);
        if let Some(obj) = k.as_object_mut() {
            if let Some(Value::Object(d)) = obj.remove("$defs") {
                defs.extend(d);
            }
            obj.remove("$schema");
        }
        let name = format!("{kind}Document");
        all_of.push(json!({
            "if": { "properties": { "kind": { "const": kind.as_str() } }, "required": ["kind"] },
            "then": { "$ref": format!("#/$defs/{name}") },
        }));
        defs.insert(name, k);
    }
    let kinds: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "homeostat manifest",
        "description": "Any homeostat manifest document; `kind` selects its schema.",
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": { "description": "Always `homeostat.dev/v1`.", "type": "string", "const": API_VERSION },
            "kind": { "description": "The document's kind.", "type": "string", "enum": kinds },
        },
        "allOf": all_of,
        "$defs": defs,
    })
}

/// Every schema file: `(file name, content)`, in a fixed order.
/// Each file carries an `$id` (`https://homeostat.dev/schemas/FILE`), so editors and validators
/// can cache and tell the schemas apart; `$ref`s inside are local (`#/$defs/...`).
pub fn all() -> Vec<(&'static str, String)> {
    let with_id = |name: &str, mut v: Value| {
        if let Some(o) = v.as_object_mut() {
            o.insert("$id".into(), Value::String(format!("{SCHEMA_BASE}{name}")));
        }
        v
    };
    let mut out: Vec<(&'static str, String)> = Kind::ALL
        .iter()
        .map(|&k| (file_name(k), render(&with_id(file_name(k), kind_schema(k)))))
        .collect();
    out.push((DOCUMENT_FILE, render(&with_id(DOCUMENT_FILE, document_schema()))));
    out
}

/// The base of the schemas' `$id`s.
pub const SCHEMA_BASE: &str = "https://homeostat.dev/schemas/";

/// Writes every schema into `dir` (created if missing); returns the files written.
pub fn write_all(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    for (name, text) in all() {
        let path = dir.join(name);
        std::fs::write(&path, text)?;
        written.push(path);
    }
    Ok(written)
}

/// Pretty JSON with keys sorted at every level and a final newline: byte-identical whatever
/// serde_json features the build unifies (`preserve_order` would otherwise change key order).
pub fn render(v: &Value) -> String {
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                let mut out = Map::new();
                for k in keys {
                    out.insert(k.clone(), sorted(&m[k]));
                }
                Value::Object(out)
            }
            Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    let mut s = serde_json::to_string_pretty(&sorted(v)).expect("a JSON value always serialises");
    s.push('\n');
    s
}

/// A kind's schema, compiled once per process.
pub(crate) struct Compiled {
    pub schema: Value,
    pub validator: jsonschema::Validator,
}

pub(crate) fn compiled(kind: Kind) -> &'static Compiled {
    static ALL: OnceLock<Vec<Compiled>> = OnceLock::new();
    let all = ALL.get_or_init(|| {
        Kind::ALL
            .iter()
            .map(|&k| {
                let schema = kind_schema(k);
                let validator = jsonschema::validator_for(&schema)
                    .expect("the generated schemas are valid JSON Schema (tested)");
                Compiled { schema, validator }
            })
            .collect()
    });
    let i = Kind::ALL.iter().position(|&k| k == kind).expect("every kind is in Kind::ALL");
    &all[i]
}

/// Checks one document (`json`, converted from `root`) against its kind's schema. Errors under a
/// path in `handled` were already reported by an earlier layer and are skipped, and so are
/// missing fields of the objects in `quiet_required`.
pub(crate) fn check(
    kind: Kind,
    root: &Node,
    json: &Value,
    file: &str,
    handled: &[Vec<Seg>],
    quiet_required: &[Vec<Seg>],
) -> Vec<Diagnostic> {
    let c = compiled(kind);
    let cx = Cx { schema: &c.schema, root, file, handled, quiet_required };
    let mut out = Vec::new();
    for e in c.validator.iter_errors(json) {
        cx.explain(&e, &mut out, 0);
    }
    out
}

struct Cx<'a> {
    schema: &'a Value,
    root: &'a Node,
    file: &'a str,
    handled: &'a [Vec<Seg>],
    /// Objects whose missing fields are not reported (an earlier layer explained why).
    quiet_required: &'a [Vec<Seg>],
}

fn segs(loc: &jsonschema::paths::Location) -> Vec<Seg> {
    loc.iter()
        .map(|s| match s {
            LocationSegment::Property(p) => Seg::Key(p.into_owned()),
            LocationSegment::Index(i) => Seg::Index(i),
        })
        .collect()
}

/// Follows local `$ref`s (`#/$defs/X`) from a subschema to its definition.
fn resolve<'s>(root: &'s Value, mut v: &'s Value) -> &'s Value {
    for _ in 0..16 {
        match v.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix('#')) {
            Some(p) => match root.pointer(p) {
                Some(t) => v = t,
                None => return v,
            },
            None => return v,
        }
    }
    v
}

/// The JSON pointer without its last segment.
fn parent(pointer: &str) -> &str {
    pointer.rsplit_once('/').map_or("", |(p, _)| p)
}

/// How to name JSON types in messages.
fn type_name(t: &str) -> &'static str {
    match t {
        "object" => "a mapping",
        "array" => "a list",
        "string" => "a string",
        "integer" => "an integer",
        "number" => "a number",
        "boolean" => "a boolean (true or false)",
        "null" => "null",
        _ => "a value",
    }
}

/// A value as it may be quoted in a message: numbers and booleans as they are, strings only when
/// short and not credential-shaped.
fn quote(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if s.chars().count() <= 40 && !looks_like_secret(s) => {
            Some(format!("{:?}", printable(s)))
        }
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `a`, `b` or `c` from a list of names.
fn one_of(names: &[String]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    match quoted.len() {
        0 => String::new(),
        1 => quoted[0].clone(),
        n => format!("{} or {}", quoted[..n - 1].join(", "), quoted[n - 1]),
    }
}

fn last_key(path: &[Seg]) -> Option<&str> {
    path.iter().rev().find_map(|s| match s {
        Seg::Key(k) => Some(k.as_str()),
        Seg::Index(_) => None,
    })
}

/// Unknown fields of one mapping that get a "did you mean" hint; the rest are only counted.
const HINTED_MAX: usize = 200;

/// Definitions of the unit types, whose descriptions say what a value looks like.
const UNIT_DEFS: [&str; 4] =
    ["/$defs/Duration", "/$defs/Size", "/$defs/Celsius", "/$defs/Fraction"];

const ARGV_HINT: &str = "commands run as argv without a shell: write a list such as \
                         `command: [systemctl, restart, lmstudio]`";

impl Cx<'_> {
    fn is_handled(&self, path: &[Seg]) -> bool {
        self.handled.iter().any(|h| path.starts_with(h))
    }

    fn at_value(&self, path: &[Seg], message: String) -> Diagnostic {
        Diagnostic::error(self.file, message)
            .at(Some(self.root.value_mark(path)))
            .path(render_path(path))
    }

    fn at_key(&self, path: &[Seg], message: String) -> Diagnostic {
        Diagnostic::error(self.file, message)
            .at(Some(self.root.key_mark(path)))
            .path(render_path(path))
    }

    fn explain(
        &self,
        e: &jsonschema::ValidationError<'_>,
        out: &mut Vec<Diagnostic>,
        depth: usize,
    ) {
        let path = segs(e.instance_path());
        if self.is_handled(&path) || depth > 8 {
            return;
        }
        let schema_path = e.schema_path().as_str();
        let instance = e.instance();
        match e.kind() {
            ValidationErrorKind::AdditionalProperties { unexpected } => {
                let allowed: Vec<String> = self
                    .schema
                    .pointer(parent(schema_path))
                    .and_then(|s| s.get("properties"))
                    .and_then(Value::as_object)
                    .map(|p| p.keys().cloned().collect())
                    .unwrap_or_default();
                // Each key's position, looked up once: a per-key search of the mapping made
                // 100,000 unknown fields quadratic.
                let marks: std::collections::HashMap<&str, super::diagnostic::Mark> = self
                    .root
                    .at(&path)
                    .map(|n| n.entries().iter().map(|e| (e.key.as_str(), e.key_mark)).collect())
                    .unwrap_or_default();
                for (n, key) in unexpected.iter().enumerate() {
                    let mut p = path.clone();
                    p.push(Seg::Key(key.clone()));
                    if self.is_handled(&p) {
                        continue;
                    }
                    let shown = if looks_like_secret(key) {
                        "(name not shown)".into()
                    } else {
                        printable(key)
                    };
                    // Past the first few hundred (a report keeps 100 problems), no suggestion
                    // is computed: 100,000 unknown fields stay cheap.
                    let hint = if n >= HINTED_MAX {
                        None
                    } else if key == "<<" {
                        Some(
                            "YAML merge keys (`<<`) are not supported; write the fields out".into(),
                        )
                    } else if let Some(s) = did_you_mean(key, allowed.iter().map(String::as_str)) {
                        Some(format!("did you mean `{s}`?"))
                    } else if allowed.is_empty() {
                        None
                    } else {
                        Some(format!("expected one of {}", one_of(&allowed)))
                    };
                    let mark = marks.get(key.as_str()).copied();
                    let d = match mark {
                        Some(m) => Diagnostic::error(self.file, format!("unknown field `{shown}`"))
                            .at(Some(m))
                            .path(render_path(&p)),
                        None => self.at_key(&p, format!("unknown field `{shown}`")),
                    };
                    out.push(d.maybe_hint(hint));
                }
            }
            ValidationErrorKind::Required { .. } if self.quiet_required.contains(&path) => {}
            ValidationErrorKind::Required { property } => {
                let name = property.as_str().unwrap_or_default().to_owned();
                let description = self
                    .schema
                    .pointer(parent(schema_path))
                    .and_then(|s| s.get("properties"))
                    .and_then(|p| p.get(&name))
                    .and_then(|p| {
                        p.get("description").or_else(|| resolve(self.schema, p).get("description"))
                    })
                    .and_then(Value::as_str)
                    .map(|d| d.split('\n').next().unwrap_or(d).trim_end_matches('.').to_owned());
                let hint = match (name.as_str(), description) {
                    ("apiVersion", _) => Some(format!("add `apiVersion: {API_VERSION}`")),
                    (_, Some(d)) => Some(format!("add `{name}:` ({d})")),
                    (_, None) => Some(format!("add `{name}:`")),
                };
                let mut p = path.clone();
                p.push(Seg::Key(name.clone()));
                let d = Diagnostic::error(self.file, format!("missing field `{name}`"))
                    .at(Some(self.root.key_mark(&path)))
                    .path(render_path(&p));
                out.push(d.maybe_hint(hint));
            }
            ValidationErrorKind::Type { kind } => {
                let expected: Vec<&'static str> = match kind {
                    TypeKind::Single(t) => vec![type_name(t.as_str())],
                    TypeKind::Multiple(set) => set.iter().map(|t| type_name(t.as_str())).collect(),
                };
                let found = self.root.at(&path).map_or("nothing", Node::describe);
                // The unit types say what they look like ("a size such as 46GiB or 512MB").
                let unit = parent(schema_path);
                let expected = match self.schema.pointer(unit).and_then(|u| u.get("description")) {
                    Some(Value::String(d)) if UNIT_DEFS.contains(&unit) => d.clone(),
                    _ => expected.join(" or "),
                };
                let hint = if expected == "a list" && last_key(&path) == Some("command") {
                    Some(ARGV_HINT.to_owned())
                } else if expected == "a string"
                    && matches!(instance.as_ref(), Value::Number(_) | Value::Bool(_))
                {
                    Some("quote the value to make it a string".to_owned())
                } else {
                    None
                };
                out.push(
                    self.at_value(&path, format!("expected {expected}, found {found}"))
                        .maybe_hint(hint),
                );
            }
            ValidationErrorKind::Pattern { pattern } => {
                let shown = quote(instance.as_ref()).unwrap_or_else(|| "value".into());
                let (message, hint) = if pattern == DURATION_PATTERN {
                    (format!("invalid duration {shown}: expected {DURATION_EXPECTED}"), None)
                } else if pattern == SIZE_PATTERN {
                    (format!("invalid size {shown}: expected {SIZE_EXPECTED}"), None)
                } else if pattern == NAME_PATTERN {
                    (
                        format!("invalid name {shown}"),
                        Some("names use lower-case letters, digits, `-`, `_` and `.`, and start and end with a letter or digit".to_owned()),
                    )
                } else {
                    (format!("{shown} does not match the pattern `{pattern}`"), None)
                };
                out.push(self.at_value(&path, message).maybe_hint(hint));
            }
            ValidationErrorKind::Constant { expected_value } => {
                let expected = expected_value
                    .as_str()
                    .map_or_else(|| expected_value.to_string(), str::to_owned);
                out.push(self.at_value(&path, format!("must be `{expected}`")));
            }
            ValidationErrorKind::Enum { options } => {
                let names: Vec<String> = options
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|o| o.as_str().map_or_else(|| o.to_string(), str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(self.enum_error(&path, instance.as_ref(), &names));
            }
            ValidationErrorKind::Minimum { limit } => {
                let found = quote(instance.as_ref()).unwrap_or_default();
                out.push(self.at_value(&path, format!("must be at least {limit}, found {found}")));
            }
            ValidationErrorKind::Maximum { limit } => {
                let found = quote(instance.as_ref()).unwrap_or_default();
                out.push(self.at_value(&path, format!("must be at most {limit}, found {found}")));
            }
            ValidationErrorKind::ExclusiveMinimum { limit } => {
                let found = quote(instance.as_ref()).unwrap_or_default();
                out.push(
                    self.at_value(&path, format!("must be greater than {limit}, found {found}")),
                );
            }
            ValidationErrorKind::ExclusiveMaximum { limit } => {
                let found = quote(instance.as_ref()).unwrap_or_default();
                out.push(self.at_value(&path, format!("must be less than {limit}, found {found}")));
            }
            ValidationErrorKind::MinItems { limit } => {
                let (message, hint) = match (*limit, last_key(&path)) {
                    (1, Some("command")) => {
                        ("must not be empty".to_owned(), Some(ARGV_HINT.to_owned()))
                    }
                    (1, _) => ("must not be empty".to_owned(), None),
                    (n, _) => (format!("must have at least {n} items"), None),
                };
                out.push(self.at_value(&path, message).maybe_hint(hint));
            }
            ValidationErrorKind::MaxItems { limit } => {
                out.push(self.at_value(&path, format!("must have at most {limit} items")));
            }
            ValidationErrorKind::MinLength { limit } => {
                let message = if *limit == 1 {
                    "must not be empty".to_owned()
                } else {
                    format!("must be at least {limit} characters long")
                };
                out.push(self.at_value(&path, message));
            }
            ValidationErrorKind::MaxLength { limit } => {
                out.push(self.at_value(&path, format!("must be at most {limit} characters long")));
            }
            ValidationErrorKind::OneOfNotValid { context }
            | ValidationErrorKind::AnyOf { context } => {
                self.explain_alternatives(e, &path, context, out, depth);
            }
            other => {
                out.push(self.at_value(
                    &path,
                    format!("invalid value (JSON Schema keyword `{}`)", other.keyword()),
                ));
            }
        }
    }

    fn enum_error(&self, path: &[Seg], instance: &Value, names: &[String]) -> Diagnostic {
        let hint = instance
            .as_str()
            .and_then(|s| did_you_mean(s, names.iter().map(String::as_str)))
            .map(|s| format!("did you mean `{s}`?"));
        let message = match quote(instance) {
            Some(q) => format!("invalid value {q}: expected {}", one_of(names)),
            None => format!("invalid value: expected {}", one_of(names)),
        };
        self.at_value(path, message).maybe_hint(hint)
    }

    /// `oneOf`/`anyOf` failed: find the alternative the author meant and explain its errors
    /// (an `Option<T>` is `T` or null; an enum is one of several constants or of several
    /// single-key mappings such as `{ env: NAME }` | `{ file: PATH }`).
    fn explain_alternatives(
        &self,
        e: &jsonschema::ValidationError<'_>,
        path: &[Seg],
        context: &[Vec<jsonschema::ValidationError<'static>>],
        out: &mut Vec<Diagnostic>,
        depth: usize,
    ) {
        let instance = e.instance();
        let branches: Vec<&Value> = self
            .schema
            .pointer(e.schema_path().as_str())
            .and_then(Value::as_array)
            .map(|a| a.iter().map(|b| resolve(self.schema, b)).collect())
            .unwrap_or_default();
        if branches.len() != context.len() {
            out.push(self.at_value(path, "does not match any allowed form".to_owned()));
            return;
        }
        let is_null = |b: &Value| b.get("type").and_then(Value::as_str) == Some("null");
        let candidates: Vec<usize> =
            (0..branches.len()).filter(|&i| instance.is_null() || !is_null(branches[i])).collect();
        if let [only] = candidates[..] {
            for ce in &context[only] {
                self.explain(ce, out, depth + 1);
            }
            return;
        }
        // All constants: an enum of names.
        let consts: Option<Vec<String>> = candidates
            .iter()
            .map(|&i| branches[i].get("const").and_then(Value::as_str).map(str::to_owned))
            .collect();
        if let Some(names) = consts {
            out.push(self.enum_error(path, instance.as_ref(), &names));
            return;
        }
        // All single-key mappings: an externally tagged enum.
        let tags: Option<Vec<String>> = candidates
            .iter()
            .map(|&i| {
                let required = branches[i].get("required")?.as_array()?;
                match required.as_slice() {
                    [Value::String(k)] => Some(k.clone()),
                    _ => None,
                }
            })
            .collect();
        if let Some(tags) = tags {
            let forms = one_of(&tags);
            match instance.as_ref() {
                Value::Object(m) if m.len() == 1 => {
                    let key = m.keys().next().expect("one key");
                    if let Some(pos) = tags.iter().position(|t| t == key) {
                        for ce in &context[candidates[pos]] {
                            self.explain(ce, out, depth + 1);
                        }
                    } else {
                        let mut p = path.to_vec();
                        p.push(Seg::Key(key.clone()));
                        let hint = did_you_mean(key, tags.iter().map(String::as_str))
                            .map(|s| format!("did you mean `{s}`?"));
                        let shown = if looks_like_secret(key) {
                            "(name not shown)".into()
                        } else {
                            printable(key)
                        };
                        out.push(
                            self.at_key(&p, format!("unknown field `{shown}`: expected {forms}"))
                                .maybe_hint(hint),
                        );
                    }
                }
                Value::Object(m) if m.is_empty() => {
                    out.push(self.at_value(
                        path,
                        format!("expected one of {forms}, found an empty mapping"),
                    ));
                }
                Value::Object(_) => {
                    out.push(self.at_value(path, format!("expected exactly one of {forms}")));
                }
                _ => {
                    let found = self.root.at(path).map_or("nothing", Node::describe);
                    out.push(self.at_value(
                        path,
                        format!("expected a mapping with one of {forms}, found {found}"),
                    ));
                }
            }
            return;
        }
        out.push(self.at_value(path, "does not match any allowed form".to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every generated schema compiles, pins apiVersion and kind, and shows the defaults.
    #[test]
    fn schemas_compile_and_pin_headers() {
        for kind in Kind::ALL {
            let s = kind_schema(kind);
            assert!(jsonschema::validator_for(&s).is_ok(), "{kind}");
            assert_eq!(s.pointer("/properties/kind/const"), Some(&json!(kind.as_str())));
            assert_eq!(s.pointer("/properties/apiVersion/const"), Some(&json!(API_VERSION)));
        }
        let doc = document_schema();
        assert!(jsonschema::validator_for(&doc).is_ok());
        let cluster = kind_schema(Kind::Cluster);
        assert_eq!(
            cluster.pointer("/$defs/ThermalPolicy/properties/rerouteAbove/default"),
            Some(&json!(85.0))
        );
    }

    /// The document schema dispatches on kind: a valid Node passes, a Node with a Cluster's
    /// fields fails.
    #[test]
    fn document_schema_dispatches_on_kind() {
        let v = jsonschema::validator_for(&document_schema()).unwrap();
        let node = json!({"apiVersion": API_VERSION, "kind": "Node", "metadata": {"name": "a"},
            "spec": {"backend": "ollama", "url": "http://127.0.0.1:11434", "vram": "8GiB"}});
        assert!(v.is_valid(&node));
        let bad = json!({"apiVersion": API_VERSION, "kind": "Node", "metadata": {"name": "a"},
            "spec": {"reconcileInterval": "1m"}});
        assert!(!v.is_valid(&bad));
    }
}
