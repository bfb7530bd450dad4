//! `homeostat init [--discover URL ...] [DIR]`: a starter desired-state directory.
//!
//! Without `--discover` it writes a Cluster, an example Node and a Routing to edit. With it,
//! each URL is asked what it is — Ollama (`GET /api/version`), LM Studio (`GET /api/v1/models`),
//! llama.cpp (`GET /props`), vLLM (`GET /v1/models` with `GET /version`) or any other
//! OpenAI-compatible server (`GET /v1/models`) — and then observed with the same drivers the
//! daemon uses: the models loaded now become the Node's models, with the size and context the
//! server reports (a size it does not report is written as a placeholder, marked). Every
//! document starts with the yaml-language-server modeline, pointing at the schemas written to
//! `DIR/.schemas/`, so editors check every document of every file offline.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

use super::{GlobalArgs, exit};
use crate::observe::snapshot::InstanceState;

/// Where the schemas go inside the directory.
const SCHEMAS: &str = ".schemas";
/// Written when the server does not tell a model's size.
const UNKNOWN_SIZE: u64 = 1 << 30;

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The directory to write (created; existing files are not overwritten without --force).
    #[arg(value_name = "DIR", default_value = "desired-state")]
    pub dir: PathBuf,
    /// An inference server's base URL to ask what it runs (repeatable).
    #[arg(long, value_name = "URL")]
    pub discover: Vec<String>,
    /// Overwrite files that exist.
    #[arg(long)]
    pub force: bool,
}

/// One discovered server.
#[derive(Debug)]
struct Found {
    name: String,
    backend: &'static str,
    url: String,
    detail: String,
    /// (model, size in bytes if told, context length if told)
    models: Vec<(String, Option<u64>, Option<u32>)>,
    /// Downloaded but not loaded, for a comment.
    available: Vec<String>,
}

fn modeline(schema: &str) -> String {
    format!("# yaml-language-server: $schema={SCHEMAS}/{schema}.schema.json\n")
}

#[allow(clippy::print_stdout)]
pub fn run(_g: &GlobalArgs, a: InitArgs) -> anyhow::Result<u8> {
    let found = if a.discover.is_empty() {
        Vec::new()
    } else {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(discover_all(&a.discover))?
    };
    let files = [
        ("cluster.yaml", cluster_yaml()),
        ("nodes.yaml", nodes_yaml(&found)),
        ("routing.yaml", routing_yaml(&found)),
    ];
    if !a.force {
        for (name, _) in &files {
            let p = a.dir.join(name);
            anyhow::ensure!(!p.exists(), "{} exists (use --force to overwrite it)", p.display());
        }
    }
    std::fs::create_dir_all(&a.dir)
        .with_context(|| format!("cannot create {}", a.dir.display()))?;
    crate::desired::schema::write_all(&a.dir.join(SCHEMAS)).with_context(|| {
        format!("cannot write the schemas to {}", a.dir.join(SCHEMAS).display())
    })?;
    for (name, text) in &files {
        let p = a.dir.join(name);
        std::fs::write(&p, text).with_context(|| format!("cannot write {}", p.display()))?;
        println!("wrote {}", p.display());
    }
    for f in &found {
        println!(
            "  node {}: {} at {} ({}), {} model(s): {}",
            f.name,
            f.backend,
            f.url,
            f.detail,
            f.models.len(),
            f.models.iter().map(|m| m.0.as_str()).collect::<Vec<_>>().join(", ")
        );
    }
    println!(
        "next: set each node's vram, then `homeostat validate -f {0}` and `homeostat reconcile diff -f {0}`",
        a.dir.display()
    );
    Ok(exit::OK)
}

async fn discover_all(urls: &[String]) -> anyhow::Result<Vec<Found>> {
    let http = super::reconcile::http_client()?;
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let mut out: Vec<Found> = Vec::new();
    for raw in urls {
        let url = raw.trim_end_matches('/').to_owned();
        let parsed = url::Url::parse(&url).with_context(|| format!("`{raw}` is not a URL"))?;
        let (backend, detail) = identify(&client, &url)
            .await
            .with_context(|| format!("cannot tell what {url} runs"))?;
        let mut name = format!(
            "{}-{}",
            backend.replace("llamacpp", "llama"),
            parsed.port_or_known_default().unwrap_or(0)
        );
        while out.iter().any(|f| f.name == name) {
            name.push('x');
        }
        let (models, available) = observe(&http, &name, backend, &url).await?;
        out.push(Found { name, backend, url, detail, models, available });
    }
    Ok(out)
}

async fn get_json(client: &reqwest::Client, url: &str) -> Option<serde_json::Value> {
    let r = client.get(url).send().await.ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.json().await.ok()
}

/// Which backend answers at `url`, and what it says about itself.
async fn identify(client: &reqwest::Client, url: &str) -> anyhow::Result<(&'static str, String)> {
    if let Some(v) = get_json(client, &format!("{url}/api/version")).await
        && let Some(version) = v["version"].as_str()
    {
        return Ok(("ollama", format!("Ollama {version}")));
    }
    if let Some(v) = get_json(client, &format!("{url}/api/v1/models")).await
        && v["models"].is_array()
    {
        return Ok(("lmstudio", "LM Studio REST v1".to_owned()));
    }
    if let Some(v) = get_json(client, &format!("{url}/props")).await
        && (v.get("default_generation_settings").is_some()
            || v.get("model_path").is_some()
            || v.get("role").is_some())
    {
        return Ok(("llamacpp", "llama.cpp llama-server".to_owned()));
    }
    if let Some(v) = get_json(client, &format!("{url}/v1/models")).await
        && v["data"].is_array()
    {
        let vllm =
            v["data"].as_array().into_iter().flatten().any(|m| m.get("max_model_len").is_some());
        if vllm
            || get_json(client, &format!("{url}/version"))
                .await
                .is_some_and(|v| v["version"].is_string())
        {
            return Ok(("vllm", "vLLM".to_owned()));
        }
        return Ok(("openai", "OpenAI-compatible".to_owned()));
    }
    anyhow::bail!(
        "no known API answered (tried Ollama /api/version, LM Studio /api/v1/models, llama.cpp \
         /props, OpenAI /v1/models)"
    )
}

/// The node's loaded models (size, context) and its other downloaded models, through the
/// observe driver of its backend.
async fn observe(
    http: &crate::observe::http::Http,
    name: &str,
    backend: &str,
    url: &str,
) -> anyhow::Result<(Vec<(String, Option<u64>, Option<u32>)>, Vec<String>)> {
    let probe = format!(
        "apiVersion: homeostat.dev/v1\nkind: Node\nmetadata: {{ name: {name} }}\nspec:\n  backend: {backend}\n  \
         url: {url}\n  vram: 1024GiB\n  models:\n    - {{ name: homeostat-init-probe, size: 1GiB }}\n"
    );
    let desired = crate::desired::from_yaml_str(&probe)
        .map_err(|d| anyhow::anyhow!("cannot describe {url} as a node:\n{d}"))?;
    let clock = crate::time::MonotonicClock::start();
    let now = || crate::time::Clock::now(&clock);
    let observed = crate::observe::observe_all(&desired, http, &|_, _| None, &now).await;
    let Some(o) = observed.nodes.get(name) else { anyhow::bail!("{url} was not observed") };
    if let crate::observe::snapshot::Reach::Down { cause } = &o.reach {
        anyhow::bail!("{url} does not answer: {cause}");
    }
    let mut models: Vec<(String, Option<u64>, Option<u32>)> = Vec::new();
    for i in o.instances.iter().filter(|i| i.state == InstanceState::Loaded) {
        if !models.iter().any(|m| m.0 == i.model) {
            models.push((i.model.clone(), i.size, i.context_length));
        }
    }
    let available = o
        .available
        .iter()
        .flatten()
        .filter(|a| !models.iter().any(|m| &m.0 == *a))
        .cloned()
        .collect();
    Ok((models, available))
}

/// `5734MiB`: bytes rounded up to whole MiB.
fn size(bytes: u64) -> String {
    format!("{}MiB", bytes.div_ceil(1 << 20).max(1))
}

fn yaml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

fn cluster_yaml() -> String {
    format!(
        "{}# The cluster's policy: every setting has a default (README, \"Defaults\").\n\
         apiVersion: homeostat.dev/v1\nkind: Cluster\nmetadata:\n  name: lab\nspec:\n  \
         reconcileInterval: 30s\n  api:\n    listen: 127.0.0.1:9464\n    # tokenFrom: {{ env: HOMEOSTAT_API_TOKEN }}   # enables cordon/uncordon/reload\n",
        modeline("cluster")
    )
}

fn nodes_yaml(found: &[Found]) -> String {
    let mut out = String::new();
    if found.is_empty() {
        let _ = write!(
            out,
            "{}# An example node: set its backend, URL, VRAM and models (or run `homeostat init --discover URL`).\n\
             apiVersion: homeostat.dev/v1\nkind: Node\nmetadata:\n  name: m1\nspec:\n  backend: lmstudio\n  \
             url: http://127.0.0.1:1234\n  vram: 24GiB\n  models:\n    - {{ name: qwen/qwen3-8b, size: 6GiB, contextLength: 8192 }}\n",
            modeline("node")
        );
        return out;
    }
    for (i, f) in found.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        out.push_str(&modeline("node"));
        let _ = writeln!(out, "# Discovered: {} at {}.", f.detail, f.url);
        let total: u64 = f.models.iter().map(|m| m.1.unwrap_or(UNKNOWN_SIZE)).sum();
        let vram = (total.div_ceil(1 << 30) + 1).max(8);
        let _ = write!(
            out,
            "apiVersion: homeostat.dev/v1\nkind: Node\nmetadata:\n  name: {}\nspec:\n  backend: {}\n  url: {}\n  \
             vram: {vram}GiB   # a guess from the models' sizes: set the GPU's memory\n  models:\n",
            f.name,
            f.backend,
            yaml_str(&f.url)
        );
        if f.models.is_empty() {
            out.push_str("    [] # nothing is loaded: list the models this node must serve\n");
        }
        for (name, bytes, ctx) in &f.models {
            let _ = write!(
                out,
                "    - name: {}\n      size: {}",
                yaml_str(name),
                size(bytes.unwrap_or(UNKNOWN_SIZE))
            );
            if bytes.is_none() {
                out.push_str("   # the server does not tell: set the model's memory");
            }
            out.push('\n');
            if let Some(c) = ctx {
                let _ = writeln!(out, "      contextLength: {c}");
            }
        }
        if !f.available.is_empty() {
            let _ = writeln!(out, "  # also downloaded: {}", f.available.join(", "));
        }
    }
    out
}

fn routing_yaml(found: &[Found]) -> String {
    let names: Vec<&str> = if found.is_empty() {
        vec!["m1"]
    } else {
        found.iter().filter(|f| !f.models.is_empty()).map(|f| f.name.as_str()).collect()
    };
    let mut out = format!(
        "{}# Where each category of traffic goes, most preferred first.\n\
         apiVersion: homeostat.dev/v1\nkind: Routing\nmetadata:\n  name: routes\nspec:\n  categories:\n    general:\n",
        modeline("routing")
    );
    if names.is_empty() {
        out.push_str("      []\n");
    }
    for n in names {
        let _ = writeln!(out, "      - {{ node: {n}, weight: 1.0 }}");
    }
    out
}
