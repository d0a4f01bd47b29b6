//! Where `serve`'s log lines go: stderr, written out in batches by a
//! thread of its own.
//!
//! Every request is logged at info (the access line), so at tens of
//! thousands of requests a second a write system call per line would cost
//! the server a large share of its CPU, and a write on a request's thread
//! waits whenever the disk under stderr is busy (the journal's flushes).
//! A line is only copied into a pending buffer under a short lock; the
//! flusher thread takes the whole buffer and writes it out every
//! [`FLUSH_EVERY`], or sooner once [`BATCH_BYTES`] are pending. A warning
//! or an error is written out at once by the thread that logs it, and
//! whatever is pending when the command's [`FlushOnDrop`] guard ends. If
//! the flusher falls behind (stderr blocked) and [`SPILL_BYTES`] are
//! pending, the thread that logs writes them out itself: memory stays
//! bounded, and logging slows down rather than losing lines.
//!
//! A line is copied whole, and every write-out holds one lock from taking
//! the pending lines to writing them: lines never interleave, and they
//! reach stderr in the order they were logged.

use std::io::{Stderr, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

/// How long a line may wait to be written out, at most.
pub const FLUSH_EVERY: Duration = Duration::from_millis(200);

/// Pending bytes that wake the flusher before its time.
pub const BATCH_BYTES: usize = 64 * 1024;

/// Pending bytes past which the thread that logs writes them out itself.
pub const SPILL_BYTES: usize = 1024 * 1024;

/// When pending lines are written out.
#[derive(Clone, Copy, Debug)]
pub struct Batching {
    /// The flusher's period: how long a line may wait, at most.
    pub every: Duration,
    /// Pending bytes that wake the flusher before its time.
    pub batch_bytes: usize,
    /// Pending bytes past which the thread that logs writes them out.
    pub spill_bytes: usize,
}

impl Batching {
    /// `serve`'s: [`FLUSH_EVERY`], [`BATCH_BYTES`], [`SPILL_BYTES`].
    pub const STDERR: Batching = Batching {
        every: FLUSH_EVERY,
        batch_bytes: BATCH_BYTES,
        spill_bytes: SPILL_BYTES,
    };
}

/// Log lines on their way to stderr; clone it freely.
pub type BufferedStderr = LogBuffer<Stderr>;

/// Log lines on their way to `W`, written out in batches.
pub struct LogBuffer<W> {
    shared: Arc<Shared<W>>,
}

impl<W> Clone for LogBuffer<W> {
    fn clone(&self) -> Self {
        LogBuffer {
            shared: self.shared.clone(),
        }
    }
}

struct Shared<W> {
    /// Lines logged and not yet taken for writing out.
    pending: Mutex<Vec<u8>>,
    /// Wakes the flusher when a batch is pending.
    batch_ready: Condvar,
    /// The destination, and the buffer a write-out takes the pending lines
    /// into (kept, so its memory is reused). Held from taking to writing.
    out: Mutex<Out<W>>,
    batching: Batching,
}

struct Out<W> {
    sink: W,
    taken: Vec<u8>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl BufferedStderr {
    /// The buffer over stderr, with its flusher thread.
    pub fn start() -> BufferedStderr {
        LogBuffer::over(std::io::stderr(), Batching::STDERR)
    }
}

impl<W: Write + Send + 'static> LogBuffer<W> {
    /// A buffer over `sink` and its flusher thread, which ends once every
    /// clone of the buffer is dropped.
    pub fn over(sink: W, batching: Batching) -> LogBuffer<W> {
        let batching = Batching {
            spill_bytes: batching.spill_bytes.max(batching.batch_bytes),
            ..batching
        };
        let shared = Arc::new(Shared {
            pending: Mutex::new(Vec::with_capacity(batching.batch_bytes)),
            batch_ready: Condvar::new(),
            out: Mutex::new(Out {
                sink,
                taken: Vec::with_capacity(batching.batch_bytes),
            }),
            batching,
        });
        let flushed = Arc::downgrade(&shared);
        let _ = std::thread::Builder::new()
            .name("log-flush".into())
            .spawn(move || {
                while let Some(shared) = flushed.upgrade() {
                    shared.wait_for_batch();
                    shared.write_out();
                }
            });
        LogBuffer { shared }
    }
}

impl<W: Write> LogBuffer<W> {
    /// A guard that writes out what is pending when dropped.
    pub fn flush_on_drop(&self) -> FlushOnDrop<W> {
        FlushOnDrop {
            shared: self.shared.clone(),
        }
    }
}

impl<W: Write> Shared<W> {
    /// Until a batch is pending or the flusher's period has passed.
    fn wait_for_batch(&self) {
        let Batching {
            every, batch_bytes, ..
        } = self.batching;
        let pending = lock(&self.pending);
        let _ = self
            .batch_ready
            .wait_timeout_while(pending, every, |p| p.len() < batch_bytes);
    }

    /// Copies one whole line in; wakes the flusher when a batch is pending,
    /// and writes out at once past the spill size.
    fn push(&self, line: &[u8]) {
        let mut pending = lock(&self.pending);
        let before = pending.len();
        pending.extend_from_slice(line);
        let now = pending.len();
        drop(pending);
        let Batching {
            batch_bytes,
            spill_bytes,
            ..
        } = self.batching;
        if now >= spill_bytes {
            self.write_out();
        } else if before < batch_bytes && now >= batch_bytes {
            self.batch_ready.notify_one();
        }
    }

    /// Takes every pending line and writes them out, in order. An error
    /// of stderr drops the lines: there is nowhere else to say it.
    fn write_out(&self) {
        let mut out = lock(&self.out);
        let out = &mut *out;
        std::mem::swap(&mut *lock(&self.pending), &mut out.taken);
        if !out.taken.is_empty() {
            let _ = out.sink.write_all(&out.taken);
            let _ = out.sink.flush();
            out.taken.clear();
        }
        // One burst must not keep its memory for the process's lifetime.
        if out.taken.capacity() > self.batching.spill_bytes {
            out.taken = Vec::with_capacity(self.batching.batch_bytes);
        }
    }
}

/// Writes out the pending lines when dropped (at the end of `serve`).
pub struct FlushOnDrop<W: Write = Stderr> {
    shared: Arc<Shared<W>>,
}

impl<W: Write> Drop for FlushOnDrop<W> {
    fn drop(&mut self) {
        self.shared.write_out();
    }
}

/// One log line on its way into the buffer.
pub struct Line<'a, W: Write> {
    shared: &'a Shared<W>,
    urgent: bool,
}

impl<W: Write> Write for Line<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    /// The formatter hands over each line whole, in one call.
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.shared.push(buf);
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.shared.write_out();
        Ok(())
    }
}

impl<W: Write> Drop for Line<'_, W> {
    fn drop(&mut self) {
        if self.urgent {
            self.shared.write_out();
        }
    }
}

/// Warnings and errors are written out at once.
fn urgent(level: &Level) -> bool {
    *level <= Level::WARN
}

impl<'a, W: Write + 'a> MakeWriter<'a> for LogBuffer<W> {
    type Writer = Line<'a, W>;

    fn make_writer(&'a self) -> Line<'a, W> {
        Line {
            shared: &self.shared,
            urgent: false,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Line<'a, W> {
        Line {
            shared: &self.shared,
            urgent: urgent(meta.level()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// What was written out, and in how many write-outs.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<(Vec<u8>, usize)>>);

    impl Sink {
        fn text(&self) -> String {
            String::from_utf8(lock(&self.0).0.clone()).expect("utf-8")
        }
        fn writes(&self) -> usize {
            lock(&self.0).1
        }
    }

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let mut s = lock(&self.0);
            s.0.extend_from_slice(buf);
            s.1 += 1;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn log(out: &LogBuffer<Sink>, level: Level, line: &str) {
        let mut w = Line {
            shared: &out.shared,
            urgent: urgent(&level),
        };
        w.write_all(line.as_bytes()).expect("pushed");
    }

    /// A flusher that only wakes for a batch of `batch_bytes` (or never).
    fn by_size(batch_bytes: usize, spill_bytes: usize) -> Batching {
        Batching {
            every: Duration::from_secs(3600),
            batch_bytes,
            spill_bytes,
        }
    }

    #[test]
    fn warnings_and_errors_are_written_out_at_once_and_the_rest_waits() {
        // proves the flush policy per level: error and warn are urgent, info, debug and trace are buffered
        assert!(urgent(&Level::ERROR) && urgent(&Level::WARN));
        assert!(!urgent(&Level::INFO) && !urgent(&Level::DEBUG) && !urgent(&Level::TRACE));
        let sink = Sink::default();
        let out = LogBuffer::over(sink.clone(), by_size(BATCH_BYTES, SPILL_BYTES));
        log(&out, Level::INFO, "an info line\n");
        assert_eq!(sink.text(), "", "an info line waits for the flusher");
        log(&out, Level::WARN, "a warning\n");
        assert_eq!(
            sink.text(),
            "an info line\na warning\n",
            "in order, at once"
        );
    }

    #[test]
    fn pending_lines_are_written_out_by_the_flusher_in_time_and_by_the_guard_at_the_end() {
        // proves nothing waits forever: the flusher writes within its period, the guard at once
        let sink = Sink::default();
        let out = LogBuffer::over(sink.clone(), Batching::STDERR);
        log(&out, Level::INFO, "first\n");
        let deadline = Instant::now() + Duration::from_secs(10);
        while sink.text().is_empty() {
            assert!(Instant::now() < deadline, "the flusher never wrote");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(sink.text(), "first\n");
        log(&out, Level::DEBUG, "second\n");
        drop(out.flush_on_drop());
        assert_eq!(sink.text(), "first\nsecond\n");
    }

    #[test]
    fn a_full_batch_wakes_the_flusher_before_its_time() {
        // proves a batch does not wait out the period: with an hour's period and no spill, each full 1 KiB batch is written out
        let sink = Sink::default();
        let out = LogBuffer::over(sink.clone(), by_size(1024, 1 << 20));
        let line = format!("{}\n", "x".repeat(99));
        for batch in 1..=3 {
            // The flusher is waiting by now (it may not have been for the
            // first batch, which it then finds at its first look).
            std::thread::sleep(Duration::from_millis(50));
            for _ in 0..11 {
                log(&out, Level::INFO, &line);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while sink.text().len() < batch * 1100 {
                assert!(
                    Instant::now() < deadline,
                    "batch {batch} never woke the flusher"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    #[test]
    fn lines_of_racing_threads_come_out_whole_in_each_threads_order_with_memory_bounded() {
        // proves no interleaving, no loss and per-thread order through every path (flusher, spill, urgent, guard), and batched writes
        let sink = Sink::default();
        let out = LogBuffer::over(
            sink.clone(),
            Batching {
                every: Duration::from_millis(1),
                batch_bytes: 512,
                spill_bytes: 4096,
            },
        );
        let threads = 4;
        let lines = 5_000;
        std::thread::scope(|s| {
            for t in 0..threads {
                let out = out.clone();
                s.spawn(move || {
                    for i in 0..lines {
                        let level = if i % 1000 == 999 {
                            Level::WARN
                        } else {
                            Level::INFO
                        };
                        log(
                            &out,
                            level,
                            &format!("thread {t} line {i} {}\n", "·".repeat(t)),
                        );
                        // Past the spill size only by lines of threads
                        // waiting to write out.
                        assert!(
                            lock(&out.shared.pending).len() < 4096 + threads * 64,
                            "bounded"
                        );
                    }
                });
            }
        });
        drop(out.flush_on_drop());
        let text = sink.text();
        let mut next = vec![0usize; threads];
        for l in text.lines() {
            let parts: Vec<&str> = l.split(' ').collect();
            assert_eq!(parts.len(), 5, "a whole line: {l:?}");
            let t: usize = parts[1].parse().expect("thread");
            let i: usize = parts[3].parse().expect("line");
            assert_eq!(i, next[t], "thread {t}'s lines in order");
            assert_eq!(parts[4], "·".repeat(t));
            next[t] += 1;
        }
        assert_eq!(next, vec![lines; threads], "every line, once");
        assert!(
            sink.writes() < threads * lines / 10,
            "batched: {} writes",
            sink.writes()
        );
    }
}
