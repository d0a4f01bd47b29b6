//! How `serve`'s log lines look, and the request each belongs to.
//!
//! The request id travels with the request's task, not in a tracing span:
//! the edge runs each request inside [`in_request`] (a tokio task-local,
//! two moves of the id per poll), and [`Lines`] writes the id of the
//! request in hand into every line logged while it is handled: the access
//! line, a handler's error, a panic, a timeout. A span per request cost
//! more than the access line itself (creating, entering and leaving it on
//! every poll, and formatting its fields into an allocation per request):
//! about 28% of HTTP mixed, against about 0.8 µs a request (1–2% of the
//! server's CPU) for the access line this way (docs/performance.md,
//! "Request ids in a task-local, not a span").
//!
//! The lines keep the shape tracing-subscriber's formatters gave them, so
//! whatever reads them goes on working:
//!
//! ```text
//! 2026-12-06T09:09:15.123456Z  INFO request{id=3f9a12c0-1a}: commerce_engine::http::edge: request method="GET" route="/api/v1/users/{user_id}" status=404 latency_ms=0.121
//! ```
//!
//! and with `--log-json`, one object per line, numbers as numbers:
//!
//! ```text
//! {"timestamp":"…","level":"INFO","fields":{"message":"request","method":"GET",…,"status":404,"latency_ms":0.121},"target":"commerce_engine::http::edge","span":{"id":"3f9a12c0-1a","name":"request"},"spans":[{"id":"3f9a12c0-1a","name":"request"}]}
//! ```
//!
//! A line outside any request has no `request{…}` part (no `span` in JSON).
//! The timestamp's date and time of day are formatted once a second per
//! thread. No spans are opened in this code base, so [`Lines`] writes none
//! but the request's.

use axum::http::HeaderValue;
use std::cell::Cell;
use std::fmt::{self, Write};
use std::future::Future;
use std::time::{SystemTime, UNIX_EPOCH};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

tokio::task_local! {
    /// The id of the request this task is handling.
    static REQUEST_ID: HeaderValue;
}

/// Runs `work` as the handling of the request `id`: every line it logs
/// carries the id.
pub fn in_request<F: Future>(id: HeaderValue, work: F) -> impl Future<Output = F::Output> {
    REQUEST_ID.scope(id, work)
}

/// `work` as part of the request in hand, if any (for work that leaves the
/// request's task, like a timed-out handler moved to a task of its own).
pub fn in_current_request<F: Future>(work: F) -> impl Future<Output = F::Output> {
    let id = REQUEST_ID
        .try_with(HeaderValue::clone)
        .unwrap_or_else(|_| HeaderValue::from_static("-"));
    REQUEST_ID.scope(id, work)
}

/// Calls `f` with the id of the request in hand (`-` when it is not text),
/// or `None` outside any request.
pub fn with_request_id<R>(mut f: impl FnMut(Option<&str>) -> R) -> R {
    match REQUEST_ID.try_with(|id| f(Some(id.to_str().unwrap_or("-")))) {
        Ok(r) => r,
        Err(_) => f(None),
    }
}

/// The event format of `serve`'s logs: text or JSON lines.
#[derive(Clone, Copy, Debug)]
pub struct Lines {
    json: bool,
}

impl Lines {
    pub fn text() -> Lines {
        Lines { json: false }
    }

    pub fn json() -> Lines {
        Lines { json: true }
    }

    /// `serve`'s subscriber: lines of this format that `filter` lets
    /// through, written to `out` (colour codes only if `ansi`).
    pub fn subscriber<W>(
        self,
        filter: tracing_subscriber::EnvFilter,
        ansi: bool,
        out: W,
    ) -> impl Subscriber + Send + Sync + 'static
    where
        W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
    {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(ansi)
            .event_format(self)
            .with_writer(out)
            .finish()
    }
}

impl<S, N> FormatEvent<S, N> for Lines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        if self.json {
            return json_line(&mut writer, meta.level(), meta.target(), event);
        }
        let ansi = writer.has_ansi_escapes();
        if ansi {
            writer.write_str("\x1b[2m")?;
        }
        write_timestamp(&mut writer, SystemTime::now())?;
        if ansi {
            writer.write_str("\x1b[0m")?;
        }
        writer.write_char(' ')?;
        write_level(&mut writer, meta.level(), ansi)?;
        with_request_id(|id| match id {
            Some(id) => write!(writer, " request{{id={id}}}:"),
            None => Ok(()),
        })?;
        if ansi {
            write!(writer, " \x1b[2m{}:\x1b[0m ", meta.target())?;
        } else {
            write!(writer, " {}: ", meta.target())?;
        }
        ctx.format_fields(writer.by_ref(), event)?;
        writer.write_char('\n')
    }
}

fn write_level(w: &mut impl Write, level: &Level, ansi: bool) -> fmt::Result {
    let (name, colour) = match *level {
        Level::ERROR => ("ERROR", "31"),
        Level::WARN => (" WARN", "33"),
        Level::INFO => (" INFO", "32"),
        Level::DEBUG => ("DEBUG", "34"),
        Level::TRACE => ("TRACE", "35"),
    };
    if ansi {
        write!(w, "\x1b[{colour}m{name}\x1b[0m")
    } else {
        w.write_str(name)
    }
}

/// One JSON object: timestamp, level, fields, target, and the request's
/// id as the span named `request`.
fn json_line(w: &mut impl Write, level: &Level, target: &str, event: &Event<'_>) -> fmt::Result {
    w.write_str("{\"timestamp\":\"")?;
    write_timestamp(w, SystemTime::now())?;
    w.write_str("\",\"level\":\"")?;
    w.write_str(level.as_str())?;
    w.write_str("\",\"fields\":{")?;
    let mut fields = JsonFields {
        out: w,
        first: true,
        result: Ok(()),
    };
    event.record(&mut fields);
    fields.result?;
    w.write_str("},\"target\":")?;
    json_str(w, target)?;
    with_request_id(|id| match id {
        Some(id) => {
            w.write_str(",\"span\":{\"id\":")?;
            json_str(w, id)?;
            w.write_str(",\"name\":\"request\"},\"spans\":[{\"id\":")?;
            json_str(w, id)?;
            w.write_str(",\"name\":\"request\"}]")
        }
        None => Ok(()),
    })?;
    w.write_str("}\n")
}

/// An event's fields as the members of a JSON object.
struct JsonFields<'a, W> {
    out: &'a mut W,
    first: bool,
    result: fmt::Result,
}

impl<W: Write> JsonFields<'_, W> {
    /// Writes `"name":` (after a comma unless first); false for the `log.`
    /// fields a `log` record carries besides its message (already in the
    /// line's target), and after an error.
    fn key(&mut self, field: &Field) -> bool {
        if self.result.is_err() || field.name().starts_with("log.") {
            return false;
        }
        let comma = if self.first { "" } else { "," };
        self.first = false;
        self.result = self
            .out
            .write_str(comma)
            .and_then(|()| json_str(self.out, field.name()))
            .and_then(|()| self.out.write_char(':'));
        self.result.is_ok()
    }
}

impl<W: Write> Visit for JsonFields<'_, W> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        if self.key(field) {
            self.result = if value.is_finite() {
                write!(self.out, "{value:?}")
            } else {
                self.out.write_str("null")
            };
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.key(field) {
            self.result = write!(self.out, "{value}");
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.key(field) {
            self.result = write!(self.out, "{value}");
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.key(field) {
            self.result = write!(self.out, "{value}");
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if self.key(field) {
            self.result = json_str(self.out, value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.key(field) {
            self.result = self
                .out
                .write_char('"')
                .and_then(|()| write!(JsonEscaped(self.out), "{value:?}"))
                .and_then(|()| self.out.write_char('"'));
        }
    }
}

/// `s` as a JSON string.
pub(crate) fn json_str(w: &mut impl Write, s: &str) -> fmt::Result {
    w.write_char('"')?;
    JsonEscaped(w).write_str(s)?;
    w.write_char('"')
}

/// Writes what it is given escaped for the inside of a JSON string.
struct JsonEscaped<'a, W>(&'a mut W);

impl<W: Write> Write for JsonEscaped<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut plain = 0;
        for (i, b) in s.bytes().enumerate() {
            let escape = match b {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0..=0x1f => "",
                _ => continue,
            };
            self.0.write_str(&s[plain..i])?;
            if escape.is_empty() {
                write!(self.0, "\\u{b:04x}")?;
            } else {
                self.0.write_str(escape)?;
            }
            plain = i + 1;
        }
        self.0.write_str(&s[plain..])
    }
}

thread_local! {
    /// The last second this thread formatted, and its text.
    static SECOND: Cell<(u64, [u8; 19])> = const { Cell::new((u64::MAX, [0; 19])) };
}

/// `at` in UTC to the microsecond, as RFC 3339: `2026-12-06T09:09:15.123456Z`.
pub(crate) fn write_timestamp(w: &mut impl Write, at: SystemTime) -> fmt::Result {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (cached, mut text) = SECOND.with(Cell::get);
    if cached != secs {
        text = date_and_time(secs);
        SECOND.with(|c| c.set((secs, text)));
    }
    // ASCII digits and separators, written by `date_and_time`.
    w.write_str(std::str::from_utf8(&text).unwrap_or("0000-00-00T00:00:00"))?;
    write!(w, ".{:06}Z", since.subsec_micros())
}

/// `YYYY-MM-DDTHH:MM:SS` of `secs` since the epoch, in UTC (the epoch's
/// past year 9999).
fn date_and_time(secs: u64) -> [u8; 19] {
    crate::domain::time::date_and_time(secs).unwrap_or(*b"1970-01-01T00:00:00")
}

/// Lines formatted by [`Lines`] into memory, for tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::Lines;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::fmt::MakeWriter;

    /// What the lines' writer was given.
    #[derive(Clone, Default)]
    pub(crate) struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Captured {
        pub(crate) fn text(&self) -> String {
            let bytes = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
            String::from_utf8(bytes).expect("utf-8 lines")
        }
    }

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;

        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    /// Makes this thread log in `lines` into the answered [`Captured`]
    /// until the guard is dropped, at every level.
    pub(crate) fn capture(lines: Lines) -> (Captured, tracing::subscriber::DefaultGuard) {
        let out = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::TRACE)
            .event_format(lines)
            .with_writer(out.clone())
            .finish();
        let guard = tracing::subscriber::set_default(subscriber);
        (out, guard)
    }
}

#[cfg(test)]
mod tests {
    use super::testing::capture;
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_rfc3339_utc_to_the_microsecond_across_seconds_and_days() {
        // proves the cached date and time of day follow the clock: a new second, a new day, a leap day, the epoch
        let at = |secs: u64, micros: u64| {
            let mut s = String::new();
            let t = UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros);
            write_timestamp(&mut s, t).expect("formatted");
            s
        };
        assert_eq!(at(1_796_548_155, 123_456), "2026-12-06T09:09:15.123456Z");
        assert_eq!(at(1_796_548_155, 7), "2026-12-06T09:09:15.000007Z");
        assert_eq!(at(1_796_548_156, 0), "2026-12-06T09:09:16.000000Z");
        assert_eq!(at(1_796_601_599, 999_999), "2026-12-06T23:59:59.999999Z");
        assert_eq!(at(1_796_601_600, 0), "2026-12-07T00:00:00.000000Z");
        assert_eq!(at(1_709_164_800, 1), "2024-02-29T00:00:00.000001Z");
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000000Z");
    }

    #[test]
    fn json_strings_escape_quotes_backslashes_and_control_characters() {
        // proves any text (a caller's request id, a message) stays one valid JSON string on one line
        let mut s = String::new();
        json_str(&mut s, "a\"b\\c\nd\te\u{1}f\u{1b}[31mé").expect("formatted");
        assert_eq!(s, r#""a\"b\\c\nd\te\u0001f\u001b[31mé""#);
        let back: String = serde_json::from_str(&s).expect("valid JSON");
        assert_eq!(back, "a\"b\\c\nd\te\u{1}f\u{1b}[31mé");
    }

    #[tokio::test]
    async fn a_line_inside_a_request_carries_its_id_and_one_outside_none() {
        // proves the text format: `request{id=…}:` on lines logged in the request's scope (also after an await), not on others
        let (out, _default) = capture(Lines::text());
        tracing::info!(n = 1, "before");
        in_request(HeaderValue::from_static("req-1"), async {
            tokio::task::yield_now().await;
            tracing::error!(error = "disk full", "handler failed");
        })
        .await;
        tracing::info!("after");
        let text = out.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].ends_with(" INFO commerce_engine::http::log_lines::tests: before n=1"));
        assert!(
            lines[1].ends_with(
                "ERROR request{id=req-1}: commerce_engine::http::log_lines::tests: handler failed error=\"disk full\""
            ),
            "{}",
            lines[1]
        );
        assert!(!lines[2].contains("request{"), "{}", lines[2]);
        assert!(lines
            .iter()
            .all(|l| l.len() > 28 && l.as_bytes()[26] == b'Z'));
    }

    #[tokio::test]
    async fn json_lines_hold_typed_fields_and_the_request_as_their_span() {
        // proves the JSON format: one valid object per line, numbers as numbers, the id under span and spans, none outside a request
        let (out, _default) = capture(Lines::json());
        let id = HeaderValue::from_static("caller \"quoted\" \\ id");
        in_request(id, async {
            tracing::info!(
                method = "GET",
                status = 404u16,
                latency_ms = 0.25,
                delta = -3i64,
                ok = false,
                ratio = f64::NAN,
                which = ?Some(7),
                "request"
            );
        })
        .await;
        tracing::warn!(shown = %"text", "outside");
        let text = out.text();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        let request = &lines[0];
        assert_eq!(request["level"], "INFO");
        assert_eq!(request["target"], "commerce_engine::http::log_lines::tests");
        let fields = &request["fields"];
        assert_eq!(fields["message"], "request");
        assert_eq!(fields["method"], "GET");
        assert_eq!(fields["status"], 404);
        assert_eq!(fields["latency_ms"], 0.25);
        assert_eq!(fields["delta"], -3);
        assert_eq!(fields["ok"], false);
        assert!(fields["ratio"].is_null());
        assert_eq!(fields["which"], "Some(7)");
        assert_eq!(request["span"]["id"], "caller \"quoted\" \\ id");
        assert_eq!(request["span"]["name"], "request");
        assert_eq!(request["spans"][0]["id"], request["span"]["id"]);
        let timestamp = request["timestamp"].as_str().expect("timestamp");
        assert!(
            timestamp.len() == 27 && timestamp.ends_with('Z'),
            "{timestamp}"
        );
        assert_eq!(lines[1]["level"], "WARN");
        assert_eq!(lines[1]["fields"]["shown"], "text");
        assert!(lines[1].get("span").is_none(), "{}", lines[1]);
    }

    #[tokio::test]
    async fn work_moved_off_the_request_task_keeps_the_request_id() {
        // proves in_current_request: a task spawned from inside a request logs with that request's id
        let (out, _default) = capture(Lines::text());
        let mut moved = None;
        in_request(HeaderValue::from_static("req-9"), async {
            moved = Some(tokio::spawn(in_current_request(async {
                tracing::warn!("still working");
            })));
        })
        .await;
        let moved = moved.expect("spawned inside the request");
        moved.await.expect("the moved work ran");
        let text = out.text();
        assert!(
            text.contains("WARN request{id=req-9}: ") && text.contains("still working"),
            "{text}"
        );
    }
}
