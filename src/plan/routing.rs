//! The effective routing table (R5): per category, the eligible nodes with their weights in the
//! order the manifest lists them; when no node of a category is eligible, the remote providers
//! that serve it.
//!
//! Pure: eligibility is decided by the planner and passed in.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::desired::RoutingSpec;

/// The routing table for every category.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RoutingTable {
    pub categories: BTreeMap<String, CategoryRoutes>,
}

/// Where a category's traffic goes.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CategoryRoutes {
    /// Targets in order of preference, each with its (effective) weight.
    pub targets: Vec<RouteEntry>,
    /// True when no local node is eligible and the remotes took over.
    pub fallback: bool,
    /// Listed nodes left out, with why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded: Vec<Excluded>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteEntry {
    pub target: Target,
    pub name: String,
    pub weight: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    Node,
    Remote,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Excluded {
    pub node: String,
    pub why: String,
}

/// The routing table as `routes.json` and `GET /api/v1/routes` show it.
pub fn routes_document(at: crate::time::Timestamp, routing: &RoutingTable) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": crate::desired::API_VERSION,
        "kind": "Routes",
        "at": at.rfc3339(),
        "categories": routing.categories,
    })
}

/// Whether a node may receive traffic, and with which weight factor (1.0, or less when
/// degraded), or why not.
pub type Eligibility = Result<f64, String>;

/// Builds the table from the routing manifests and each node's eligibility.
pub fn routing_table(spec: &RoutingSpec, eligible: &dyn Fn(&str) -> Eligibility) -> RoutingTable {
    let mut categories = BTreeMap::new();
    for (category, list) in &spec.categories {
        let mut routes = CategoryRoutes::default();
        for t in list {
            match eligible(&t.node) {
                Ok(factor) => routes.targets.push(RouteEntry {
                    target: Target::Node,
                    name: t.node.clone(),
                    weight: round3(t.weight * factor),
                }),
                Err(why) => routes.excluded.push(Excluded { node: t.node.clone(), why }),
            }
        }
        if routes.targets.is_empty() {
            routes.fallback = true;
            routes.targets = spec
                .remotes
                .iter()
                .filter(|r| r.categories.as_ref().is_none_or(|c| c.iter().any(|c| c == category)))
                .map(|r| RouteEntry {
                    target: Target::Remote,
                    name: r.name.clone(),
                    weight: r.weight,
                })
                .collect();
        }
        categories.insert(category.clone(), routes);
    }
    RoutingTable { categories }
}

/// Weights are shown and compared with three decimals (0.5 × 1.4 = 0.7, not 0.69999…).
fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

impl RoutingTable {
    /// Categories whose traffic left the local nodes entirely.
    pub fn fallback_categories(&self) -> impl Iterator<Item = &str> {
        self.categories.iter().filter(|(_, r)| r.fallback).map(|(c, _)| c.as_str())
    }
}
