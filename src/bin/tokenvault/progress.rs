//! Progress on stderr for long runs, and only where a person is watching.
//!
//! Invariant: when stderr is not a terminal (scripts, CI, tests) nothing is drawn, so
//! stderr carries only the one-line error, if any.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// Below this many tokens a run is too short to need a bar.
pub const THRESHOLD: usize = 2_000;

/// A bar over `len` steps: drawn if `len` exceeds [`THRESHOLD`] and stderr is a terminal.
pub fn bar(len: usize, message: &'static str) -> ProgressBar {
    if len <= THRESHOLD || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let style = ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({eta} left)")
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    let bar = ProgressBar::new(len as u64)
        .with_style(style)
        .with_message(message);
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// A spinner for work of unknown length: drawn if stderr is a terminal.
pub fn spinner(message: &'static str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner().with_message(message);
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}
