//! `--watch`: a sweep that keeps its results up to date as checkpoints appear.
//!
//! Each round re-reads the spec (an edited spec takes effect at the next round; a broken edit is
//! reported and the last good spec kept), plans with the spec's settle time (files modified less
//! than `settle_seconds` ago are still being written), runs what is missing, and sleeps. A run that
//! failed is not tried again until one of its inputs changes, so that a bad file does not fail
//! every round.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lidscope_data::InputStamp;

use crate::error::Result;
use crate::execute::{execute, Observer, Outcome, Runner};
use crate::plan::{plan, stamps, Plan, Status};
use crate::spec::Spec;

/// What a round saw and did, for the caller to report.
pub struct Round<'a> {
    /// The plan of the round.
    pub plan: &'a Plan,
    /// What was run.
    pub outcome: &'a Outcome,
    /// Pending runs left alone because they failed before with the same inputs.
    pub held: usize,
}

/// Watches until `stop` is set: every `interval`, plans the spec at `path` and runs what is
/// missing. `on_round` hears each round; `on_spec_error` hears a spec that no longer loads.
///
/// # Errors
/// The spec does not load at the first round.
pub fn watch(
    path: &Path,
    runner: &dyn Runner,
    observer: &dyn Observer,
    stop: &AtomicBool,
    interval: Duration,
    on_round: &mut dyn FnMut(Round<'_>),
    on_spec_error: &mut dyn FnMut(String),
) -> Result<()> {
    let mut spec = Spec::load(path)?;
    let mut failed: HashMap<String, Vec<InputStamp>> = HashMap::new();
    while !stop.load(Ordering::SeqCst) {
        let started = Instant::now();
        match Spec::load(path) {
            Ok(s) => spec = s,
            Err(e) => on_spec_error(format!("{e} (keeping the spec as it was)")),
        }
        match plan(&spec, Some(Duration::from_secs(spec.settle_seconds))) {
            Ok(mut p) => {
                // Runs that failed with these very inputs wait for a change.
                let mut held = 0;
                for (run, status) in &mut p.runs {
                    if status.pending() {
                        if let (Some(before), Ok(now)) = (failed.get(&run.label()), stamps(run)) {
                            if *before == now {
                                *status = Status::Waiting("failed before with these inputs".into());
                                held += 1;
                            }
                        }
                    }
                }
                let outcome = execute(&spec, &p, runner, observer, stop);
                for (label, _) in &outcome.failed {
                    if let Some((run, _)) = p.runs.iter().find(|(r, _)| r.label() == *label) {
                        failed.insert(label.clone(), stamps(run).unwrap_or_default());
                    }
                }
                for label in &outcome.committed {
                    failed.remove(label);
                }
                on_round(Round { plan: &p, outcome: &outcome, held });
            }
            Err(e) => on_spec_error(e.to_string()),
        }
        while !stop.load(Ordering::SeqCst) && started.elapsed() < interval {
            std::thread::sleep(Duration::from_millis(100).min(interval));
        }
    }
    Ok(())
}
