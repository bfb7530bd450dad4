//! The model arena (R6): is a candidate model (or the same model with other settings) better
//! than the one a node runs now, its champion?
//!
//! One round, [`run_arena`]:
//! 1. **Take the node.** The node's remembered state gets an `ArenaMark` (candidate, the
//!    champion's configuration, a lease `until`) and the `arena` cordon, persisted *before* the
//!    node is touched; `routes.json` is republished without it. While the lease runs the planner
//!    leaves the node alone and routes no traffic to it; the arena renews the lease every third
//!    of `cluster.arena.lease` while it runs.
//! 2. **The champion's score.** Its stored score when it was scored on the same suite with the
//!    same configuration; else the champion is measured now, still loaded (a baseline arena
//!    run), so the comparison is always like for like.
//! 3. **The candidate.** Unload the champion, settle (`heal.unloadSettle`), load the candidate
//!    with its settings (pinned), `arena.warmups` warm-up requests (not counted), the suite for
//!    `arena.cycles` cycles (`--quick`: `arena.quickCycles`), score, record (kind `arena`).
//! 4. **The verdict.** Strictly better than the champion's score (at two decimals,
//!    `history::better`) → the candidate is the new
//!    champion (recorded; its configuration becomes the node's last-known-good) and stays
//!    loaded; the manifest's primary is remembered as superseded (`NodeMemory::rolled_back`, the
//!    planner's override for a rollback), so reconcile keeps the new champion as the node's
//!    primary until the manifest is edited, and does not load the declared one back. Otherwise, or when the candidate failed to load, or when interrupted: unload the
//!    candidate, load the champion and verify it with the verification suite.
//! 5. **Give the node back.** Mark and cordon cleared, `routes.json` republished, the arena
//!    series assessed for regressions.
//!
//! **Crash safety.** If the process dies at any point, the mark stays with a lease that is no
//! longer renewed; the first reconcile after it expires restores the champion (the planner's
//! `RestoreChampion` heal: unload the candidate, load the manifest's primary, verify). If
//! restoring fails here (the champion does not load or verify), the arena expires its own lease
//! at once and leaves the cordon, so the next reconcile takes over the same way.
//!
//! **Who may call it.** The caller holds the run lock (the CLI), or is the daemon acting on this
//! node in its own task: nothing else may act on the node meanwhile.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use serde_json::json;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use super::candidate::config_of;
use super::history::{Assessment, Champion, RunKind, RunRecord};
use super::node::{BenchEnv, BenchError, apply_assessment, client_for, events, pick_suite};
use super::run::{Progress, RunOptions, run_suite};
use crate::bench::verify::{NodeTarget, VerifyReport, verify_model};
use crate::observe::driver::{self, NodeClient};
use crate::observe::snapshot::{InstanceState, Reach};
use crate::plan::memory::{ArenaMark, CordonReason, ModelConfig, NodeMemory};
use crate::plan::{PlanInput, plan};
use crate::record::Recorder;
use crate::store::StoreError;

/// One round of the arena.
#[derive(Debug, Clone)]
pub struct ArenaRequest {
    pub node: String,
    /// The candidate, with the settings to load it with (`candidate::candidate_config`).
    pub candidate: ModelConfig,
    /// The suite; else the node's `benchmark.suite`, else the verification suite.
    pub suite: Option<String>,
    /// `arena.quickCycles` cycles instead of `arena.cycles`.
    pub quick: bool,
}

/// Why a round could not start, or could not end cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ArenaError {
    #[error(transparent)]
    Setup(#[from] BenchError),
    #[error("node {node} cannot be reached ({cause}); the arena needs a healthy node")]
    Unreachable { node: String, cause: String },
    #[error(
        "the champion of {node} ({model}) is not loaded; run `homeostat reconcile --once` first, so there is a known-good state to come back to"
    )]
    ChampionNotLoaded { node: String, model: String },
    #[error("node {node} has no model to defend (no `models:` in its manifest)")]
    NoChampion { node: String },
    #[error("{model} with these settings is already the champion of {node}")]
    SameAsChampion { node: String, model: String },
    #[error("cannot record the arena in the state store")]
    Store(#[from] StoreError),
}

/// How a round ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "verdict", rename_all = "kebab-case")]
pub enum Verdict {
    /// The candidate scored strictly better: it is the new champion and stays loaded.
    Promoted,
    /// The candidate did not beat the champion, which was restored.
    Kept,
    /// The candidate could not be measured (its load failed, or the champion could not be
    /// unloaded); the champion was restored.
    CandidateFailed { why: String },
    /// Cancelled (Ctrl-C, shutdown); the champion was restored.
    Interrupted,
}

/// Whether the champion is back after a round it did not lose to the candidate.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "restore", rename_all = "kebab-case")]
pub enum Restore {
    /// Nothing to restore: the candidate won (or the node was never touched and still runs the
    /// champion untouched).
    NotNeeded,
    /// Loaded again and verified.
    Verified { report: VerifyReport },
    /// Not restored here; the next reconcile restores it (the arena's lease was expired).
    Failed { error: String },
}

/// What one round did.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ArenaReport {
    pub node: String,
    pub suite: String,
    pub champion: ModelConfig,
    /// The champion's score the candidate had to beat.
    pub champion_score: Option<f64>,
    /// The champion's run when it was measured in this round (no comparable stored score).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub champion_run: Option<RunRecord>,
    pub candidate: ModelConfig,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidate_run: Option<RunRecord>,
    #[serde(flatten)]
    pub verdict: Verdict,
    #[serde(flatten)]
    pub restore: Restore,
    pub assessment: Assessment,
}

/// A step of the round, for a progress display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Measuring the champion (no comparable score stored).
    Baseline {
        model: String,
    },
    Unload {
        model: String,
    },
    Settle {
        ms: u64,
    },
    Load {
        model: String,
    },
    /// Warm-ups and the counted suite of `model`.
    Suite {
        model: String,
    },
    /// Putting the champion back.
    Restore {
        model: String,
    },
    Verify {
        model: String,
    },
}

/// Receives the progress of a round (the CLI draws a progress bar).
pub trait ArenaProgress: Send {
    fn phase(&mut self, phase: &Phase);
    fn request(&mut self, progress: &Progress<'_>);
}

/// A progress receiver that ignores everything (the daemon, tests).
pub struct Quiet;

impl ArenaProgress for Quiet {
    fn phase(&mut self, _: &Phase) {}
    fn request(&mut self, _: &Progress<'_>) {}
}

/// The node's remembered state while the arena holds it: every change goes through here, under
/// one lock, and is persisted before `update` returns, so the lease renewal and the round never
/// overwrite each other.
struct Held<'e, 'a> {
    env: &'e BenchEnv<'a>,
    node: String,
    memory: Mutex<NodeMemory>,
}

impl Held<'_, '_> {
    async fn update(&self, f: impl FnOnce(&mut NodeMemory)) -> Result<(), StoreError> {
        let mut m = self.memory.lock().await;
        f(&mut m);
        let (node, saved) = (self.node.clone(), m.clone());
        // Held across the write: the next update sees this one persisted.
        self.env.store(move |s| s.save_node(&node, &saved)).await
    }

    /// Extends the lease, if the arena still holds the node.
    async fn renew(&self, lease: Duration) -> Result<(), StoreError> {
        let until = self.env.clock.now() + lease;
        self.update(|m| {
            if let Some(a) = m.arena.as_mut() {
                a.until = until;
            }
        })
        .await
    }
}

/// Runs one round of the arena on `req.node`; `state_dir` is where `routes.json` is
/// republished. See the module docs for the steps and the guarantees.
pub async fn run_arena(
    env: &BenchEnv<'_>,
    state_dir: &Path,
    req: &ArenaRequest,
    progress: &mut dyn ArenaProgress,
) -> Result<ArenaReport, ArenaError> {
    let node = req.node.as_str();
    let desired = env.desired;
    let spec = desired.nodes.get(node).ok_or_else(|| BenchError::UnknownNode(node.into()))?;
    let (suite, compiled) = pick_suite(desired, spec, req.suite.as_deref())?;
    let client = client_for(desired, env.http, node, spec, Some(&req.candidate.model))?;
    let obs = client.observe(&[]).await;
    if let Reach::Down { cause } = &obs.reach {
        return Err(ArenaError::Unreachable { node: node.into(), cause: cause.to_string() });
    }
    let n = node.to_owned();
    let (memory, stored) =
        env.store(move |s| Ok((s.load_node(&n)?.unwrap_or_default(), s.champion(&n)?))).await?;
    let loaded = |m: &str| obs.instances_of(m).any(|i| i.state == InstanceState::Loaded);

    // The champion: the one crowned last, if it still runs here; else the manifest's primary.
    let crowned = stored
        .as_ref()
        .filter(|c| loaded(&c.model))
        .and_then(|c| serde_json::from_value::<ModelConfig>(c.config.clone()).ok());
    let champion = match crowned {
        Some(c) => c,
        None => {
            let primary = spec.primary().ok_or(ArenaError::NoChampion { node: node.into() })?;
            if !loaded(&primary.name) {
                return Err(ArenaError::ChampionNotLoaded {
                    node: node.into(),
                    model: primary.name.clone(),
                });
            }
            let mut c = config_of(primary);
            if let Some(ctx) = memory.context_overrides.get(&primary.name) {
                c.settings.context_length = Some(*ctx);
            }
            c
        }
    };
    if champion.model == req.candidate.model && champion.settings == req.candidate.settings {
        return Err(ArenaError::SameAsChampion { node: node.into(), model: champion.model });
    }
    let champion_score = stored
        .as_ref()
        .filter(|c| c.scored_on(&suite))
        .filter(|c| {
            serde_json::from_value::<ModelConfig>(c.config.clone()).ok().as_ref() == Some(&champion)
        })
        .map(|c| c.score);

    // 1. Take the node, persisted before anything touches it.
    let lease = desired.cluster.arena.lease.get().max(Duration::from_millis(30));
    let now = env.clock.now();
    let held = Held { env, node: node.to_owned(), memory: Mutex::new(memory) };
    let mark = ArenaMark {
        candidate: req.candidate.model.clone(),
        champion: Some(champion.clone()),
        started: now,
        until: now + lease,
    };
    held.update(|m| {
        m.arena = Some(mark);
        m.cordons.insert(CordonReason::Arena);
    })
    .await?;
    env.recorder().event(
        Some(node),
        events::ARENA_STARTED,
        json!({ "candidate": req.candidate, "champion": champion, "suite": suite,
                "championScore": champion_score, "leaseMs": lease.as_millis() as u64 }),
    );
    publish_routes(env, state_dir).await;

    // 2–4, with the lease renewed meanwhile.
    let stop = CancellationToken::new();
    let renewal = async {
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(lease / 3) => {
                    if let Err(e) = held.renew(lease).await {
                        tracing::error!(node, error = %crate::error::chain(&e), "cannot renew the arena's lease");
                    }
                }
            }
        }
    };
    let round = Round {
        env,
        client: &client,
        node,
        suite: &suite,
        compiled: &compiled,
        champion: &champion,
        candidate: &req.candidate,
        quick: req.quick,
    };
    let work = async {
        let r = round.play(champion_score, progress).await;
        let restore = match &r {
            Ok(Played { verdict: Verdict::Promoted, .. }) => Restore::NotNeeded,
            _ => round.restore(progress).await,
        };
        stop.cancel();
        (r, restore)
    };
    let ((played, restore), ()) = tokio::join!(work, renewal);

    // 5. Give the node back (or leave it to the next reconcile when restoring failed).
    let played = match played {
        Ok(p) => p,
        Err(e) => {
            // The store failed mid-round: leave the mark expired for the reconcile.
            let _ = held.update(|m| expire(m, env.clock.now())).await;
            return Err(e.into());
        }
    };
    let promoted = played.verdict == Verdict::Promoted;
    let when = env.clock.now();
    // The manifest's primary, which a promoted candidate supersedes until the manifest changes.
    let declared = spec.primary().map(config_of).filter(|d| *d != req.candidate);
    held.update(|m| match (&restore, promoted) {
        (_, true) => {
            release(m);
            m.last_known_good = Some(req.candidate.clone());
            // The planner's "rolled back" override: the node's effective primary is the
            // last-known-good while the manifest still declares exactly `declared`; editing the
            // manifest (or `--apply`) ends it.
            m.rolled_back = declared;
        }
        (Restore::Failed { .. }, false) => expire(m, when),
        _ => release(m),
    })
    .await?;
    if promoted && let Some(run) = &played.candidate_run {
        let c = Champion::from_run(run);
        env.store(move |s| s.save_champion(&c)).await?;
    }
    publish_routes(env, state_dir).await;
    let holder = if promoted { &req.candidate.model } else { &champion.model };
    let applied =
        apply_assessment(env, node, RunKind::Arena, std::slice::from_ref(holder), false).await?;
    let report = ArenaReport {
        node: node.to_owned(),
        suite,
        champion,
        champion_score: played.champion_score,
        champion_run: played.champion_run,
        candidate: req.candidate.clone(),
        candidate_run: played.candidate_run,
        verdict: played.verdict,
        restore,
        assessment: applied.assessment,
    };
    env.recorder().event(
        Some(node),
        events::ARENA_FINISHED,
        json!({
            "candidate": report.candidate.model,
            "verdict": report.verdict,
            "restore": match &report.restore {
                Restore::NotNeeded => "not-needed",
                Restore::Verified { .. } => "verified",
                Restore::Failed { .. } => "failed",
            },
            "championScore": report.champion_score,
            "candidateScore": report.candidate_run.as_ref().map(RunRecord::composite),
        }),
    );
    Ok(report)
}

/// The node is given back: no mark, no arena cordon.
fn release(m: &mut NodeMemory) {
    m.arena = None;
    m.cordons.remove(&CordonReason::Arena);
}

/// The round could not finish cleanly: the lease ends now, so the next reconcile restores the
/// champion (the cordon stays until it does).
fn expire(m: &mut NodeMemory, now: crate::time::Timestamp) {
    if let Some(a) = m.arena.as_mut() {
        a.until = now;
    }
}

/// Rewrites `routes.json` from a fresh observation and the remembered state (a plan that is
/// not executed): the node under arena is out while its mark holds, back once released.
async fn publish_routes(env: &BenchEnv<'_>, state_dir: &Path) {
    let memory = match env.store(|s| s.load_memory()).await {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(error = %crate::error::chain(&e), "cannot read remembered state; routes.json not updated");
            return;
        }
    };
    let overrides = |node: &str, model: &str| {
        memory.nodes.get(node).and_then(|m| m.context_overrides.get(model).copied())
    };
    let clock = env.clock;
    let observed =
        crate::observe::observe_all(env.desired, env.http, &overrides, &|| clock.now()).await;
    let out = plan(&PlanInput {
        desired: env.desired,
        observed: &observed,
        memory: &memory,
        now: clock.now(),
        focus: None,
        known: None,
    });
    crate::record::write_routes(state_dir, &out.plan, &env.recorder());
}

/// The measured part of a round.
struct Played {
    verdict: Verdict,
    champion_score: Option<f64>,
    champion_run: Option<RunRecord>,
    candidate_run: Option<RunRecord>,
}

struct Round<'r, 'a> {
    env: &'r BenchEnv<'a>,
    client: &'r NodeClient,
    node: &'r str,
    suite: &'r str,
    compiled: &'r super::score::CompiledSuite,
    champion: &'r ModelConfig,
    candidate: &'r ModelConfig,
    quick: bool,
}

impl Round<'_, '_> {
    fn cluster(&self) -> &crate::desired::ClusterSpec {
        &self.env.desired.cluster
    }

    /// Measures `model` (already loaded) and records the run; None when cancelled.
    async fn measure(
        &self,
        config: &ModelConfig,
        progress: &mut dyn ArenaProgress,
    ) -> Result<Option<RunRecord>, StoreError> {
        let options = RunOptions::arena(&self.cluster().arena, self.quick);
        let run = run_suite(
            &NodeTarget(self.client),
            &config.model,
            self.compiled,
            options,
            &self.env.cancel,
            &mut |p| progress.request(&p),
        )
        .await;
        if run.cancelled {
            return Ok(None);
        }
        let record = RunRecord::new(
            RunKind::Arena,
            self.node,
            self.suite,
            serde_json::to_value(config).unwrap_or_default(),
            self.env.clock.now(),
            &run,
        );
        let (r, keep) = (record.clone(), self.cluster().history.keep);
        self.env.store(move |s| s.append_run(&r, keep)).await?;
        super::node::record_run_event(self.env, &record);
        Ok(Some(record))
    }

    /// Steps 2–4: the champion's score, the candidate's run, the verdict. Leaves the node as it
    /// is (the caller restores the champion unless promoted).
    async fn play(
        &self,
        stored_score: Option<f64>,
        progress: &mut dyn ArenaProgress,
    ) -> Result<Played, StoreError> {
        let mut played = Played {
            verdict: Verdict::Interrupted,
            champion_score: stored_score,
            champion_run: None,
            candidate_run: None,
        };
        let cancel = &self.env.cancel;
        if stored_score.is_none() {
            progress.phase(&Phase::Baseline { model: self.champion.model.clone() });
            let Some(run) = self.measure(self.champion, progress).await? else {
                return Ok(played);
            };
            let c = Champion::from_run(&run);
            self.env.store(move |s| s.save_champion(&c)).await?;
            played.champion_score = Some(run.composite());
            played.champion_run = Some(run);
        }
        if cancel.is_cancelled() {
            return Ok(played);
        }

        // Unload every instance of the champion (and of the candidate, if a copy is loaded with
        // other settings), then settle.
        let heal = &self.cluster().heal;
        let obs = self.client.observe(&[]).await;
        for inst in obs
            .instances
            .iter()
            .filter(|i| i.model == self.champion.model || i.model == self.candidate.model)
        {
            progress.phase(&Phase::Unload { model: inst.model.clone() });
            if let Err(e) = self.client.unload(&inst.model, &inst.id, heal.load_timeout.get()).await
            {
                played.verdict = Verdict::CandidateFailed {
                    why: format!("cannot unload {}: {}", inst.model, crate::error::chain(&e)),
                };
                return Ok(played);
            }
        }
        let settle = heal.unload_settle.get();
        progress.phase(&Phase::Settle { ms: settle.as_millis() as u64 });
        tokio::select! {
            () = tokio::time::sleep(settle) => {}
            () = cancel.cancelled() => return Ok(played),
        }

        progress.phase(&Phase::Load { model: self.candidate.model.clone() });
        let settings = load_settings(self.candidate);
        let load = self.client.load(&settings, heal.load_timeout.get());
        let loaded = tokio::select! {
            r = load => r,
            () = cancel.cancelled() => return Ok(played),
        };
        if let Err(e) = loaded {
            played.verdict = Verdict::CandidateFailed {
                why: format!(
                    "{} failed to load: {}",
                    self.candidate.model,
                    crate::error::chain(&e)
                ),
            };
            return Ok(played);
        }

        progress.phase(&Phase::Suite { model: self.candidate.model.clone() });
        let Some(run) = self.measure(self.candidate, progress).await? else {
            return Ok(played);
        };
        let beaten = played
            .champion_score
            .is_none_or(|score| super::history::better(run.composite(), score));
        played.verdict = if beaten { Verdict::Promoted } else { Verdict::Kept };
        played.candidate_run = Some(run);
        Ok(played)
    }

    /// Puts the champion back: unload the candidate, settle, load the champion (pinned) if it is
    /// not loaded, verify it. Not cancellable: an interrupted arena restores before it exits.
    async fn restore(&self, progress: &mut dyn ArenaProgress) -> Restore {
        let heal = &self.cluster().heal;
        let champion = &self.champion.model;
        let obs = self.client.observe(&[]).await;
        if let Reach::Down { cause } = &obs.reach {
            return Restore::Failed { error: format!("the node cannot be reached ({cause})") };
        }
        // A candidate that is the champion's model with other settings: reload it as champion.
        let same_model = self.candidate.model == *champion;
        let mut unloaded = false;
        for inst in obs.instances.iter().filter(|i| i.model == self.candidate.model) {
            progress.phase(&Phase::Unload { model: inst.model.clone() });
            if let Err(e) = self.client.unload(&inst.model, &inst.id, heal.load_timeout.get()).await
            {
                return Restore::Failed {
                    error: format!("cannot unload {}: {}", inst.model, crate::error::chain(&e)),
                };
            }
            unloaded = true;
        }
        let champion_loaded =
            !same_model && obs.instances_of(champion).any(|i| i.state == InstanceState::Loaded);
        if !champion_loaded {
            if unloaded {
                let settle = heal.unload_settle.get();
                progress.phase(&Phase::Settle { ms: settle.as_millis() as u64 });
                tokio::time::sleep(settle).await;
            }
            progress.phase(&Phase::Restore { model: champion.clone() });
            if let Err(e) =
                self.client.load(&load_settings(self.champion), heal.load_timeout.get()).await
            {
                return Restore::Failed {
                    error: format!(
                        "cannot load the champion {champion}: {}",
                        crate::error::chain(&e)
                    ),
                };
            }
        }
        progress.phase(&Phase::Verify { model: champion.clone() });
        let (vname, vsuite) = self.env.desired.verification_suite();
        let pass_ratio = self.cluster().verification.pass_ratio.0;
        let report = verify_model(self.client, champion, vname, vsuite, pass_ratio).await;
        if report.passed {
            Restore::Verified { report }
        } else {
            Restore::Failed {
                error: format!(
                    "the champion {champion} is loaded but failed verification: {}",
                    report.summary()
                ),
            }
        }
    }
}

/// A configuration as the driver's load request, pinned (neither the candidate nor the
/// restored champion may be unloaded for idleness while the arena measures it).
fn load_settings(c: &ModelConfig) -> driver::LoadSettings {
    driver::LoadSettings {
        model: c.model.clone(),
        context_length: c.settings.context_length,
        flash_attention: c.settings.flash_attention,
        eval_batch_size: c.settings.eval_batch_size,
        num_experts: c.settings.num_experts,
        offload_kv_cache_to_gpu: c.settings.offload_kv_cache_to_gpu,
        keep_alive: driver::KeepAlive::Pinned,
    }
}
