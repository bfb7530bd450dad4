//! An arena candidate's configuration: the model, its size and the settings to load it with,
//! from the node's `candidates:` (or `models:`) entry and the command line's
//! `--settings key=value`.
//!
//! Pure: strings and manifest types in, a `ModelConfig` out.

use crate::desired::{ByteSize, ModelSpec, NodeSpec};
use crate::plan::memory::{LoadSettings, ModelConfig};

/// A `--settings` entry that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    #[error("`{0}` is not key=value (e.g. contextLength=16384)")]
    NotKeyValue(String),
    #[error(
        "unknown setting `{0}`; known: size, contextLength, flashAttention, evalBatchSize, numExperts, offloadKvCacheToGpu"
    )]
    UnknownKey(String),
    #[error("{key}: `{value}` is not {expected}")]
    BadValue { key: String, value: String, expected: &'static str },
}

/// The settings keys, normalised (lowercase, no `-` or `_`), so `contextLength`,
/// `context-length` and `context_length` are the same key.
fn normal(key: &str) -> String {
    key.chars().filter(|c| *c != '-' && *c != '_').flat_map(char::to_lowercase).collect()
}

/// The configuration of `model` as a candidate on `node`: its `candidates:` entry, else its
/// `models:` entry, else just the name (size unknown: 0, settings left to the backend); then the
/// `--settings` overrides, in order.
pub fn candidate_config(
    node: &NodeSpec,
    model: &str,
    overrides: &[String],
) -> Result<ModelConfig, SettingsError> {
    let listed = node.candidates.iter().chain(&node.models).find(|m| m.name == model);
    let mut config = match listed {
        Some(m) => config_of(m),
        None => ModelConfig { model: model.to_owned(), size: 0, settings: LoadSettings::default() },
    };
    for pair in overrides {
        apply_setting(&mut config, pair)?;
    }
    Ok(config)
}

/// A manifest model entry as a configuration.
pub fn config_of(m: &ModelSpec) -> ModelConfig {
    ModelConfig {
        model: m.name.clone(),
        size: m.size.bytes(),
        settings: LoadSettings::from_spec(m),
    }
}

/// A configuration as a manifest model entry (what `--apply` writes for a new champion).
pub fn spec_of(c: &ModelConfig) -> ModelSpec {
    ModelSpec {
        name: c.model.clone(),
        size: ByteSize(c.size),
        residency: None,
        context_length: c.settings.context_length,
        flash_attention: c.settings.flash_attention,
        eval_batch_size: c.settings.eval_batch_size,
        num_experts: c.settings.num_experts,
        offload_kv_cache_to_gpu: c.settings.offload_kv_cache_to_gpu,
    }
}

/// Applies one `key=value`. `value` may be `default` (or empty) to leave a setting to the
/// backend.
pub fn apply_setting(config: &mut ModelConfig, pair: &str) -> Result<(), SettingsError> {
    let (key, value) =
        pair.split_once('=').ok_or_else(|| SettingsError::NotKeyValue(pair.to_owned()))?;
    let (key, value) = (key.trim(), value.trim());
    let unset = value.is_empty() || value == "default";
    let bad = |expected| SettingsError::BadValue {
        key: key.to_owned(),
        value: value.to_owned(),
        expected,
    };
    let int = |expected| -> Result<Option<u32>, SettingsError> {
        if unset {
            return Ok(None);
        }
        value.parse::<u32>().ok().filter(|n| *n > 0).map(Some).ok_or_else(|| bad(expected))
    };
    let boolean = || -> Result<Option<bool>, SettingsError> {
        if unset {
            return Ok(None);
        }
        match value {
            "true" | "on" | "yes" => Ok(Some(true)),
            "false" | "off" | "no" => Ok(Some(false)),
            _ => Err(bad("true or false")),
        }
    };
    let s = &mut config.settings;
    match normal(key).as_str() {
        "size" => {
            config.size = if unset {
                0
            } else {
                value.parse::<ByteSize>().map_err(|_| bad("a size such as 10GiB"))?.bytes()
            };
        }
        "contextlength" => s.context_length = int("a positive whole number")?,
        "flashattention" => s.flash_attention = boolean()?,
        "evalbatchsize" => s.eval_batch_size = int("a positive whole number")?,
        "numexperts" => s.num_experts = int("a positive whole number")?,
        "offloadkvcachetogpu" => s.offload_kv_cache_to_gpu = boolean()?,
        _ => return Err(SettingsError::UnknownKey(key.to_owned())),
    }
    Ok(())
}

/// `contextLength=8192, flashAttention=true` (only the settings given), or `backend defaults`.
pub fn settings_text(s: &LoadSettings) -> String {
    let mut parts = Vec::new();
    if let Some(v) = s.context_length {
        parts.push(format!("contextLength={v}"));
    }
    if let Some(v) = s.flash_attention {
        parts.push(format!("flashAttention={v}"));
    }
    if let Some(v) = s.eval_batch_size {
        parts.push(format!("evalBatchSize={v}"));
    }
    if let Some(v) = s.num_experts {
        parts.push(format!("numExperts={v}"));
    }
    if let Some(v) = s.offload_kv_cache_to_gpu {
        parts.push(format!("offloadKvCacheToGpu={v}"));
    }
    if parts.is_empty() { "backend defaults".to_owned() } else { parts.join(", ") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> NodeSpec {
        serde_json::from_value(serde_json::json!({
            "backend": "lmstudio", "url": "http://127.0.0.1:1", "vram": "24GiB",
            "models": [{ "name": "champ", "size": "6GiB", "contextLength": 8192 }],
            "candidates": [{ "name": "cand", "size": "10GiB", "flashAttention": true }]
        }))
        .unwrap()
    }

    /// A listed candidate starts from its entry; overrides apply in order, in any key spelling.
    #[test]
    fn listed_candidate_with_overrides() {
        let c = candidate_config(
            &node(),
            "cand",
            &["context-length=16384".into(), "flashAttention=false".into()],
        )
        .unwrap();
        assert_eq!(c.model, "cand");
        assert_eq!(c.size, 10 << 30);
        assert_eq!(c.settings.context_length, Some(16384));
        assert_eq!(c.settings.flash_attention, Some(false));
        assert_eq!(settings_text(&c.settings), "contextLength=16384, flashAttention=false");
    }

    /// An unlisted model has an unknown size unless given; `default` unsets a setting; the
    /// primary's own entry is used when the candidate is the primary with other settings.
    #[test]
    fn unlisted_and_primary() {
        let c = candidate_config(&node(), "other", &["size=4GiB".into()]).unwrap();
        assert_eq!((c.size, c.settings.clone()), (4 << 30, LoadSettings::default()));
        assert_eq!(settings_text(&c.settings), "backend defaults");
        let c = candidate_config(&node(), "champ", &["contextLength=default".into()]).unwrap();
        assert_eq!((c.size, c.settings.context_length), (6 << 30, None));
    }

    /// Bad entries say what is wrong.
    #[test]
    fn bad_settings() {
        let n = node();
        assert_eq!(
            candidate_config(&n, "cand", &["contextLength".into()]),
            Err(SettingsError::NotKeyValue("contextLength".into()))
        );
        assert_eq!(
            candidate_config(&n, "cand", &["ctx=1".into()]),
            Err(SettingsError::UnknownKey("ctx".into()))
        );
        assert!(matches!(
            candidate_config(&n, "cand", &["contextLength=0".into()]),
            Err(SettingsError::BadValue { .. })
        ));
        assert!(matches!(
            candidate_config(&n, "cand", &["flashAttention=maybe".into()]),
            Err(SettingsError::BadValue { .. })
        ));
        assert!(matches!(
            candidate_config(&n, "cand", &["size=lots".into()]),
            Err(SettingsError::BadValue { .. })
        ));
    }

    /// A configuration and a manifest entry convert into each other.
    #[test]
    fn spec_round_trip() {
        let n = node();
        let c = config_of(&n.candidates[0]);
        assert_eq!(config_of(&spec_of(&c)), c);
    }
}
