//! Progress of long work (`grade-submissions`, `svm-check`): a bar on a terminal (indicatif), and
//! on anything else (a log, CI, a pipe) the plain lines the commands always printed, nothing more.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// How often the bar is redrawn.
const TICK: Duration = Duration::from_secs(1);

/// A progress bar on stderr when it is a terminal; otherwise only the lines.
#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// `len` steps; `unit` names them on the bar (`students`, `cases`).
    pub fn new(len: usize, unit: &str) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let template = format!("{{elapsed:>4}} [{{wide_bar}}] {{pos}}/{{len}} {unit} {{msg}}");
            let style = ProgressStyle::with_template(&template).unwrap_or_else(|_| ProgressStyle::default_bar());
            let bar = ProgressBar::new(len as u64).with_style(style);
            // Redrawn every second, so the elapsed time moves while one long step runs.
            bar.enable_steady_tick(TICK);
            bar
        });
        Progress { bar }
    }

    /// Whether the bar is drawn (stderr is a terminal).
    pub fn is_shown(&self) -> bool {
        self.bar.is_some()
    }

    /// A line for the log: above the bar on a terminal, on stderr otherwise.
    pub fn line(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.println(text),
            None => eprintln!("{text}"),
        }
    }

    /// `done` steps done in all, and what is under way (terminal only).
    pub fn set(&self, done: usize, message: String) {
        if let Some(bar) = &self.bar {
            bar.set_position(done as u64);
            bar.set_message(message);
        }
    }

    /// The bar leaves the terminal; the lines above it stay.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
