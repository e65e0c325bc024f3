//! Running a plan's pending runs, locally or on a cluster, through one [`Runner`] interface.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use lidscope_engine::{NoProgress, Progress, RunConfig, RunSummary};

use crate::plan::{Plan, PlannedRun, Status};
use crate::samples::{self, SampleGroup};
use crate::spec::Spec;

/// Executes one run. The local runner calls [`lidscope_engine::run`]; the binary adds one that
/// submits to a cluster's coordinator.
pub trait Runner: Sync {
    /// Runs `cfg` to its commit, reporting to `progress`.
    ///
    /// # Errors
    /// The run's error, as the person reading the sweep's output should see it.
    fn run(&self, cfg: &RunConfig, progress: &dyn Progress) -> std::result::Result<RunSummary, String>;

    /// Runs executed at the same time: 1 locally (each run uses every core), more on a cluster.
    fn in_flight(&self) -> usize {
        1
    }
}

/// Runs on this machine, one at a time.
pub struct LocalRunner;

impl Runner for LocalRunner {
    fn run(&self, cfg: &RunConfig, progress: &dyn Progress) -> std::result::Result<RunSummary, String> {
        lidscope_engine::run(cfg, progress).map_err(|e| e.to_string())
    }
}

/// Hears what a sweep does, for progress bars and logs.
pub trait Observer: Sync {
    /// A run starts; the returned progress receives its phases.
    fn started(&self, run: &PlannedRun, status: &Status) -> Box<dyn Progress + '_>;
    /// A run ended (its error if it failed).
    fn finished(&self, run: &PlannedRun, result: &std::result::Result<RunSummary, String>);
}

/// An observer that hears nothing.
pub struct Silent;

impl Observer for Silent {
    fn started(&self, _: &PlannedRun, _: &Status) -> Box<dyn Progress + '_> {
        Box::new(NoProgress)
    }
    fn finished(&self, _: &PlannedRun, _: &std::result::Result<RunSummary, String>) {}
}

/// What a sweep did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Runs committed.
    pub committed: Vec<String>,
    /// Runs that failed, with their errors.
    pub failed: Vec<(String, String)>,
    /// Runs not started because the sweep was asked to stop.
    pub not_started: usize,
}

/// Runs the pending runs of `plan` with `runner` (a changed run replaces its committed result),
/// until done or until `stop` is set (runs in flight then finish; none is left half-committed).
/// A failed run does not stop the others. Shared samples are drawn first, from each group's
/// anchor (its first run in partition order).
pub fn execute(spec: &Spec, plan: &Plan, runner: &dyn Runner, observer: &dyn Observer, stop: &AtomicBool) -> Outcome {
    let mut outcome = Outcome::default();
    let pending: Vec<&(PlannedRun, Status)> = plan.pending().collect();

    // Each group's sample, drawn once, from the group's first run whose files are complete.
    let mut samples: BTreeMap<SampleGroup, std::result::Result<(), String>> = BTreeMap::new();
    for (run, _) in &pending {
        let Some(group) = &run.group else { continue };
        if samples.contains_key(group) {
            continue;
        }
        let anchor = plan
            .runs
            .iter()
            .find(|(r, s)| r.group.as_ref() == Some(group) && !matches!(s, Status::Waiting(_)))
            .map(|(r, _)| r)
            .unwrap_or(run);
        let drawn = samples::ensure(spec, group, anchor).map(|_| ()).map_err(|e| format!("the shared sample of {} (from {}): {e}", group.label(), anchor.label()));
        samples.insert(group.clone(), drawn);
    }

    let queue: Mutex<VecDeque<&(PlannedRun, Status)>> = Mutex::new(pending.into_iter().collect());
    let results: Mutex<Vec<(String, std::result::Result<RunSummary, String>)>> = Mutex::new(Vec::new());
    let not_started = Mutex::new(0usize);
    std::thread::scope(|scope| {
        for _ in 0..runner.in_flight().max(1) {
            scope.spawn(|| loop {
                let Some((run, status)) = queue.lock().expect("queue poisoned").pop_front() else { break };
                if stop.load(Ordering::SeqCst) {
                    *not_started.lock().expect("count poisoned") += 1;
                    continue;
                }
                let sample = run.group.as_ref().and_then(|g| samples.get(g)).cloned().unwrap_or(Ok(()));
                let result = match sample {
                    Err(e) => Err(e),
                    Ok(()) => {
                        let cfg = run.config(spec, matches!(status, Status::Changed(_)));
                        let progress = observer.started(run, status);
                        runner.run(&cfg, progress.as_ref())
                    }
                };
                observer.finished(run, &result);
                results.lock().expect("results poisoned").push((run.label(), result));
            });
        }
    });
    for (label, result) in results.into_inner().expect("results poisoned") {
        match result {
            Ok(_) => outcome.committed.push(label),
            Err(e) => outcome.failed.push((label, e)),
        }
    }
    outcome.not_started = not_started.into_inner().expect("count poisoned");
    outcome
}
