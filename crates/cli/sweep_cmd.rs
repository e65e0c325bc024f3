//! `lidscope sweep`: flags and signals around `lidscope-sweep`.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use indicatif::{MultiProgress, ProgressDrawTarget};
use lidscope_engine::{Progress, RunConfig, RunSummary};
use lidscope_sweep::{execute, plan, LocalRunner, Observer, PlannedRun, Runner, Spec, Status};
use serde_json::json;

use crate::args::SweepArgs;
use crate::progress::Bar;

/// Submits runs to a coordinator, several at once; a stop request cancels the runs in flight
/// (their committed shards stay for the next sweep).
struct ClusterRunner {
    access: lidscope_cluster::client::Access,
    in_flight: usize,
    stop: Arc<AtomicBool>,
}

impl Runner for ClusterRunner {
    fn run(&self, cfg: &RunConfig, progress: &dyn Progress) -> std::result::Result<RunSummary, String> {
        let spec = lidscope_cluster::client::to_spec(cfg, 0).map_err(|e| e.to_string())?;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
        let stop = self.stop.clone();
        let interrupt = async move {
            while !stop.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };
        rt.block_on(lidscope_cluster::client::run(&self.access, spec, progress, interrupt)).map_err(|e| e.to_string())
    }

    fn in_flight(&self) -> usize {
        self.in_flight
    }
}

/// Progress bars per run, a line per finished run on stdout (JSON with `--json`).
struct Report {
    multi: MultiProgress,
    json: bool,
    quiet: bool,
}

impl Observer for Report {
    fn started(&self, run: &PlannedRun, status: &Status) -> Box<dyn Progress + '_> {
        let why = match status {
            Status::Changed(r) => format!(" ({r})"),
            _ => String::new(),
        };
        if !self.quiet {
            let _ = self.multi.println(format!("lidscope sweep: running {}{why}", run.label()));
        }
        Box::new(Bar::in_multi(&self.multi, &format!("{} ", run.label())))
    }

    fn finished(&self, run: &PlannedRun, result: &std::result::Result<RunSummary, String>) {
        if self.quiet && !self.json && result.is_ok() {
            return;
        }
        let line = match (self.json, result) {
            (true, Ok(s)) => json!({"run": partition(run), "status": "committed", "rows": s.manifest.rows, "mean_lid": s.manifest.mean_lid,
                "global_twonn": s.manifest.global_twonn, "seconds": s.manifest.elapsed_seconds}).to_string(),
            (true, Err(e)) => json!({"run": partition(run), "status": "failed", "error": e}).to_string(),
            (false, Ok(s)) => format!("committed {}: {} rows, mean LID {:.4} in {:.1} s", run.label(), s.manifest.rows, s.manifest.mean_lid, s.manifest.elapsed_seconds),
            (false, Err(e)) => format!("failed    {}: {e}", run.label()),
        };
        self.multi.suspend(|| {
            println!("{line}");
            let _ = std::io::stdout().flush();
        });
    }
}

fn partition(run: &PlannedRun) -> serde_json::Value {
    serde_json::Value::Object(run.partition.iter().map(|(k, v)| (k.clone(), json!(v))).collect())
}

/// Sets `stop` at the first SIGINT/SIGTERM; the second ends the process at once (nothing
/// half-done is committed either way: runs commit atomically).
fn stop_on_signals(stop: Arc<AtomicBool>, what: &'static str) {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a signal runtime");
        rt.block_on(async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("a SIGTERM handler");
            for _ in 0..2 {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
                if stop.swap(true, Ordering::SeqCst) {
                    eprintln!("lidscope sweep: stopping now");
                    std::process::exit(130);
                }
                eprintln!("lidscope sweep: stopping after {what} (again to stop at once; nothing half-done is committed)");
            }
        });
    });
}

pub fn main(a: &SweepArgs, quiet: bool) -> Result<()> {
    crate::cluster_cmd::tls_needs_cluster(&a.tls, a.cluster.as_deref())?;
    let spec = Spec::load(&a.spec)?;
    if a.dry_run {
        return dry_run(&spec, a);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let runner: Box<dyn Runner> = match &a.cluster {
        Some(url) => Box::new(ClusterRunner {
            access: crate::cluster_cmd::access(url, a.token_file.as_deref(), &a.tls)?,
            in_flight: a.runs_in_flight as usize,
            stop: stop.clone(),
        }),
        None => Box::new(LocalRunner),
    };
    let target = if quiet || !std::io::stderr().is_terminal() { ProgressDrawTarget::hidden() } else { ProgressDrawTarget::stderr() };
    let observer = Report { multi: MultiProgress::with_draw_target(target), json: a.json, quiet };
    stop_on_signals(stop.clone(), "the runs in flight");
    let body = || -> Result<()> {
        if a.watch {
            return watch(a, runner.as_ref(), &observer, &stop, quiet);
        }
        let p = plan(&spec, None)?;
        if p.runs.is_empty() {
            bail!("{}: no pattern matched any file ({})", a.spec.display(), patterns(&spec, &p.unmatched));
        }
        for i in &p.unmatched {
            eprintln!("lidscope sweep: warning: [[corpus]] block {} ({}) matched nothing", i + 1, spec.corpora[*i].pattern.text());
        }
        let pending = p.pending().count();
        if pending == 0 {
            summary(a, quiet, &format!("nothing to run: all {} runs are up to date", p.runs.len()), json!({"runs": p.runs.len(), "ran": 0}));
            return Ok(());
        }
        let outcome = execute(&spec, &p, runner.as_ref(), &observer, &stop);
        let done = p.runs.len() - pending;
        let mut text = format!("{} runs: {} committed now, {done} already up to date", p.runs.len(), outcome.committed.len());
        if !outcome.failed.is_empty() {
            text.push_str(&format!(", {} failed", outcome.failed.len()));
        }
        if outcome.not_started > 0 {
            text.push_str(&format!(", {} not started (stopped; the same command goes on)", outcome.not_started));
        }
        summary(a, quiet, &text, json!({"runs": p.runs.len(), "ran": outcome.committed.len(), "failed": outcome.failed.len(), "not_started": outcome.not_started}));
        if !outcome.failed.is_empty() {
            bail!("{} run(s) failed: {}", outcome.failed.len(), outcome.failed.iter().map(|(l, _)| l.as_str()).collect::<Vec<_>>().join("; "));
        }
        if outcome.not_started > 0 {
            bail!("stopped before {} run(s)", outcome.not_started);
        }
        Ok(())
    };
    crate::run_cmd::with_threads(a.threads, body)
}

fn patterns(spec: &Spec, blocks: &[usize]) -> String {
    blocks.iter().map(|i| format!("line {}: {}", spec.corpora[*i].line, spec.corpora[*i].pattern.text())).collect::<Vec<_>>().join("; ")
}

/// The final line: text on stdout, or one JSON object with `--json`.
fn summary(a: &SweepArgs, quiet: bool, text: &str, value: serde_json::Value) {
    match (a.json, quiet) {
        (true, _) => println!("{}", json!({"summary": value})),
        (false, false) => println!("lidscope sweep: {text}"),
        (false, true) => {}
    }
}

fn dry_run(spec: &Spec, a: &SweepArgs) -> Result<()> {
    let p = plan(spec, a.watch.then(|| Duration::from_secs(spec.settle_seconds)))?;
    for (run, status) in &p.runs {
        let reason = match status {
            Status::Changed(r) | Status::Waiting(r) => r.clone(),
            Status::New => format!("{} input path(s)", run.files.len()),
            Status::Done => String::new(),
        };
        match a.json {
            true => println!("{}", json!({"run": partition(run), "status": status.name(), "reason": reason, "files": run.files})),
            false => println!("{:<8} {}{}", status.name(), run.label(), if reason.is_empty() { String::new() } else { format!("  ({reason})") }),
        }
    }
    for i in &p.unmatched {
        eprintln!("lidscope sweep: warning: [[corpus]] block {} ({}) matched nothing", i + 1, spec.corpora[*i].pattern.text());
    }
    let counts = p.counts();
    let text = counts.iter().map(|(k, v)| format!("{v} {k}")).collect::<Vec<_>>().join(", ");
    if !a.json {
        eprintln!("lidscope sweep: {} runs: {}", p.runs.len(), if text.is_empty() { "none".into() } else { text });
    }
    if p.runs.is_empty() {
        bail!("{}: no pattern matched any file ({})", a.spec.display(), patterns(spec, &p.unmatched));
    }
    Ok(())
}

fn watch(a: &SweepArgs, runner: &dyn Runner, observer: &Report, stop: &AtomicBool, quiet: bool) -> Result<()> {
    let interval = Duration::from_secs(a.interval);
    let mut on_round = |r: lidscope_sweep::Round<'_>| {
        let (ran, failed) = (r.outcome.committed.len(), r.outcome.failed.len());
        let waiting = r.plan.runs.iter().filter(|(_, s)| matches!(s, Status::Waiting(_))).count() - r.held;
        if ran + failed > 0 || !quiet {
            let line = format!(
                "{} runs: {ran} committed now, {failed} failed, {waiting} waiting for their files, {} held after a failure; next look in {} s",
                r.plan.runs.len(),
                r.held,
                a.interval
            );
            match a.json {
                true => println!("{}", json!({"round": {"runs": r.plan.runs.len(), "ran": ran, "failed": failed, "waiting": waiting, "held": r.held}})),
                false => observer.multi.suspend(|| eprintln!("lidscope sweep: {line}")),
            }
        }
    };
    let mut on_error = |m: String| eprintln!("lidscope sweep: warning: {m}");
    lidscope_sweep::watch(&a.spec, runner, observer, stop, interval, &mut on_round, &mut on_error).with_context(|| format!("watching {}", a.spec.display()))?;
    eprintln!("lidscope sweep: stopped");
    Ok(())
}
