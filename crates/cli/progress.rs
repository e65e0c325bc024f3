//! The terminal progress bar: drawn on stderr only when it is a terminal.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use lidscope_engine::Progress;

/// An indicatif bar behind the engine's [`Progress`] trait.
pub struct Bar {
    bar: ProgressBar,
}

impl Bar {
    /// A bar on stderr, hidden when stderr is not a terminal or `quiet` is set.
    pub fn new(quiet: bool) -> Self {
        let target = if quiet || !std::io::stderr().is_terminal() { ProgressDrawTarget::hidden() } else { ProgressDrawTarget::stderr() };
        let bar = ProgressBar::with_draw_target(None, target);
        bar.set_style(ProgressStyle::with_template("{spinner} {msg} {elapsed}").expect("valid template"));
        Self { bar }
    }

    /// A bar drawn among others (runs in flight at the same time), labelled `prefix`.
    pub fn in_multi(multi: &indicatif::MultiProgress, prefix: &str) -> Self {
        let bar = multi.add(ProgressBar::no_length());
        bar.set_prefix(prefix.to_string());
        bar.set_style(ProgressStyle::with_template("{prefix} {spinner} {msg} {elapsed}").expect("valid template"));
        Self { bar }
    }

    /// Removes the bar from the screen.
    pub fn clear(&self) {
        self.bar.finish_and_clear();
    }
}

impl Progress for Bar {
    fn phase(&self, name: &str, total: u64) {
        self.bar.reset();
        self.bar.disable_steady_tick();
        if total > 0 {
            self.bar.set_length(total);
            self.bar.set_style(
                ProgressStyle::with_template("{prefix}{msg:>10} [{bar:40}] {human_pos}/{human_len} rows, {elapsed} elapsed, eta {eta}")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
        } else {
            self.bar.set_style(ProgressStyle::with_template("{prefix}{spinner} {msg} {elapsed}").expect("valid template"));
            self.bar.enable_steady_tick(std::time::Duration::from_millis(120));
        }
        self.bar.set_message(name.to_string());
    }

    fn advance(&self, n: u64) {
        self.bar.inc(n);
    }

    fn warn(&self, message: &str) {
        self.bar.suspend(|| tracing::warn!("{message}"));
    }
}
