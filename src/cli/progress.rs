//! How far an import or export got: a progress bar on a terminal, a log line every few
//! seconds otherwise (CI logs, files), both on standard error, and a sum-up at the end.

use std::{
    io::IsTerminal,
    time::{Duration, Instant},
};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

const LOG_EVERY: Duration = Duration::from_secs(5);

pub struct Progress {
    verb: &'static str,
    bar: Option<ProgressBar>,
    started: Instant,
    logged: Option<Instant>,
    records: u64,
}

impl Progress {
    /// `total_bytes`: the input's size when known, for an ETA.
    pub fn new(verb: &'static str, total_bytes: Option<u64>) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let (bar, template) = match total_bytes {
                Some(total) => (
                    ProgressBar::new(total),
                    "{spinner} {elapsed_precise} [{wide_bar}] {bytes}/{total_bytes} ETA {eta} {msg}",
                ),
                None => (ProgressBar::no_length(), "{spinner} {elapsed_precise} {msg}"),
            };
            bar.set_draw_target(ProgressDrawTarget::stderr());
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style);
            }
            bar
        });
        Self { verb, bar, started: Instant::now(), logged: None, records: 0 }
    }

    fn rate(&self) -> u64 {
        let seconds = self.started.elapsed().as_secs_f64();
        if seconds > 0.0 { (self.records as f64 / seconds) as u64 } else { 0 }
    }

    /// `records` more went through; `bytes`: how far into the input that is.
    pub fn advance(&mut self, records: u64, bytes: Option<u64>) {
        self.records += records;
        match &self.bar {
            Some(bar) => {
                if let Some(bytes) = bytes {
                    bar.set_position(bytes);
                }
                bar.set_message(format!("{} records, {}/s", self.records, self.rate()));
            }
            None if self.logged.unwrap_or(self.started).elapsed() >= LOG_EVERY => {
                self.logged = Some(Instant::now());
                eprintln!("{}: {} records so far, {}/s", self.verb, self.records, self.rate());
            }
            None => {}
        }
    }

    /// Clears the bar and sums up, unless the run was too short for a log line: a quick
    /// run in a script says only what its output says.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        } else if self.logged.is_none() {
            return;
        }
        eprintln!(
            "{}: {} records in {:.1} s, {}/s",
            self.verb,
            self.records,
            self.started.elapsed().as_secs_f64(),
            self.rate()
        );
    }
}
