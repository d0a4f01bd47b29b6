//! Where `serve`'s log lines go: stderr through one bounded buffer.
//!
//! Every request is logged at info (the access line), so at tens of
//! thousands of requests a second a write system call per line would cost
//! the server a large share of its CPU. Lines go into a 64 KiB buffer
//! instead, written out when it fills, by a flusher thread every
//! [`FLUSH_EVERY`], at once for a warning or an error, and when the
//! [`FlushOnDrop`] guard of the command ends. A line is written whole:
//! lines of concurrent requests never interleave.

use std::io::{BufWriter, Stderr, Write};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

/// How long a line may wait in the buffer, at most (when nothing more comes).
pub const FLUSH_EVERY: Duration = Duration::from_millis(200);

/// Bytes of log lines buffered before they are written out.
const BUFFER_BYTES: usize = 64 * 1024;

type Shared = Arc<Mutex<BufWriter<Stderr>>>;

/// The buffered stderr of the logs; clone it freely.
#[derive(Clone)]
pub struct BufferedStderr {
    shared: Shared,
}

impl BufferedStderr {
    /// A buffer over stderr, with its flusher thread (which runs as long as
    /// the process: it only holds the buffer).
    pub fn start() -> BufferedStderr {
        let shared = Arc::new(Mutex::new(BufWriter::with_capacity(
            BUFFER_BYTES,
            std::io::stderr(),
        )));
        let flushed = Arc::downgrade(&shared);
        let _ = std::thread::Builder::new()
            .name("log-flush".into())
            .spawn(move || loop {
                std::thread::sleep(FLUSH_EVERY);
                let Some(shared) = flushed.upgrade() else {
                    return;
                };
                flush(&shared);
            });
        BufferedStderr { shared }
    }

    /// A guard that writes out what is buffered when dropped.
    pub fn flush_on_drop(&self) -> FlushOnDrop {
        FlushOnDrop {
            shared: self.shared.clone(),
        }
    }
}

fn flush(shared: &Shared) {
    let _ = shared
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .flush();
}

/// Writes out the buffered lines when dropped (at the end of `serve`).
pub struct FlushOnDrop {
    shared: Shared,
}

impl Drop for FlushOnDrop {
    fn drop(&mut self) {
        flush(&self.shared);
    }
}

/// One log line on its way into the buffer.
pub struct Line<'a> {
    shared: &'a Shared,
    urgent: bool,
}

impl Write for Line<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    /// The whole line under one lock, so lines never interleave.
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.shared
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .write_all(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.shared
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .flush()
    }
}

impl Drop for Line<'_> {
    fn drop(&mut self) {
        if self.urgent {
            flush(self.shared);
        }
    }
}

/// Warnings and errors are written out at once.
fn urgent(level: &Level) -> bool {
    *level <= Level::WARN
}

impl<'a> MakeWriter<'a> for BufferedStderr {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Line<'a> {
        Line {
            shared: &self.shared,
            urgent: false,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Line<'a> {
        Line {
            shared: &self.shared,
            urgent: urgent(meta.level()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_and_errors_are_written_out_at_once_and_the_rest_waits() {
        // proves the flush policy per level: error and warn are urgent, info, debug and trace are buffered
        assert!(urgent(&Level::ERROR) && urgent(&Level::WARN));
        assert!(!urgent(&Level::INFO) && !urgent(&Level::DEBUG) && !urgent(&Level::TRACE));
    }

    #[test]
    fn a_line_goes_into_the_buffer_whole_and_a_flush_empties_it() {
        // proves lines are buffered (not written per line) and that the guard's flush writes them out
        let out = BufferedStderr::start();
        let mut line = out.make_writer();
        line.write_all(b"").expect("buffered");
        line.write_all(b"a buffered test line\n").expect("buffered");
        let buffered = |o: &BufferedStderr| o.shared.lock().expect("lock").buffer().len();
        drop(line);
        assert_eq!(buffered(&out), "a buffered test line\n".len());
        drop(out.flush_on_drop());
        assert_eq!(buffered(&out), 0);
    }
}
