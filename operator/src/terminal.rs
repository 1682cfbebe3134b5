//! Progress on a terminal: a bar when stderr is one, nothing otherwise.

use std::io::IsTerminal;

use indicatif::ProgressStyle;
use wasmover_host::{Event, Observer, Progress};

/// Draws the receiving side's progress.
pub struct ProgressBar(Option<indicatif::ProgressBar>);

impl ProgressBar {
    /// A bar when stderr is a terminal, nothing otherwise.
    pub fn on_stderr() -> Self {
        if !std::io::stderr().is_terminal() {
            return Self(None);
        }
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} {msg}",
            )
            .expect("valid template"),
        );
        Self(Some(bar))
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}

impl Observer for ProgressBar {
    fn progress(&self, _module: &str, p: Progress) {
        if let Some(bar) = &self.0 {
            bar.set_length(p.bytes_total);
            bar.set_position(p.bytes_done);
            bar.set_message(format!("{}/{} files", p.entries_done, p.entries_total));
        }
    }

    fn event(&self, module: &str, event: &Event) {
        tracing::info!(module, reason = event.reason, "{}", event.note);
    }
}
