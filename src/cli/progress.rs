//! A spinner for builds that take more than a moment, on stderr and only
//! when stderr is a terminal (indicatif hides it otherwise), so machine
//! output and logs stay clean.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// A spinner showing the current step of a build.
pub struct Spinner(ProgressBar);

impl Spinner {
    /// Starts a spinner with `message`.
    pub fn start(message: &str) -> Spinner {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}")
                .expect("the template is valid"),
        );
        bar.set_message(message.to_string());
        bar.enable_steady_tick(Duration::from_millis(120));
        Spinner(bar)
    }

    /// Shows `line` as the current step (cut to one terminal line).
    pub fn step(&self, line: &str) {
        let line: String = line.chars().take(100).collect();
        self.0.set_message(line);
    }

    /// Removes the spinner.
    pub fn finish(self) {
        self.0.finish_and_clear();
    }
}

/// A build's progress on a spinner (the library's [`BuildProgress`]).
#[derive(Default)]
pub struct SpinnerProgress(std::sync::Mutex<Option<Spinner>>);

impl scriptbox::env::build::BuildProgress for SpinnerProgress {
    fn begin(&self, what: &str) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(Spinner::start(what));
    }

    fn step(&self, line: &str) {
        if let Some(spinner) = &*self.0.lock().unwrap_or_else(|e| e.into_inner()) {
            spinner.step(line);
        }
    }

    fn end(&self) {
        if let Some(spinner) = self.0.lock().unwrap_or_else(|e| e.into_inner()).take() {
            spinner.finish();
        }
    }
}
