//! Tiny partitions take dagrun's lean Parquet writer, larger ones Polars' writer: one table
//! mixing both reads the same in every reader we did not write (pyarrow, DuckDB with its
//! statistics-based pruning, the `deltalake` package, Spark), in both table formats.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;

use crate::support::*;

/// 70 keys of one row each (lean files) and a key `big` of 100 rows (a Polars file), with every
/// type the lean writer writes, nulls in each, and text that must stay byte-exact.
fn input(dir: &Path) -> PathBuf {
    let input = dir.join("in");
    fs::create_dir_all(&input).unwrap();
    let texts = ["plain", "", "Ã©tÃ© double-encoded", "\"Mozilla/5.0\" quoted", "😀 emoji", "x"];
    let mut lines = Vec::new();
    for n in 0..170i64 {
        let k = if n < 70 { format!("k{n:02}") } else { "big".to_string() };
        let null = |every: i64| n % every == 3;
        lines.push(json!({
            "k": k,
            "s": if null(5) { None } else { Some(format!("{}{n}", texts[n as usize % texts.len()])) },
            "i": if null(7) { None } else { Some((n - 60) * 1_000_003) },
            "f": if null(6) { None } else { Some(if n % 9 == 0 { -0.0 } else { n as f64 * 1.25 - 40.0 }) },
            "b": if null(4) { None } else { Some(n % 2 == 0) },
            "t": if null(8) { None } else { Some(1_541_105_830_796i64 + n * 86_400_123) },
        }));
    }
    let text: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    fs::write(input.join("rows.json"), text.join("\n")).unwrap();
    input
}

fn lake(dir: &Path, format: &str) -> PathBuf {
    pipeline(
        dir,
        &format!("tiny-{format}.yaml"),
        &format!(
            r#"name: tiny
vars: {{input: in, output: out}}
tasks:
  - {{id: rows, kind: extract, path: "${{input}}", format: jsonl, schema: {{k: string, s: string, i: int, f: float, b: bool, t: timestamp_ms}}}}
  - id: typed
    kind: transform
    depends_on: [rows]
    sql: "SELECT k, s, i, CASE WHEN i = 7000021 THEN CAST('NaN' AS DOUBLE) ELSE f END AS f, b, t, CAST(i AS INT) AS i32, CAST(t AS DATE) AS d FROM rows"
  - {{id: load_typed, kind: load, depends_on: [typed], table: typed, path: "${{output}}/typed", format: {format}, partition_by: [k]}}
"#
        ),
    )
}

/// Checks the table at argv[1] (format argv[2]) against the input at argv[3] with pyarrow,
/// DuckDB (whole reads and filters that prune by statistics) and, for Delta, `deltalake`.
const READERS: &str = r#"
import datetime, json, math, os, sys, glob
import pyarrow.parquet as pq, pyarrow.dataset as ds, duckdb
table, fmt, source = sys.argv[1], sys.argv[2], sys.argv[3]

def norm(v):
    if isinstance(v, float) and math.isnan(v): return "NaN"
    if isinstance(v, float): return repr(v + 0.0)  # -0.0 and 0.0 are equal values
    if isinstance(v, datetime.datetime):
        if v.tzinfo is None: v = v.replace(tzinfo=datetime.timezone.utc)
        return round(v.timestamp() * 1000)
    if isinstance(v, datetime.date): return v.isoformat()
    return v

def rows(records):
    return sorted(json.dumps([norm(r[c]) for c in sorted(r)], ensure_ascii=False) for r in records)

expected = []
for line in open(os.path.join(source, "rows.json"), encoding="utf-8"):
    r = json.loads(line)
    if r["i"] == 7000021: r["f"] = float("nan")
    r["i32"] = r["i"]
    r["d"] = None if r["t"] is None else datetime.datetime.fromtimestamp(r["t"] / 1000, datetime.timezone.utc).date()
    if r["t"] is not None: r["t"] = datetime.datetime.fromtimestamp(r["t"] / 1000, datetime.timezone.utc)
    expected.append(r)
want = rows(expected)

if fmt == "delta":
    from deltalake import DeltaTable
    files = DeltaTable(table).file_uris()
    got = {"deltalake": rows(DeltaTable(table).to_pyarrow_table().to_pylist())}
else:
    files = sorted(p for p in glob.glob(table + "/**/*.parquet", recursive=True) if "/_" not in p[len(table):])
    got = {}
writers = {pq.ParquetFile(f).metadata.created_by.split(" ")[0] for f in files}
assert writers == {"dagrun", "Polars"}, f"expected files of both writers, got {writers}"
got["pyarrow"] = rows(ds.dataset(files, format="parquet", partitioning="hive", partition_base_dir=table).to_table().to_pylist())
con = duckdb.connect()
con.execute("SET TimeZone='UTC'")
scan = f"read_parquet({files!r}, hive_partitioning=true)"
result = con.execute(f"SELECT * REPLACE (epoch_ms(t) AS t) FROM {scan}")
names = [d[0] for d in result.description]
got["duckdb"] = rows(dict(zip(names, r)) for r in result.fetchall())
for reader, have in got.items():
    missing, extra = sorted(set(want) - set(have)), sorted(set(have) - set(want))
    assert have == want, f"{reader}: {len(have)} rows, {len(want)} expected; missing {missing[:3]}; unexpected {extra[:3]}"
# Filters DuckDB answers with the files' min/max statistics (files whose range misses are skipped).
checks = {
    "s = 'x5'": sum(1 for r in expected if r["s"] == "x5"),
    "i > 50000000": sum(1 for r in expected if r["i"] is not None and r["i"] > 50000000),
    "i32 < -10000000": sum(1 for r in expected if r["i"] is not None and r["i"] < -10000000),
    # DuckDB orders NaN above every number: the file holding it must not be pruned by its range.
    "f >= 100": sum(1 for r in expected if r["f"] is not None and (math.isnan(r["f"]) or r["f"] >= 100)),
    "b": sum(1 for r in expected if r["b"]),
    "s IS NULL": sum(1 for r in expected if r["s"] is None),
    "d = DATE '2018-11-21'": sum(1 for r in expected if r["d"] == datetime.date(2018, 11, 21)),
}
for where, count in checks.items():
    n = con.execute(f"SELECT count(*) FROM {scan} WHERE {where}").fetchone()[0]
    assert n == count, f"duckdb WHERE {where}: {n} rows, {count} expected"
print(f"ok: {len(want)} rows, {len(files)} files, readers {sorted(got)}", flush=True)
os._exit(0)
"#;

fn check_readers(dir: &Path, format: &str) {
    let input = input(dir);
    let file = lake(dir, format);
    let mut cmd = dagrun();
    cmd.current_dir(dir).arg(&file).args(["-q"]);
    Run::from(cmd.output().unwrap()).expect(0);
    let table = dir.join("out/typed");
    let out = Command::new("python3").args(["-c", READERS]).arg(&table).arg(format).arg(&input).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{format}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("ok: 170 rows, 71 files"), "{stdout}");
}

#[test]
fn a_table_of_lean_and_polars_files_reads_the_same_in_pyarrow_and_duckdb() {
    if !runtimes(&[Runtime::DuckDb]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    check_readers(tmp.path(), "parquet");
}

#[test]
fn a_delta_table_of_lean_and_polars_files_reads_the_same_in_deltalake_pyarrow_and_duckdb() {
    if !runtimes(&[Runtime::DuckDb, Runtime::DeltaLake]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    check_readers(tmp.path(), "delta");
}

/// Spark reads both formats' files (the Delta table by the files of its version).
#[test]
fn spark_reads_a_table_of_lean_and_polars_files() {
    if !runtimes(&[Runtime::Spark, Runtime::DeltaLake]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    input(tmp.path());
    for format in ["parquet", "delta"] {
        let file = lake(tmp.path(), format);
        let mut cmd = dagrun();
        cmd.current_dir(tmp.path()).arg(&file).args(["-q", "--set", &format!("output=out-{format}")]);
        Run::from(cmd.output().unwrap()).expect(0);
    }
    let script = r#"
import glob, os, sys
from deltalake import DeltaTable
from pyspark.sql import SparkSession
spark = (SparkSession.builder.master("local[1]").config("spark.sql.session.timeZone", "UTC")
         .config("spark.ui.enabled", "false").getOrCreate())
base = sys.argv[1]
for fmt in ["parquet", "delta"]:
    table = os.path.join(base, f"out-{fmt}", "typed")
    if fmt == "delta":
        files = DeltaTable(table).file_uris()
    else:
        files = [p for p in glob.glob(table + "/**/*.parquet", recursive=True) if "/_" not in p[len(table):]]
    df = spark.read.option("basePath", table).parquet(*files)
    rows = df.collect()
    big = df.where("k = 'big'").count()
    nulls = df.where("s IS NULL").count()
    over = df.where("i > 50000000").count()
    print(f"{fmt}: {len(rows)} rows, big {big}, null s {nulls}, i over {over}, columns {sorted(df.columns)}", flush=True)
spark.stop()
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(tmp.path())
        .env("PYSPARK_PYTHON", "python3")
        .env("SPARK_LOCAL_IP", "127.0.0.1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    // n % 5 == 3 has a null s: 34 of 170; i > 50,000,000: n - 60 > 49.99, n in 110..170 minus nulls.
    let over = (110..170).filter(|n| n % 7 != 3).count();
    for format in ["parquet", "delta"] {
        let line = format!(
            "{format}: 170 rows, big 100, null s 34, i over {over}, columns ['b', 'd', 'f', 'i', 'i32', 'k', 's', 't']"
        );
        assert!(stdout.contains(&line), "expected `{line}` in:\n{stdout}");
    }
}
