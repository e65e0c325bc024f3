//! How a long run reports progress without knowing who is watching.

/// Receives progress of a run; the CLI draws a bar, tests and libraries pass [`NoProgress`].
pub trait Progress: Send + Sync {
    /// A new phase starts (`total` units, 0 when unknown).
    fn phase(&self, name: &str, total: u64);
    /// `n` more units of the current phase are done.
    fn advance(&self, n: u64);
    /// Something the user should know (fewer rows than asked, suspicious data, ...).
    fn warn(&self, message: &str);
}

/// Discards progress; warnings go to `tracing`.
pub struct NoProgress;

impl Progress for NoProgress {
    fn phase(&self, _: &str, _: u64) {}
    fn advance(&self, _: u64) {}
    fn warn(&self, message: &str) {
        tracing::warn!("{message}");
    }
}
