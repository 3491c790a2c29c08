//! The terminal: tracing logs and indicatif progress bars sharing stderr without tearing lines.
//! Logs are written through the bars (`MultiProgress::suspend`); with no TTY (CI) there are no
//! bars and no control codes, only plain lines. `--log-format json` prints one object per event.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dagrun_core::engine::{TaskError, TaskProgress};
use dagrun_core::executor::{Observer, TaskRecord};
use dagrun_core::plan::PlannedTask;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::cli::{LogArgs, LogFormat};

/// Shared terminal state: the bars, and whether to draw them.
#[derive(Clone)]
pub(crate) struct Terminal {
    pub multi: MultiProgress,
    pub bars: bool,
}

impl Terminal {
    pub(crate) fn new(args: &LogArgs) -> Self {
        let bars = !args.quiet && io::stderr().is_terminal() && std::env::var_os("CI").is_none();
        console::set_colors_enabled_stderr(args.color.enabled());
        let target = if bars { ProgressDrawTarget::stderr_with_hz(10) } else { ProgressDrawTarget::hidden() };
        Self { multi: MultiProgress::with_draw_target(target), bars }
    }

    /// Sets up tracing: text or JSON on stderr, through the bars.
    pub(crate) fn init_logging(&self, args: &LogArgs) {
        let level = match (args.quiet, args.verbose) {
            (true, _) => "warn",
            (false, 0) => "info",
            (false, 1) => "debug",
            (false, _) => "trace",
        };
        // Other crates stay quiet even at -vv: the HTTP stack's traces could show request headers.
        let others = if args.verbose >= 2 { "info" } else { "warn" };
        // delta-rs and its kernel log their own failures (with backtraces); dagrun reports each
        // one as the load's error, naming the table, so they are heard only at -vv.
        let delta = if args.verbose >= 2 { "info" } else { "off" };
        // The AWS configuration chain warns for each source it tries and each request it
        // retries (no IMDS on a laptop, no credentials): dagrun says once what is missing.
        let aws = if args.verbose >= 2 { "info" } else { "error" };
        let default = format!(
            "{others},dagrun={level},dagrun_core={level},dagrun_polars={level},dagrun_aws={level},\
             dagrun_delta={level},deltalake_core={delta},buoyant_kernel={delta},buoyant_kernel_engine={delta},\
             aws_config={aws},aws_runtime={aws},aws_smithy_runtime={aws}"
        );

        let filter = EnvFilter::try_from_env("DAGRUN_LOG").unwrap_or_else(|_| EnvFilter::new(default));
        let writer = BarWriter { multi: self.multi.clone() };
        let registry = tracing_subscriber::registry().with(filter);
        match args.log_format {
            LogFormat::Json => {
                let layer = tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(writer);
                let _ = registry.with(layer).try_init();
            }
            LogFormat::Text => {
                let color = args.color.enabled();
                let layer = tracing_subscriber::fmt::layer()
                    .with_ansi(color)
                    .event_format(TextFormat { color })
                    .with_writer(writer);
                let _ = registry.with(TaskFieldsLayer).with(layer).try_init();
            }
        }
    }
}

/// Writes whole log lines to stderr with the bars suspended.
#[derive(Clone)]
struct BarWriter {
    multi: MultiProgress,
}

struct LineBuffer {
    multi: MultiProgress,
    buf: Vec<u8>,
}

impl Write for LineBuffer {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for LineBuffer {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let buf = std::mem::take(&mut self.buf);
        let buf = dagrun_core::redact::redact_bytes(&buf);
        self.multi.suspend(|| {
            let mut err = io::stderr().lock();
            let _ = err.write_all(&buf);
            let _ = err.flush();
        });
    }
}

impl<'a> MakeWriter<'a> for BarWriter {
    type Writer = LineBuffer;
    fn make_writer(&'a self) -> LineBuffer {
        LineBuffer { multi: self.multi.clone(), buf: Vec::with_capacity(256) }
    }
}

/// The task id and attempt of a `task` span, kept for the text formatter.
struct TaskFields {
    task: String,
    attempt: u64,
}

struct TaskFieldsLayer;

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for TaskFieldsLayer {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if attrs.metadata().name() != "task" {
            return;
        }
        struct V(TaskFields);
        impl Visit for V {
            fn record_u64(&mut self, field: &Field, value: u64) {
                if field.name() == "attempt" {
                    self.0.attempt = value;
                }
            }
            fn record_i64(&mut self, field: &Field, value: i64) {
                if field.name() == "attempt" {
                    self.0.attempt = value.max(0) as u64;
                }
            }
            fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
                if field.name() == "task" {
                    self.0.task = format!("{value:?}").trim_matches('"').to_string();
                }
            }
            fn record_str(&mut self, field: &Field, value: &str) {
                if field.name() == "task" {
                    self.0.task = value.to_string();
                }
            }
        }
        let mut v = V(TaskFields { task: String::new(), attempt: 1 });
        attrs.record(&mut v);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(v.0);
        }
    }
}

/// `12:04:31 INFO  load_songs: message key=value` (`load_songs#2` from the second attempt on).
struct TextFormat {
    color: bool,
}

impl<S, N> FormatEvent<S, N> for TextFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let now = chrono::Local::now().format("%H:%M:%S");
        let level = *event.metadata().level();
        let (open, close) = if self.color {
            let code = match level {
                tracing::Level::ERROR => "31",
                tracing::Level::WARN => "33",
                tracing::Level::INFO => "32",
                _ => "2",
            };
            (format!("\x1b[{code}m"), "\x1b[0m")
        } else {
            (String::new(), "")
        };
        write!(writer, "{now} {open}{:<5}{close} ", level.as_str())?;
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                if let Some(fields) = span.extensions().get::<TaskFields>() {
                    if fields.attempt > 1 {
                        write!(writer, "{}#{}: ", fields.task, fields.attempt)?;
                    } else {
                        write!(writer, "{}: ", fields.task)?;
                    }
                }
            }
        }
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// Progress bars per running task, implementing the executor's observer.
pub(crate) struct ProgressObserver {
    terminal: Terminal,
    bars: Mutex<HashMap<String, ProgressBar>>,
    id_width: usize,
}

impl ProgressObserver {
    pub(crate) fn new(terminal: Terminal, id_width: usize) -> Self {
        Self { terminal, bars: Mutex::new(HashMap::new()), id_width }
    }
}

fn spinner_style(id_width: usize) -> ProgressStyle {
    ProgressStyle::with_template(&format!("{{spinner:.cyan}} {{prefix:<{id_width}}} {{msg}} [{{elapsed}}]"))
        .expect("valid template")
        .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ ")
}

fn bar_style(id_width: usize, unit: &str) -> ProgressStyle {
    ProgressStyle::with_template(&format!(
        "{{spinner:.cyan}} {{prefix:<{id_width}}} [{{bar:30.cyan/blue}}] {{human_pos}}/{{human_len}} {unit} {{msg}} [{{elapsed}}]"
    ))
    .expect("valid template")
    .progress_chars("=> ")
    .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ ")
}

struct BarProgress {
    bar: ProgressBar,
    id_width: usize,
}

impl TaskProgress for BarProgress {
    fn set_length(&self, total: Option<u64>, unit: &str) {
        match total {
            Some(total) => {
                self.bar.set_message("");
                self.bar.set_style(bar_style(self.id_width, unit));

                self.bar.set_length(total);
                self.bar.set_position(0);
            }
            None => self.bar.set_style(spinner_style(self.id_width)),
        }
    }
    fn inc(&self, delta: u64) {
        self.bar.inc(delta);
    }
    fn set_message(&self, message: &str) {
        self.bar.set_message(message.to_string());
    }
}

impl Observer for ProgressObserver {
    fn attempt_started(&self, task: &PlannedTask, attempt: u32) -> Arc<dyn TaskProgress> {
        let bar = self.terminal.multi.add(ProgressBar::new_spinner());
        bar.set_style(spinner_style(self.id_width));
        let prefix = if attempt > 1 { format!("{}#{attempt}", task.id()) } else { task.id().to_string() };
        bar.set_prefix(prefix);
        bar.set_message(task.kind().to_string());
        if self.terminal.bars {
            bar.enable_steady_tick(Duration::from_millis(120));
        }

        if let Some(old) = self.bars.lock().expect("bars").insert(task.id().to_string(), bar.clone()) {
            old.finish_and_clear();
        }
        Arc::new(BarProgress { bar, id_width: self.id_width })
    }

    fn attempt_failed(&self, task: &PlannedTask, _attempt: u32, _error: &TaskError, _retry_in: Option<Duration>) {
        if let Some(bar) = self.bars.lock().expect("bars").remove(task.id()) {
            bar.finish_and_clear();
        }
    }

    fn task_finished(&self, task: &PlannedTask, _record: &TaskRecord) {
        if let Some(bar) = self.bars.lock().expect("bars").remove(task.id()) {
            bar.finish_and_clear();
        }
    }
}
