//! Command-line flags (clap). `dagrun PIPELINE.yaml` is short for `dagrun run PIPELINE.yaml`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

const EXIT_CODES: &str = "\
Exit codes:
  0    every task succeeded
  1    a task failed (its downstream tasks were skipped)
  2    usage or configuration error (nothing ran)
  130  interrupted by Ctrl-C or SIGTERM (running tasks were cancelled and cleaned up)";

#[derive(Debug, Parser)]
#[command(
    name = "dagrun",
    version = env!("DAGRUN_LONG_VERSION"),
    about = "Run data-lake pipelines: YAML DAGs of extract, transform, quality-check and load tasks.",
    long_about = None,
    after_help = EXIT_CODES,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub run: RunArgs,

    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run a pipeline (the default command).
    #[command(after_help = EXIT_CODES)]
    Run(Box<RunArgs>),
    /// Check a pipeline and report every problem with its line and column; runs nothing.
    #[command(
        after_help = "Exit codes:\n  0    the pipeline is valid (warnings may be printed)\n  1    --env: a folder or bucket cannot be used\n  2    the pipeline is not valid"
    )]
    Validate(ValidateArgs),
    /// Draw the pipeline's DAG: a terminal picture, Graphviz DOT, Mermaid, SVG or an HTML page.
    Graph(GraphArgs),
    /// Write Sparkify-shaped sample data (song_data/ and log_data/), deterministic for a seed.
    Generate(GenerateArgs),
    /// Render a run record (run.json) as one self-contained HTML page, with the report answers the
    /// run computed and kept.
    Report(ReportArgs),
    /// List a Delta table's versions: when, which operation, which dagrun run, how many rows.
    History(HistoryArgs),
    /// The lake as a run left it: every table's path and Delta version, and how to read them
    /// together (Spark, Polars, Python) even after later runs.
    Lake(LakeArgs),
    /// EMR housekeeping: find and terminate clusters dagrun started.
    #[command(subcommand)]
    Emr(EmrCommand),
    /// Print a shell completion script, e.g. `dagrun completions bash > ~/.local/share/bash-completion/completions/dagrun`.
    Completions(CompletionsArgs),
    /// Print the man page (roff), e.g. `dagrun man > ~/.local/share/man/man1/dagrun.1`.
    Man,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct CompletionsArgs {
    /// The shell to complete in.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Subcommand)]
pub(crate) enum EmrCommand {
    /// List clusters tagged by dagrun that are still alive, and terminate those whose run is not
    /// live: no unexpired lease of that run on its lake (the run ended, or its runner died and the
    /// lease expired). A live run's cluster is never terminated, whatever its age.
    Gc(GcArgs),
    /// Write the step specs an EMR run would submit, for every extract, transform and load, in
    /// run order (steps.json) with the step program beside them (dagrun_step.py), to run the Spark
    /// side anywhere: `spark-submit DIR/dagrun_step.py DIR/steps.json`. Paths may be local.
    Specs(SpecsArgs),
}

#[derive(Debug, Clone, Args)]
pub(crate) struct SpecsArgs {
    #[command(flatten)]
    pub pipeline: PipelineArgs,

    /// Folder for steps.json, dagrun_step.py and the intermediate tables (tables/<task>).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,

    /// The run id the specs carry (it tags the published files).
    #[arg(long, value_name = "ID", default_value = "specs", value_parser = parse_run_id)]
    pub run_id: String,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct GcArgs {
    /// Only list what would be terminated.
    #[arg(long)]
    pub dry_run: bool,

    /// Also terminate clusters older than this (e.g. 12h, 2d) whose run cannot be shown to be
    /// over; a cluster whose run still holds a live lease on its lake is never terminated.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub older_than: Option<std::time::Duration>,

    /// A runs folder whose URI was too long for an EMR tag (the cluster's `dagrun:runs` tag holds
    /// its hash): gc matches the hash and reads the run's lease there (repeatable).
    #[arg(long, value_name = "URI")]
    pub runs: Vec<String>,

    /// EMR region [default: the AWS SDK's region chain, then us-east-1].
    #[arg(long)]
    pub region: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct PipelineArgs {
    /// The pipeline file.
    #[arg(value_name = "PIPELINE.yaml")]
    pub pipeline: PathBuf,

    /// Override a variable declared under `vars:` (repeatable), e.g. --set output=/lake.
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub set: Vec<(String, String)>,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct ValidateArgs {
    #[command(flatten)]
    pub pipeline: PipelineArgs,

    /// Also check the environment: every input can be read and every output written (for S3, a
    /// HeadBucket on each bucket and a one-key listing of each input prefix).
    #[arg(long)]
    pub env: bool,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct RunArgs {
    /// The pipeline file.
    #[arg(value_name = "PIPELINE.yaml", required = true)]
    pub pipeline: Option<PathBuf>,

    /// Override a variable declared under `vars:` (repeatable), e.g. --set output=/lake.
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub set: Vec<(String, String)>,

    /// Show the plan (waves, engines, retries, timeouts, inputs and outputs); read and write nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Tasks running at the same time, at most [default: number of cores].
    #[arg(long, short = 'j', value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub jobs: Option<u32>,

    /// Run only this task and what it depends on (repeatable).
    #[arg(long, value_name = "TASK")]
    pub only: Vec<String>,

    /// Stop everything as soon as a task fails for good.
    #[arg(long)]
    pub fail_fast: bool,

    /// Worker threads of the local engine [default: number of cores].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub threads: Option<u32>,

    /// Keep a table larger than this in memory in a local Parquet file between tasks (in the
    /// system's temporary folder), read back by the tasks that use it: `512MiB`, `2GiB`, or
    /// `never` [default: 1GiB].
    #[arg(long, value_name = "SIZE", value_parser = parse_spill_size)]
    pub spill_above: Option<SpillAbove>,

    /// Run only some days of the input: a year (2018), a month (2018-11) or a day (2018-11-05).
    /// Needs an extract with `slice_path`; each load replaces what those days determine (its
    /// `mode`). Days already published from the same inputs are skipped.
    #[arg(long, value_name = "PERIOD", conflicts_with_all = ["since", "until"])]
    pub partition: Option<String>,

    /// Run the days from this one (YYYY-MM-DD) to --until (default: today, UTC): a backfill.
    /// Only the days that are missing or whose input changed run.
    #[arg(long, value_name = "DATE")]
    pub since: Option<String>,

    /// The last day of a --since range (YYYY-MM-DD), included.
    #[arg(long, value_name = "DATE", requires = "since")]
    pub until: Option<String>,

    /// Rerun tasks whose published outputs are up to date: `--force` all of them,
    /// `--force=TASK` that task and everything downstream of it (repeatable).
    #[arg(long, value_name = "TASK", num_args = 0..=1, require_equals = true, default_missing_value = "")]
    pub force: Vec<String>,

    /// Read every extract's files, even those an earlier run read unchanged (by default their
    /// table is read from the extract cache in the runs folder, `_cache/`).
    #[arg(long)]
    pub no_cache: bool,

    /// Let `format: delta` loads drop, retype or repartition columns of their published tables
    /// (a schema that only adds columns evolves without it).
    #[arg(long)]
    pub allow_breaking_schema: bool,

    /// Also write the run's tasks and checks as JUnit XML to this file.
    #[arg(long, value_name = "PATH")]
    pub junit: Option<PathBuf>,

    /// Also write the run's HTML report to this file.
    #[arg(long, value_name = "PATH")]
    pub report: Option<PathBuf>,

    /// Use this run id instead of a new one: after dagrun itself was stopped, the same id finds
    /// the run's EMR cluster and reattaches to its pending or running steps.
    #[arg(long, value_name = "ID", value_parser = parse_run_id)]
    pub run_id: Option<String>,

    /// When another run holds the lake (its lease in the runs folder), wait up to this long for
    /// it to finish instead of stopping at once (e.g. 10m).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub wait_for_lock: Option<std::time::Duration>,

    /// How long the run's lease on the lake lasts without renewal; it is renewed every quarter of
    /// that while the run lives, and a dead run's lease is taken over once it expires [default: 2m].
    #[arg(long, value_name = "DURATION", value_parser = parse_lease_ttl)]
    pub lease_ttl: Option<std::time::Duration>,

    /// The most this run may spend on EMR, in USD (over the pipeline's budget.max_usd): past it,
    /// the running step is cancelled and the cluster terminated. 0 forbids EMR.
    #[arg(long, value_name = "USD", value_parser = parse_usd)]
    pub max_cost: Option<f64>,

    /// Price the EMR cluster's instance types from the AWS Price List API (needs credentials and
    /// `pricing:GetProducts`) instead of dagrun's table; engines.emr.prices still win.
    #[arg(long)]
    pub refresh_prices: bool,

    /// Keep the run's EMR staging folder (`<staging>/<run-id>/`: step program, task specs,
    /// intermediate tables) whatever the outcome. Without it a successful run deletes the folder,
    /// and a failed run keeps it for `engines.emr.keep_failed_staging` (default 7d).
    #[arg(long)]
    pub keep_staging: bool,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct ReportArgs {
    /// A run record: a run.json (local or s3://), a run's folder, or a runs folder (its latest run).
    #[arg(value_name = "RUN")]
    pub run: String,

    /// Where to write the page [default: report.html beside a local run.json, else ./report-<run>.html].
    #[arg(long, short, value_name = "PATH")]
    pub output: Option<PathBuf>,

    /// Read a Delta table at another version than the one the run left it at (repeatable), e.g.
    /// `--as-of songplays=3`, computing the answers anew at those versions; `dagrun history PATH`
    /// lists a table's versions.
    #[arg(long, value_name = "TABLE=VERSION", value_parser = parse_as_of)]
    pub as_of: Vec<(String, u64)>,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct LakeArgs {
    /// A run record: a run.json (local or s3://), a run's folder, or a runs folder (its latest run).
    #[arg(value_name = "RUN")]
    pub run: String,

    /// Print JSON: `{"run_id", "tables": {TABLE: {"path", "version"}}}`.
    #[arg(long)]
    pub json: bool,
}

fn parse_as_of(text: &str) -> Result<(String, u64), String> {
    let (table, version) =
        text.split_once('=').ok_or_else(|| format!("expected TABLE=VERSION, such as songplays=3, found `{text}`"))?;
    let version = version.trim().parse::<u64>().map_err(|_| format!("`{version}` is not a version number"))?;
    if table.trim().is_empty() {
        return Err("the table name is empty".into());
    }
    Ok((table.trim().to_string(), version))
}

#[derive(Debug, Clone, Args)]
pub(crate) struct HistoryArgs {
    /// A Delta table's folder or s3:// URI, such as output/songplays.
    #[arg(value_name = "TABLE")]
    pub table: String,

    /// Show at most this many versions, newest first.
    #[arg(long, short = 'n', value_name = "N")]
    pub limit: Option<usize>,

    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct GraphArgs {
    #[command(flatten)]
    pub pipeline: PipelineArgs,

    /// Output format.
    #[arg(long, value_enum, default_value_t = GraphFormatArg::Ascii)]
    pub format: GraphFormatArg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum GraphFormatArg {
    /// A picture for the terminal.
    Ascii,
    /// Graphviz DOT.
    Dot,
    /// A Mermaid flowchart (renders on GitHub).
    Mermaid,
    /// An SVG picture (the HTML report's), drawn without Graphviz.
    Svg,
    /// A self-contained HTML page holding the SVG picture.
    Html,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct GenerateArgs {
    /// Folder to write song_data/ and log_data/ into. A folder that already holds them is replaced
    /// only if this command made it (it holds `.dagrun-generated`).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,

    /// Number of songs (one JSON file each).
    #[arg(long, default_value_t = 200)]
    pub songs: u64,

    /// Number of log events (JSON lines, spread over `--days` daily files).
    #[arg(long, default_value_t = 3000)]
    pub events: u64,

    /// Number of days of logs, from 2018-11-01.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub days: u32,

    /// Random seed: the same seed writes the same bytes.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,

    /// Name each log file by the day in a zone this many hours from UTC (as logs rotated at
    /// local midnight are): with -3, the plays of 00:00 to 03:00 UTC are in the file of the day
    /// before.
    #[arg(long, default_value_t = 0, allow_hyphen_values = true, value_parser = clap::value_parser!(i8).range(-23..=23), value_name = "HOURS")]
    pub files_offset: i8,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct LogArgs {
    /// More log detail (-v debug, -vv trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// Only warnings, errors and the summary; no progress bars.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    /// Colors on stderr: `auto` uses them on a terminal unless NO_COLOR is set.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto, global = true)]
    pub color: ColorChoice,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ColorChoice {
    /// On a terminal, unless the NO_COLOR environment variable is set (and not empty).
    Auto,
    /// Always, even into a file or a pipe.
    Always,
    /// Never.
    Never,
}

impl ColorChoice {
    /// Whether stderr gets colors.
    pub(crate) fn enabled(self) -> bool {
        use std::io::IsTerminal;
        match self {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    /// Short human-readable lines.
    Text,
    /// One JSON object per event.
    Json,
}

/// Moves the global logging flags that come before the subcommand (or the pipeline) to just
/// after it: `dagrun -vv run X` means `dagrun run -vv X`. (With the pipeline allowed in place of a
/// subcommand, clap would otherwise take `run` for the pipeline once a flag came first.)
pub(crate) fn hoist_global_flags(args: impl IntoIterator<Item = std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = args.into_iter().collect();
    let mut leading = Vec::new();
    let mut i = 1;
    while i < args.len() {
        let text = args[i].to_string_lossy();
        let is_flag = matches!(text.as_ref(), "--verbose" | "--quiet")
            || text.starts_with("--log-format=")
            || text.starts_with("--color=")
            || (text.len() > 1
                && text.starts_with('-')
                && !text.starts_with("--")
                && text[1..].chars().all(|c| c == 'v' || c == 'q'));
        if (text == "--log-format" || text == "--color") && i + 1 < args.len() {
            leading.extend([args[i].clone(), args[i + 1].clone()]);
            i += 2;
        } else if is_flag {
            leading.push(args[i].clone());
            i += 1;
        } else {
            break;
        }
    }
    if leading.is_empty() || i >= args.len() {
        return args;
    }
    let first = args[i].clone();
    args.splice(1..=i, std::iter::once(first).chain(leading));
    args
}

fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    dagrun_core::units::parse_duration(text)
}

fn parse_usd(text: &str) -> Result<f64, String> {
    match text.trim().trim_start_matches('$').parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("`{text}`: a budget is a number of USD, at least 0")),
    }
}

fn parse_lease_ttl(text: &str) -> Result<std::time::Duration, String> {
    let ttl = parse_duration(text)?;
    if ttl < std::time::Duration::from_secs(1) {
        return Err(format!("`{text}`: a lease lasts at least 1s"));
    }
    Ok(ttl)
}

fn parse_run_id(text: &str) -> Result<String, String> {
    if text.is_empty() || text.len() > 64 || !text.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(format!("`{text}`: a run id is 1 to 64 letters, digits, - and _"));
    }
    // The runs folder holds dagrun's own names beside the runs' folders: `LATEST`, `_cache`.
    if text.eq_ignore_ascii_case(dagrun_core::record::LATEST) || text.starts_with('_') {
        return Err(format!(
            "`{text}`: a run id may not be `LATEST` or start with `_`: those are dagrun's own names in the runs folder"
        ));
    }
    Ok(text.to_string())
}

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => Ok((key.trim().to_string(), value.to_string())),
        _ => Err(format!("expected KEY=VALUE, found `{text}`")),
    }
}

/// `--spill-above`: a size in bytes, or never.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum SpillAbove {
    Bytes(u64),
    Never,
}

/// A size as everywhere else (`1GiB`, `512MiB`, `2GB`, a number of bytes), or `never`.
fn parse_spill_size(text: &str) -> Result<SpillAbove, String> {
    if text.trim().eq_ignore_ascii_case("never") {
        return Ok(SpillAbove::Never);
    }
    dagrun_core::units::parse_size(text).map(SpillAbove::Bytes).map_err(|e| format!("{e}, or never"))
}

#[cfg(test)]
mod spill_size_tests {
    use super::*;

    #[test]
    fn global_flags_before_the_subcommand_move_after_it() {
        let hoisted = |args: &[&str]| -> Vec<String> {
            hoist_global_flags(args.iter().map(std::ffi::OsString::from))
                .into_iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect()
        };
        assert_eq!(hoisted(&["dagrun", "-vv", "run", "p.yaml"]), ["dagrun", "run", "-vv", "p.yaml"]);
        assert_eq!(
            hoisted(&["dagrun", "-q", "--log-format", "json", "validate", "p.yaml"]),
            ["dagrun", "validate", "-q", "--log-format", "json", "p.yaml"]
        );
        assert_eq!(
            hoisted(&["dagrun", "--quiet", "p.yaml", "--dry-run"]),
            ["dagrun", "p.yaml", "--quiet", "--dry-run"]
        );
        assert_eq!(hoisted(&["dagrun", "run", "-v", "p.yaml"]), ["dagrun", "run", "-v", "p.yaml"]);
        assert_eq!(hoisted(&["dagrun", "-v"]), ["dagrun", "-v"]);
    }

    #[test]
    fn spill_sizes_take_binary_and_decimal_units_or_never() {
        assert_eq!(parse_spill_size("1GiB"), Ok(SpillAbove::Bytes(1 << 30)));
        assert_eq!(parse_spill_size("512 MiB"), Ok(SpillAbove::Bytes(512 << 20)));
        assert_eq!(parse_spill_size("2GB"), Ok(SpillAbove::Bytes(2_000_000_000)));
        assert_eq!(parse_spill_size("1000"), Ok(SpillAbove::Bytes(1000)));
        assert_eq!(parse_spill_size("never"), Ok(SpillAbove::Never));
        assert_eq!(parse_spill_size("1TiB"), Ok(SpillAbove::Bytes(1 << 40)));
        assert_eq!(
            parse_spill_size("lots").unwrap_err(),
            "invalid size `lots`: expected e.g. 16MiB, 8MB, 2GiB or 1048576, or never"
        );
    }
}
