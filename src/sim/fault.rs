//! Faults a simulated node can be given: what each kind means, its parameters, and how long it
//! lasts. This is the contract of `POST /_sim/fault` and of the `timeline` in sim.yaml.
//!
//! Pure data: the effect of each fault lives in `model` (state) and `server` (connections).
//!
//! A fault is a JSON/YAML object: `{"kind": "<kebab-case kind>", ...parameters, ...common}`.
//! Common keys:
//! - `model`: only requests/instances concerning this model are affected (where it makes sense);
//! - `path`: request faults only: only requests whose path starts with this are affected;
//! - `times`: the fault is removed after affecting this many requests/loads (one-shot = 1);
//! - `for`: the fault is removed after this long (`5s`, `250ms`);
//! - `survives-restart`: keep the fault across a restart (default: see [`FaultKind::survives_restart`]).

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::desired::units::{ByteSize, Dur};

/// Identifies an injected fault on one node (for `DELETE /_sim/fault?id=N`).
pub type FaultId = u64;

/// One fault with its scope and lifetime.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    pub kind: FaultKind,
    /// Only this model (its requests, loads, instances) is affected.
    pub model: Option<String>,
    /// Request faults only: only paths starting with this prefix are affected.
    pub path: Option<String>,
    /// Removed after affecting this many requests (request faults) or loads (load faults).
    pub times: Option<u32>,
    /// Removed this long after injection.
    pub duration: Option<Dur>,
    /// Overrides whether a restart of the node clears the fault.
    pub survives_restart: Option<bool>,
}

/// How a wedged model misbehaves on chat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WedgeMode {
    /// Chat requests are accepted and never answered (the client times out).
    #[default]
    Hang,
    /// Chat requests fail with the backend's HTTP 500 error body.
    Error,
}

/// What goes wrong. Kinds are kebab-case on the wire (`http-500`, `model-crash`, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "kebab-case",
    rename_all_fields = "kebab-case",
    deny_unknown_fields
)]
pub enum FaultKind {
    /// The server is unreachable: its own port refuses connections (the listener is really
    /// closed and open connections are cut). On the shared listener, requests are cut without an
    /// answer. State is kept (like a network partition); use `restart` for a process that comes
    /// back empty.
    Down,
    /// Connections are accepted and requests read, but no answer comes until the fault is
    /// cleared (like a SIGSTOPped process: queued requests are answered after SIGCONT).
    Hang,
    /// Every answer is delayed by `delay`.
    Slow { delay: Dur },
    /// Requests fail with HTTP 500 and the backend's own error body.
    #[serde(rename = "http-500")]
    Http500,
    /// HTTP 200 with a body that is not valid JSON.
    Malformed,
    /// The real answer, announced with its full `Content-Length`, is cut after half the bytes.
    Truncated,
    /// The real answer followed by `bytes` of whitespace (still valid JSON, just too large).
    Oversized {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bytes: Option<ByteSize>,
    },
    /// Loaded instances (of `model`, or all) disappear at once; a llama.cpp router shows
    /// `failed: true, exit_code: 1`; vLLM's engine dies (`/health` 503); a single-model
    /// llama-server exits (connection refused). With `on-load: true` the fault stays and every
    /// later load of the model crashes right after it finished (a crash loop).
    ModelCrash {
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        on_load: bool,
    },
    /// Loaded instances stay listed as loaded and health stays 200, but chat hangs (`mode:
    /// hang`, default) or fails with HTTP 500 (`mode: error`). Unloading or restarting cures
    /// the instance; but a llama.cpp router cannot stop a hung child: its unload is accepted,
    /// the model stays `loaded` and is force-killed after the node's `stop-timeout` (then
    /// `failed`, `exit_code: 1`). With `on-load: true` every later load of the model is wedged too.
    Wedged {
        #[serde(default)]
        mode: WedgeMode,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        on_load: bool,
    },
    /// Loads fail the way the backend reports a broken model (LM Studio load error, Ollama 500,
    /// router `failed: true`, exit of a single-model server).
    LoadFails,
    /// Loads fail with the backend's out-of-memory error, whatever the free VRAM; with
    /// `context-above` only loads with a larger context fail (so halving the context heals).
    Oom {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        context_above: Option<u32>,
    },
    /// Unloading does not free VRAM (all of it, or `bytes` per unload) until a restart.
    LeakVram {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bytes: Option<ByteSize>,
    },
    /// The GPU heats towards `celsius` (at the node's thermal time constant).
    Hot { celsius: f64 },
    /// `bytes` of swap are in use.
    Swap { bytes: ByteSize },
    /// Chat answers are wrong (benchmark checks fail); the answering model is still reported.
    WrongAnswers,
    /// The node stops sending heartbeats.
    NoHeartbeat,
    /// The process goes down now and comes back empty after `down` (default: the node's
    /// restart time).
    Restart {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        down: Option<Dur>,
    },
    /// Loads never finish while this fault is active; clearing it lets them finish (tests use
    /// it to kill a reconciler in the middle of a reload).
    HoldLoads,
    /// The GPU reports NVIDIA Xid `code` (dcgm `DCGM_FI_DEV_XID_ERRORS`), e.g. 79.
    Xid { code: u32 },
}

/// Why a fault description was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid fault: {reason}")]
pub struct FaultError {
    pub reason: String,
}

impl FaultKind {
    /// The kebab-case name.
    pub fn name(&self) -> &'static str {
        match self {
            FaultKind::Down => "down",
            FaultKind::Hang => "hang",
            FaultKind::Slow { .. } => "slow",
            FaultKind::Http500 => "http-500",
            FaultKind::Malformed => "malformed",
            FaultKind::Truncated => "truncated",
            FaultKind::Oversized { .. } => "oversized",
            FaultKind::ModelCrash { .. } => "model-crash",
            FaultKind::Wedged { .. } => "wedged",
            FaultKind::LoadFails => "load-fails",
            FaultKind::Oom { .. } => "oom",
            FaultKind::LeakVram { .. } => "leak-vram",
            FaultKind::Hot { .. } => "hot",
            FaultKind::Swap { .. } => "swap",
            FaultKind::WrongAnswers => "wrong-answers",
            FaultKind::NoHeartbeat => "no-heartbeat",
            FaultKind::Restart { .. } => "restart",
            FaultKind::HoldLoads => "hold-loads",
            FaultKind::Xid { .. } => "xid",
        }
    }

    /// Every kind name, for error messages and docs.
    pub const NAMES: [&'static str; 19] = [
        "down",
        "hang",
        "slow",
        "http-500",
        "malformed",
        "truncated",
        "oversized",
        "model-crash",
        "wedged",
        "load-fails",
        "oom",
        "leak-vram",
        "hot",
        "swap",
        "wrong-answers",
        "no-heartbeat",
        "restart",
        "hold-loads",
        "xid",
    ];

    /// Faults that act on each HTTP request (in `server`), as opposed to node state.
    pub fn is_request_fault(&self) -> bool {
        matches!(
            self,
            FaultKind::Hang
                | FaultKind::Slow { .. }
                | FaultKind::Http500
                | FaultKind::Malformed
                | FaultKind::Truncated
                | FaultKind::Oversized { .. }
        )
    }

    /// Whether `model` narrows this kind.
    fn accepts_model(&self) -> bool {
        self.is_request_fault()
            || matches!(
                self,
                FaultKind::ModelCrash { .. }
                    | FaultKind::Wedged { .. }
                    | FaultKind::LoadFails
                    | FaultKind::Oom { .. }
                    | FaultKind::WrongAnswers
                    | FaultKind::HoldLoads
            )
    }

    /// Whether a restart of the node keeps the fault. Process-level troubles (a hung or wedged
    /// process, leaked VRAM, bad answers on the wire) are cured by a restart; properties of the
    /// machine or of the model files (heat, swap, a model that cannot load, wrong answers from
    /// the weights, a held load used by tests) are not.
    pub fn survives_restart(&self) -> bool {
        matches!(
            self,
            FaultKind::LoadFails
                | FaultKind::Oom { .. }
                | FaultKind::Hot { .. }
                | FaultKind::Swap { .. }
                | FaultKind::WrongAnswers
                | FaultKind::HoldLoads
                | FaultKind::Xid { .. }
        )
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

const COMMON_KEYS: [&str; 5] = ["model", "path", "times", "for", "survives-restart"];

impl Fault {
    /// A fault of `kind` on the whole node, persistent until cleared.
    pub fn new(kind: FaultKind) -> Fault {
        Fault { kind, model: None, path: None, times: None, duration: None, survives_restart: None }
    }

    /// Only `model` is affected.
    pub fn for_model(mut self, model: impl Into<String>) -> Fault {
        self.model = Some(model.into());
        self
    }

    /// Only requests whose path starts with `prefix` are affected (request faults).
    pub fn on_path(mut self, prefix: impl Into<String>) -> Fault {
        self.path = Some(prefix.into());
        self
    }

    /// Removed after affecting `n` requests or loads.
    pub fn times(mut self, n: u32) -> Fault {
        self.times = Some(n);
        self
    }

    /// Removed `d` after injection.
    pub fn lasting(mut self, d: std::time::Duration) -> Fault {
        self.duration = Some(Dur(d));
        self
    }

    /// Whether a restart keeps this fault.
    pub fn survives_restart(&self) -> bool {
        self.survives_restart.unwrap_or_else(|| self.kind.survives_restart())
    }

    /// Parses and validates a fault object (`{"kind": ..., ...}`), strictly: unknown kinds,
    /// unknown parameters and scope keys that make no sense for the kind are errors.
    pub fn from_value(v: Value) -> Result<Fault, FaultError> {
        let err = |reason: String| FaultError { reason };
        let Value::Object(mut map) = v else {
            return Err(err("expected an object like {\"kind\": \"hang\"}".into()));
        };
        match map.get("kind") {
            Some(Value::String(k)) if FaultKind::NAMES.contains(&k.as_str()) => {}
            Some(Value::String(k)) => {
                return Err(err(format!(
                    "unknown kind {k:?}; expected one of: {}",
                    FaultKind::NAMES.join(", ")
                )));
            }
            _ => return Err(err("missing \"kind\" (a string)".into())),
        }
        let mut common = serde_json::Map::new();
        for key in COMMON_KEYS {
            if let Some(v) = map.remove(key) {
                common.insert(key.to_owned(), v);
            }
        }
        let kind: FaultKind =
            serde_json::from_value(Value::Object(map)).map_err(|e| err(e.to_string()))?;
        let string = |key: &str| -> Result<Option<String>, FaultError> {
            match common.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(err(format!("{key:?} must be a string"))),
            }
        };
        let model = string("model")?;
        let path = string("path")?;
        let times = match common.get("times") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_u64().and_then(|n| u32::try_from(n).ok()) {
                Some(n) if n > 0 => Some(n),
                _ => return Err(err("\"times\" must be a positive integer".into())),
            },
        };
        let duration = match string("for")? {
            None => None,
            Some(s) => Some(s.parse::<Dur>().map_err(|e| err(e.to_string()))?),
        };
        let survives_restart = match common.get("survives-restart") {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(_) => return Err(err("\"survives-restart\" must be true or false".into())),
        };
        if model.is_some() && !kind.accepts_model() {
            return Err(err(format!("kind {kind} does not take \"model\"")));
        }
        if path.is_some() && !kind.is_request_fault() {
            return Err(err(format!(
                "kind {kind} does not take \"path\" (only request faults do: hang, slow, \
                 http-500, malformed, truncated, oversized)"
            )));
        }
        if let FaultKind::Hot { celsius } = kind
            && !(celsius.is_finite() && (-50.0..=150.0).contains(&celsius))
        {
            return Err(err("\"celsius\" must be between -50 and 150".into()));
        }
        Ok(Fault { kind, model, path, times, duration, survives_restart })
    }

    /// The JSON form accepted by [`Fault::from_value`].
    pub fn to_value(&self) -> Value {
        let mut v = serde_json::to_value(&self.kind).unwrap_or(Value::Null);
        if let Value::Object(map) = &mut v {
            if let Some(m) = &self.model {
                map.insert("model".into(), Value::String(m.clone()));
            }
            if let Some(p) = &self.path {
                map.insert("path".into(), Value::String(p.clone()));
            }
            if let Some(t) = self.times {
                map.insert("times".into(), Value::from(t));
            }
            if let Some(d) = self.duration {
                map.insert("for".into(), Value::String(d.to_string()));
            }
            if let Some(s) = self.survives_restart {
                map.insert("survives-restart".into(), Value::Bool(s));
            }
        }
        v
    }
}

impl Serialize for Fault {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_value().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Fault {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        Fault::from_value(v).map_err(serde::de::Error::custom)
    }
}

impl From<FaultKind> for Fault {
    fn from(kind: FaultKind) -> Fault {
        Fault::new(kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Every kind name parses (with its required parameters) and round-trips through JSON.
    #[test]
    fn every_kind_round_trips() {
        let samples = [
            json!({"kind": "down"}),
            json!({"kind": "hang", "path": "/v1/chat"}),
            json!({"kind": "slow", "delay": "2s"}),
            json!({"kind": "http-500", "times": 1}),
            json!({"kind": "malformed"}),
            json!({"kind": "truncated"}),
            json!({"kind": "oversized", "bytes": "1MiB"}),
            json!({"kind": "model-crash", "model": "m", "on-load": true}),
            json!({"kind": "wedged", "mode": "error"}),
            json!({"kind": "load-fails", "for": "10s"}),
            json!({"kind": "oom", "context-above": 4096}),
            json!({"kind": "leak-vram", "bytes": "300MiB"}),
            json!({"kind": "hot", "celsius": 95.0}),
            json!({"kind": "swap", "bytes": "9GiB"}),
            json!({"kind": "wrong-answers"}),
            json!({"kind": "no-heartbeat", "survives-restart": true}),
            json!({"kind": "restart", "down": "500ms"}),
            json!({"kind": "hold-loads"}),
            json!({"kind": "xid", "code": 79}),
        ];
        assert_eq!(samples.len(), FaultKind::NAMES.len());
        for (v, name) in samples.iter().zip(FaultKind::NAMES) {
            let f = Fault::from_value(v.clone()).unwrap();
            assert_eq!(f.kind.name(), name);
            assert_eq!(&f.to_value(), v, "round trip of {name}");
        }
    }

    /// Typos and nonsense are refused with a message naming the problem.
    #[test]
    fn refuses_bad_faults() {
        let bad = [
            (json!({"kind": "hung"}), "unknown kind \"hung\""),
            (json!({"kind": "hot"}), "missing field `celsius`"),
            (json!({"kind": "hot", "celsius": 90, "celcius": 1}), "unknown field `celcius`"),
            (json!({"kind": "swap", "bytes": "lots"}), "invalid size"),
            (json!({"kind": "hot", "celsius": 90, "path": "/x"}), "does not take \"path\""),
            (json!({"kind": "swap", "bytes": "1GiB", "model": "m"}), "does not take \"model\""),
            (json!({"kind": "hang", "times": 0}), "positive integer"),
            (json!({"kind": "hang", "for": "soon"}), "invalid duration"),
            (json!(["hang"]), "expected an object"),
        ];
        for (v, want) in bad {
            let e = Fault::from_value(v.clone()).unwrap_err().to_string();
            assert!(e.contains(want), "{v}: {e}");
        }
    }
}
