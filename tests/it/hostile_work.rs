//! Issue 17: validation must do work linear in its input. Timing a test is flaky, so the work is
//! counted (`homeostat::desired::work`: YAML events, documents, mapping entries compared in
//! lookups, diagnostics) and compared between an input and the same input repeated ten times.
//! A quadratic step anywhere those counters reach (a per-item search of a growing list) makes
//! the ratio ~100 instead of ~10. The fuzz entry `homeostat_fuzz::manifest` also holds every
//! input to a work budget per byte.

#![allow(clippy::unwrap_used)]

use proptest::prelude::*;

fn work_of(text: &str) -> u64 {
    homeostat::desired::work::take();
    let _ = homeostat::desired::from_yaml_str(text);
    homeostat::desired::work::take()
}

/// A unit of manifest text that can be repeated: whole documents, or lines inside one mapping.
#[derive(Debug, Clone)]
enum Unit {
    /// `---` and nothing (an empty document).
    Empty,
    /// A document with a bad kind.
    BadKind,
    /// A node document (each copy has its own name: `{i}`).
    Node,
    /// An unknown field of one Node's spec (each copy its own key).
    UnknownField,
    /// An item of one Node's model list.
    Model,
    /// A syntax error line.
    Broken,
}

const HEAD: &str = "apiVersion: homeostat.dev/v1\nkind: Node\nmetadata: { name: host }\nspec:\n  backend: ollama\n  url: http://10.0.0.1:11434\n  vram: 8GiB\n";

fn text(units: &[Unit], copies: usize) -> String {
    let mut docs = String::new();
    let mut fields = String::new();
    let mut models = String::new();
    for c in 0..copies {
        for (j, u) in units.iter().enumerate() {
            let i = c * units.len() + j;
            match u {
                Unit::Empty => docs.push_str("---\n"),
                Unit::BadKind => docs.push_str(&format!("---\napiVersion: homeostat.dev/v1\nkind: Nope{i}\nmetadata: {{ name: x{i} }}\n")),
                Unit::Node => docs.push_str(&format!("---\napiVersion: homeostat.dev/v1\nkind: Node\nmetadata: {{ name: n{i} }}\nspec:\n  backend: lmstudio\n  url: http://10.0.{}.{}:1234\n  vram: 8GiB\n  models: [{{ name: m, size: 1GiB }}]\n", i / 250, i % 250)),
                Unit::UnknownField => fields.push_str(&format!("  zz{i}: {i}\n")),
                Unit::Model => models.push_str(&format!("    - {{ name: m{i}, size: 1MiB }}\n")),
                Unit::Broken => docs.push_str("---\nkey: [unclosed\n"),
            }
        }
    }
    let models =
        if models.is_empty() { "    - { name: m, size: 1GiB }\n".to_owned() } else { models };
    format!("{HEAD}{fields}  models:\n{models}{docs}")
}

fn unit() -> impl Strategy<Value = Unit> {
    prop_oneof![
        Just(Unit::Empty),
        Just(Unit::BadKind),
        Just(Unit::Node),
        Just(Unit::UnknownField),
        Just(Unit::Model),
        Just(Unit::Broken),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Ten times the input costs at most about ten times the work (16 allows for the fixed
    /// part and the binary searches' logarithmic steps; quadratic work would be ~100).
    #[test]
    fn validation_work_is_linear_in_the_input(units in prop::collection::vec(unit(), 1..6)) {
        let small = work_of(&text(&units, 100));
        let big = work_of(&text(&units, 1000));
        prop_assert!(big <= small * 16, "{units:?}: 10x the input took {big} steps against {small}");
    }
}

/// The shapes of the adversarial run, each alone.
#[test]
fn each_hostile_shape_is_linear() {
    for u in [Unit::Empty, Unit::BadKind, Unit::Node, Unit::UnknownField, Unit::Model, Unit::Broken]
    {
        let small = work_of(&text(std::slice::from_ref(&u), 500));
        let big = work_of(&text(std::slice::from_ref(&u), 5000));
        assert!(big <= small * 16, "{u:?}: 10x the input took {big} steps against {small}");
    }
}
