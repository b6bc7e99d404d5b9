//! Terminal rendering of the engine's progress events.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use snapshot::{FileError, FileStatus, Progress};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

pub struct Bar {
    bar: ProgressBar,
    files: AtomicU64,
}

impl Bar {
    /// A bar on stderr when it is a terminal and output is for people.
    pub fn new(visible: bool, template: &str) -> Self {
        let bar = if visible && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            let b = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(4));
            b.set_style(
                ProgressStyle::with_template(template)
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            b
        } else {
            ProgressBar::hidden()
        };
        Bar {
            bar,
            files: AtomicU64::new(0),
        }
    }

    /// Whether anything is drawn (a terminal, output for people).
    pub fn is_shown(&self) -> bool {
        !self.bar.is_hidden()
    }

    pub fn set_total(&self, bytes: u64) {
        self.bar.set_length(bytes);
    }

    pub fn set_position(&self, bytes: u64) {
        self.bar.set_position(bytes);
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }

    pub fn println(&self, s: String) {
        self.bar.suspend(|| eprintln!("{s}"));
    }
}

pub const BACKUP_TEMPLATE: &str =
    "{spinner} {msg} files  {bytes}/{total_bytes}  {bytes_per_sec}  ETA {eta}  [{wide_bar}]";
pub const RESTORE_TEMPLATE: &str =
    "{spinner} {msg} files  {bytes}/{total_bytes}  {bytes_per_sec}  ETA {eta}  [{wide_bar}]";

impl Progress for Bar {
    fn bytes(&self, n: u64) {
        self.bar.inc(n);
    }
    fn file_done(&self, _path: &Path, _size: u64, _status: FileStatus) {
        let n = self.files.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_multiple_of(64) {
            self.bar.set_message(n.to_string());
        }
    }
    fn error(&self, e: &FileError) {
        self.println(format!(
            "warning: {}: {}",
            crate::shown::shown_path(&e.path),
            crate::shown::shown(&e.message)
        ));
    }
}
