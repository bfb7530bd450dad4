//! Editors check every document (issue 20): every document of every shipped manifest file
//! (desired-state/, examples/) starts with the yaml-language-server modeline, and validates
//! against the schema that modeline names, with an independent draft 2020-12 validator (the
//! `jsonschema` crate, used directly on the committed schema files, not through homeostat's
//! validation). A copy with an error planted in its second document is reported there. The
//! committed schemas carry an `$id`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use std::path::{Path, PathBuf};

const MODELINE: &str = "# yaml-language-server: $schema=";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every shipped manifest file (the simulator's configs are not manifests).
fn shipped() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root().join("desired-state"), root().join("examples")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "yaml")
                && p.file_name().is_some_and(|n| n != "sim.yaml")
            {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The documents of a file: (the schema its modeline names, resolved; the document's text).
fn documents(file: &Path, text: &str) -> Vec<(Option<PathBuf>, String)> {
    text.split("\n---\n")
        .map(|doc| {
            let schema = doc
                .lines()
                .next()
                .and_then(|l| l.strip_prefix(MODELINE))
                .map(|rel| file.parent().unwrap().join(rel.trim()));
            (schema, doc.to_owned())
        })
        .collect()
}

/// Validation errors of one document against a schema file.
fn errors(schema: &Path, doc: &str) -> Vec<String> {
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(schema).unwrap()).unwrap();
    let validator = jsonschema::draft202012::new(&schema).expect("a valid draft 2020-12 schema");
    let instance: serde_json::Value = serde_saphyr::from_str(doc).expect("YAML");
    validator.iter_errors(&instance).map(|e| format!("{}: {e}", e.instance_path())).collect()
}

#[test]
fn every_shipped_document_has_the_modeline_and_validates() {
    let files = shipped();
    assert!(files.len() >= 15, "{files:?}");
    let mut count = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (i, (schema, doc)) in documents(file, &text).into_iter().enumerate() {
            let where_ = format!("{} document {}", file.display(), i + 1);
            let schema =
                schema.unwrap_or_else(|| panic!("{where_}: no modeline on its first line"));
            assert!(schema.exists(), "{where_}: {} does not exist", schema.display());
            let errs = errors(&schema, &doc);
            assert!(errs.is_empty(), "{where_} against {}: {errs:?}", schema.display());
            count += 1;
        }
    }
    assert!(count >= 48, "{count} documents");
}

#[test]
fn an_error_in_the_second_document_is_reported() {
    let file = root().join("desired-state/nodes.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    let docs = documents(&file, &text);
    assert!(docs.len() >= 2);
    let (schema, second) = &docs[1];
    let schema = schema.as_ref().expect("the second document has its modeline");
    assert!(errors(schema, second).is_empty());
    // A misspelt backend and a wrong type, in document 2 only.
    let bad = second.replacen("backend: lmstudio", "backend: lmstudoi", 1).replacen(
        "\nspec:\n",
        "\nspec:\n  cordoned: maybe\n",
        1,
    );
    assert!(bad.contains("lmstudoi") && bad.contains("cordoned: maybe"), "the plant took: {bad}");
    let errs = errors(schema, &bad);
    assert!(errs.iter().any(|e| e.contains("/spec/backend")), "{errs:?}");
    assert!(errs.iter().any(|e| e.contains("/spec/cordoned")), "{errs:?}");
    assert!(errors(schema, &docs[0].1).is_empty(), "document 1 is untouched");
}

#[test]
fn schemas_have_an_id() {
    for e in std::fs::read_dir(root().join("schemas")).unwrap().flatten() {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(e.path()).unwrap()).unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        assert_eq!(v["$id"], format!("https://homeostat.dev/schemas/{name}"), "{name}");
        assert_eq!(v["$schema"], "https://json-schema.org/draft/2020-12/schema", "{name}");
    }
}
