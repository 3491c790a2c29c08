#!/usr/bin/env python3
"""Side-by-side benchmark of the Sparkify ETL: dagrun (release build) against DuckDB, stock Polars
from Python and, with --spark, PySpark local[N], on the same generated data, the same contract
(read from pipelines/sparkify.yaml), the same threads, in one run on one machine. Checks that
every engine's tables agree with dagrun's, and prints wall time, peak RSS, ratios and per-phase
times, plus the floor: reading every input byte once and creating every output file.

    python3 tests/bench/run.py --songs 100000 --events 1000000 --threads 2
    python3 tests/bench/run.py --only dagrun --scaling 10     # how dagrun grows at 10x the events
    python3 tests/bench/run.py --only dagrun --nightly        # one new day against a full run

Needs: cargo build --release; pip install -r tests/bench/requirements.txt (pyspark for --spark).
"""

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DAGRUN = ROOT / "target" / "release" / "dagrun"
TABLES = ["songplays", "users", "songs", "artists", "time"]


def measured(cmd, env=None, cwd=None):
    """Runs a command under /usr/bin/time: (wall seconds, peak RSS MiB, stdout)."""
    stats = pathlib.Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-time-{os.getpid()}"
    full = ["/usr/bin/time", "-o", str(stats), "-f", "%e %M"] + [str(c) for c in cmd]
    proc = subprocess.run(full, env={**os.environ, **(env or {})}, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    wall, rss_kb = stats.read_text().split()[-2:]
    stats.unlink()
    return float(wall), int(rss_kb) / 1024, proc.stdout


def generate(work, songs, events):
    data = work / f"data-{songs}-{events}"
    marker = data / ".complete"
    if not marker.exists():
        shutil.rmtree(data, ignore_errors=True)
        subprocess.run([DAGRUN, "generate", "--out", data, "--songs", str(songs), "--events", str(events), "--seed", "1"], check=True)
        marker.write_text("ok")
    return data


def settle(floor, data, threads):
    """Puts the machine in the same state before every measurement: dirty pages written back,
    the kernel's caches of names and inodes emptied where we may (root: the inode and dentry
    hashes grow with every file created, and creating files gets slower as they do: the same
    floor measured 3.7 s and 8.3 s minutes apart without this), then every input read once so
    that every engine reads warm files."""
    subprocess.run(["sync"], check=False)
    try:
        pathlib.Path("/proc/sys/vm/drop_caches").write_text("2\n")
    except OSError:
        pass
    floor_read(floor, data, threads)


def build_floor(work):
    """Compiles tests/bench/floor.c (the compiled floor) into the work folder, once per change."""
    source = HERE / "floor.c"
    binary = work / "floor"
    if not binary.exists() or binary.stat().st_mtime < source.stat().st_mtime:
        subprocess.run(["cc", "-O2", "-pthread", "-o", binary, source], check=True)
    return binary


def floor_read(floor, data, threads):
    """Reads every input byte once, `threads` files at a time, with the compiled floor."""
    paths = "\n".join(str(p) for p in sorted(data.rglob("*.json"))) + "\n"
    proc = subprocess.run([floor, "read", str(threads)], input=paths, capture_output=True, text=True, check=True)
    return float(proc.stdout.split()[0])


class Trash:
    """Outputs are moved aside, not deleted, until every measurement is done: ext4 skips inodes
    freed in the last 60 s (360 s while their table block is dirty) when it allocates new ones,
    so creating 100,000 files right after deleting 100,000 others is several times slower, and
    whichever engine ran after a delete would pay for it."""

    def __init__(self, work, keep=False):
        self.dir = work / "trash"
        self.keep = keep
        if self.dir.exists():
            if keep:
                self.dir.rename(work / f"trash-{time.strftime('%Y%m%dT%H%M%S')}")
            else:
                print(f"deleting {self.dir} left by an earlier run (file creation may be slower for a few minutes)")
                shutil.rmtree(self.dir, ignore_errors=True)
        self.count = 0

    def discard(self, path):
        if path.exists():
            self.dir.mkdir(parents=True, exist_ok=True)
            self.count += 1
            path.rename(self.dir / f"{path.name}-{os.getpid()}-{self.count}")

    def empty(self):
        if self.keep:
            print(f"kept {self.dir} (--keep-trash): delete it when no measurement follows for a few minutes")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


def floor_write(floor, reference, target, threads):
    """Creates every file of `reference` (same paths, same sizes, folders made once) under
    `target` with the compiled floor: the least any writer of this lake pays the file system."""
    files = sorted(lake_files(reference).items())
    listing = "".join(f"{size} {rel}\n" for rel, size in files)
    proc = subprocess.run([floor, "write", str(threads), str(target)], input=listing, capture_output=True, text=True, check=True)
    seconds, count = proc.stdout.split()
    return float(seconds), int(count)


def dagrun_phases(out):
    runs = out / "_dagrun"
    record = json.loads((runs / (runs / "LATEST").read_text().strip() / "run.json").read_text())
    tasks = record["tasks"]

    def span(kinds=None, ids=None):
        picked = [t for t in tasks if t["attempts"] and (kinds is None or t["kind"] in kinds) and (ids is None or t["id"] in ids)]
        if not picked:
            return 0.0
        start = min(a["started_at_ms"] for t in picked for a in t["attempts"])
        end = max(a["started_at_ms"] + a["duration_s"] * 1000 for t in picked for a in t["attempts"])
        return (end - start) / 1000

    return {
        "read song_data": span(ids={"staging_songs"}),
        "read log_data": span(ids={"staging_events"}),
        "transforms and checks": span(kinds={"transform", "quality_check"}),
        "write": span(kinds={"load"}),
        "write songs": span(ids={"load_songs"}),
        # Fingerprinting local inputs by their bytes (a fresh lake: no cached hash, every file read).
        "hash inputs": record.get("inputs_hashed", {}).get("seconds", 0.0),
    }


def run_dagrun(data, out, threads, only=(), table_format="delta"):
    env = {"POLARS_MAX_THREADS": str(threads)}
    cmd = [DAGRUN, ROOT / "pipelines" / "sparkify.yaml", "--set", f"input={data}", "--set", f"output={out}",
           "--set", f"format={table_format}", "--threads", str(threads), "--jobs", str(threads), "-q", "--force"]
    for task in only:
        cmd += ["--only", task]
    wall, rss, _ = measured(cmd, env)
    return wall, rss, dagrun_phases(out)


def dagrun_reads_alone(data, work, threads, trash):
    """Each extract run by itself (`--only`), as the other engines read: in the pipeline both
    extracts run at once and share the cores, so their spans there are not read speeds. The time
    is the whole process (start, plan, listing the files, reading, the run record), which
    overstates the read a little rather than leaving the listing out."""
    alone = {}
    for task, phase in [("staging_songs", "read song_data"), ("staging_events", "read log_data")]:
        out = work / "out-dagrun-read"
        trash.discard(out)
        wall, _, _ = run_dagrun(data, out, threads, only=[task])
        alone[phase] = wall
        trash.discard(out)
    return alone


def lake_files(out):
    """Every data and log file of the lake (not the run records): path -> size."""
    return {str(p.relative_to(out)): p.stat().st_size for p in out.rglob("*")
            if p.is_file() and "_dagrun" not in p.relative_to(out).parts}


def nightly(data, work, threads, trash):
    """The nightly's case: a lake published from every day but the last, then a run of that one
    new day (`--partition DAY`). Inputs are links to `data`, so nothing is copied."""
    base = work / "data-nightly"
    trash.discard(base)
    days = sorted((data / "log_data").rglob("*.json"))
    last = days[-1]
    (base / "log_data").mkdir(parents=True)
    (base / "song_data").symlink_to((data / "song_data").resolve())
    for f in days[:-1]:
        target = base / "log_data" / f.relative_to(data / "log_data")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(f.resolve())
    out = work / "out-dagrun-nightly"
    trash.discard(out)
    env = {"POLARS_MAX_THREADS": str(threads)}
    cmd = [DAGRUN, ROOT / "pipelines" / "sparkify.yaml", "--set", f"input={base}", "--set", f"output={out}",
           "--threads", str(threads), "--jobs", str(threads), "-q"]
    full_wall, full_rss, _ = measured(cmd, env)
    before = lake_files(out)
    target = base / "log_data" / last.relative_to(data / "log_data")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(last.resolve())
    day = last.name[:10]
    day_wall, day_rss, stdout = measured(cmd + ["--partition", day], env)
    after = lake_files(out)
    new = {p: n for p, n in after.items() if p not in before}
    result = {
        "day": day,
        "full": {"wall": full_wall, "rss": full_rss, "files": len(before), "bytes": sum(before.values())},
        "one day": {"wall": day_wall, "rss": day_rss, "files": len(new), "bytes": sum(new.values())},
        "summary": [line for line in stdout.splitlines() if line.startswith("days:")],
    }
    trash.discard(out)
    trash.discard(base)
    return result


def run_script(script, args, env=None):
    wall, rss, stdout = measured([sys.executable, HERE / script] + [str(a) for a in args], env, cwd=HERE)
    result = json.loads(stdout.strip().splitlines()[-1])
    return wall, rss, result["phases"]


# --- comparing outputs --------------------------------------------------------------------------


def canonical(table_dir):
    """A table as one sorted Polars frame of normalized values, columns by name: partition
    values from the hive path (an engine that also stores them in the files agrees), timestamps
    as epoch milliseconds, every integer as Int64, floats rounded to 6 places, NaN as null."""
    import polars as pl

    if (table_dir / "_delta_log").is_dir():
        # A Delta table: the files of its current version, as the deltalake package lists them.
        from deltalake import DeltaTable

        files = sorted(DeltaTable(str(table_dir)).file_uris())
    else:
        files = sorted(str(p) for p in table_dir.rglob("*.parquet") if not any(part.startswith(("_", ".")) for part in p.relative_to(table_dir).parts))
    if not files:
        return pl.DataFrame()
    frame = pl.scan_parquet(files, hive_partitioning=True, missing_columns="insert", extra_columns="ignore").collect()
    columns = []
    for name in sorted(frame.columns):
        col = frame.get_column(name)
        if col.dtype == pl.Datetime or col.dtype == pl.Date:
            col = col.cast(pl.Datetime("ms")).dt.epoch("ms")
        elif col.dtype.is_float():
            col = col.fill_nan(None).round(6)
        elif col.dtype.is_integer() or col.dtype == pl.Boolean:
            col = col.cast(pl.Int64)
        elif col.dtype != pl.String:
            col = col.cast(pl.String)
        columns.append(col.alias(name))
    table = pl.DataFrame(columns)
    return table.sort(table.columns, nulls_last=True)


def compare(reference, other):
    """Per table: columns, row counts, then every value (both sides sorted the same way)."""
    import polars as pl

    problems = []
    for t in TABLES:
        ref, got = canonical(reference / t), canonical(other / t)
        if ref.columns != got.columns:
            problems.append(f"{t}: columns {got.columns} != {ref.columns}")
        elif ref.height != got.height:
            problems.append(f"{t}: {got.height} rows != {ref.height}")
        elif ref.schema != got.schema:
            problems.append(f"{t}: types {dict(got.schema)} != {dict(ref.schema)}")
        elif not ref.equals(got, null_equal=True):
            same = pl.DataFrame([(ref.get_column(c) == got.get_column(c)).fill_null(ref.get_column(c).is_null() & got.get_column(c).is_null()).alias(c) for c in ref.columns])
            row = same.with_row_index().filter(~pl.all_horizontal(pl.exclude("index"))).get_column("index")[0]
            problems.append(f"{t}: contents differ (first at sorted row {row}: {got.row(row)} vs {ref.row(row)})")
    return problems



def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--songs", type=int, default=100_000)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--spark", action="store_true", help="also run PySpark local[N]")
    ap.add_argument("--only", help="comma-separated engines to run: dagrun,dagrun-parquet,duckdb,polars,spark")
    ap.add_argument("--work", default=str(ROOT / "target" / "bench"), help="where data and outputs go")
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--reuse", help="comma-separated engines whose last results and outputs to reuse instead of running again")
    ap.add_argument("--scaling", type=int, metavar="K", help="also run dagrun on K times the events and report how time and memory grow")
    ap.add_argument("--nightly", action="store_true", help="also run the nightly case: one new day over a lake of every other day")
    ap.add_argument("--repeat", type=int, default=3, help="dagrun and the floor run this many times in turns; medians are compared")
    ap.add_argument("--keep-trash", action="store_true",
                    help="delete no output, even at the end (for runs in a row: a mass delete slows file creation for minutes)")
    args = ap.parse_args()
    if not DAGRUN.exists():
        sys.exit("build the release binary first: cargo build --release")
    # dagrun publishes Delta tables (the pipeline's format); dagrun-parquet is the same run in
    # dagrun's plain Parquet convention, to show what the Delta commit costs.
    engines = ["dagrun", "dagrun-parquet", "duckdb", "polars"] + (["spark"] if args.spark else [])
    if args.only:
        engines = [e for e in args.only.split(",") if e]
    work = pathlib.Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    data = generate(work, args.songs, args.events)
    input_bytes = sum(p.stat().st_size for p in data.rglob("*.json"))
    n_song_files = sum(1 for _ in (data / "song_data").rglob("*.json"))
    print(f"data: {n_song_files:,} song files, {args.events:,} events, {input_bytes / 1e9:.2f} GB; threads {args.threads}; cores {os.cpu_count()}")

    # Read every input once to warm the page cache, so every engine reads warm files (the first
    # engine would otherwise pay for the disk alone); the floor is the second, warm read.
    floor_bin = build_floor(work)

    trash = Trash(work, keep=args.keep_trash)
    results = {}
    outputs = {}
    in_pipeline = None
    reuse = set((args.reuse or "").split(","))
    for engine in engines:
        out = work / f"out-{engine}"
        saved = work / f"result-{engine}-{args.songs}-{args.events}-{args.threads}.json"
        if engine in reuse and saved.exists() and out.exists():
            results[engine] = tuple(json.loads(saved.read_text()))
            outputs[engine] = out
            print(f"reusing {engine} from {saved.name}")
            continue
        trash.discard(out)
        out.mkdir(parents=True)
        settle(floor_bin, data, args.threads)
        print(f"running {engine}...", flush=True)
        if engine == "dagrun":
            # dagrun and the floor, `--repeat` times in turns, each after `settle`: the machine's
            # noise (file creation varies 2x from minute to minute here) hits both alike, and the
            # medians are compared.
            runs = []
            for k in range(args.repeat):
                lake = out if k == 0 else work / f"out-dagrun-{k}"
                if k:
                    trash.discard(lake)
                    settle(floor_bin, data, args.threads)
                wall, rss, ph = run_dagrun(data, lake, args.threads)
                settle(floor_bin, data, args.threads)
                read = floor_read(floor_bin, data, args.threads)
                trash.discard(work / "floor-out")
                create, n_files = floor_write(floor_bin, lake, work / "floor-out", args.threads)
                trash.discard(work / "floor-out")
                runs.append({"wall": wall, "rss": rss, "phases": ph, "read": read, "create": create, "files": n_files})
                print(f"  run {k + 1}: dagrun {wall:.2f} s, floor {read + create:.2f} s (read {read:.2f}, create {create:.2f}): {wall / (read + create):.2f}x", flush=True)
                if k:
                    trash.discard(lake)
            middle = sorted(runs, key=lambda r: r["wall"])[len(runs) // 2]
            wall, rss, ph = middle["wall"], max(r["rss"] for r in runs), middle["phases"]
            median = lambda key: sorted(r[key] for r in runs)[len(runs) // 2]
            floor_runs = {"read every input byte": median("read"), "create every output file": median("create"),
                          "files": runs[0]["files"], "pairs": [(r["wall"], r["read"] + r["create"]) for r in runs]}
            settle(floor_bin, data, args.threads)
            in_pipeline = {p: ph[p] for p in ["read song_data", "read log_data"]}
            ph.update(dagrun_reads_alone(data, work, args.threads, trash))
            ph["in pipeline"] = in_pipeline
            ph["floor"] = floor_runs
            results[engine] = (wall, rss, ph)
        elif engine == "dagrun-parquet":
            results[engine] = run_dagrun(data, out, args.threads, table_format="parquet")
        elif engine == "duckdb":
            results[engine] = run_script("duckdb_sparkify.py", [data, out, args.threads])
        elif engine == "polars":
            results[engine] = run_script("polars_sparkify.py", [data, out], {"POLARS_MAX_THREADS": str(args.threads)})
        elif engine == "spark":
            results[engine] = run_script("spark_sparkify.py", [data, out, args.threads])
        outputs[engine] = out
        saved.write_text(json.dumps(results[engine]))

    floor = results["dagrun"][2].get("floor") if "dagrun" in results else None

    agreement = {}
    if "dagrun" in outputs:
        for engine in engines:
            if engine != "dagrun":
                agreement[engine] = compare(outputs["dagrun"], outputs[engine])

    # --- report --------------------------------------------------------------------------------
    phases = ["read song_data", "read log_data", "transforms and checks", "write"]
    print()
    header = f"{'engine':<8} {'wall s':>8} {'peak RSS MiB':>13} {'dagrun/x':>9}  " + "  ".join(f"{p:>22}" for p in phases)
    print(header)
    print("-" * len(header))
    base = results.get("dagrun", (None,))[0]
    for engine, (wall, rss, ph) in results.items():
        ratio = f"{base / wall:>9.3f}" if base else f"{'':>9}"
        cells = "  ".join(f"{ph.get(p, float('nan')):>22.2f}" for p in phases)
        print(f"{engine:<8} {wall:>8.2f} {rss:>13.0f} {ratio}  {cells}")
    if floor:
        total = floor["read every input byte"] + floor["create every output file"]
        print(f"{'floor':<8} {total:>8.2f} {'':>13} {base / total if base else 0:>9.3f}  "
              f"read every input byte {floor['read every input byte']:.2f} s, create all {floor['files']:,} output files {floor['create every output file']:.2f} s")
        if "dagrun" in results:
            d_wall, _, d_ph = results["dagrun"]
            pairs = floor.get("pairs", [])
            if len(pairs) > 1:
                print(f"dagrun and floor in turns ({len(pairs)} runs, medians above): "
                      + ", ".join(f"{d:.2f}/{f:.2f} s = {d / f:.2f}x" for d, f in pairs))
            create = floor["create every output file"]
            print(f"dagrun / compiled floor: whole run {d_wall / total:.2f}x; write phase (every load, {d_ph['write']:.2f} s) "
                  f"{d_ph['write'] / create:.2f}x creating its files; songs write {d_ph['write songs']:.2f} s")
    if "dagrun" in results and "in pipeline" in results["dagrun"][2]:
        inside = results["dagrun"][2]["in pipeline"]
        print(f"dagrun's reads: each extract run alone (--only), the whole process; in the pipeline both run at once "
              f"on the same cores: song_data {inside['read song_data']:.2f} s, log_data {inside['read log_data']:.2f} s")
    print()
    for engine, problems in agreement.items():
        print(f"outputs dagrun vs {engine}: " + ("all 5 tables agree (rows and contents)" if not problems else "; ".join(problems)))

    # --- goals ---------------------------------------------------------------------------------
    goals = []
    if "dagrun" in results:
        d_wall, d_rss, d_ph = results["dagrun"]
        if "duckdb" in results:
            k_wall, k_rss, k_ph = results["duckdb"]
            goals.append(("end to end >= 20x faster than DuckDB", k_wall / d_wall, k_wall / d_wall >= 20))
            goals.append(("song_data read >= 4x faster than DuckDB", k_ph["read song_data"] / d_ph["read song_data"], k_ph["read song_data"] / d_ph["read song_data"] >= 4))
            goals.append(("log_data read <= 1.5x DuckDB", d_ph["read log_data"] / k_ph["read log_data"], d_ph["read log_data"] <= 1.5 * k_ph["read log_data"]))
            goals.append(("peak RSS <= DuckDB's", d_rss / k_rss, d_rss <= k_rss))
        if "dagrun-parquet" in results:
            q_wall = results["dagrun-parquet"][0]
            goals.append(("full run with Delta within 1.2x of the Parquet convention", d_wall / q_wall, d_wall <= 1.2 * q_wall))
        if "polars" in results:
            p_wall = results["polars"][0]
            goals.append(("end to end >= 3x faster than stock Polars", p_wall / d_wall, p_wall / d_wall >= 3))
        if floor:
            total = floor["read every input byte"] + floor["create every output file"]
            goals.append(("end to end within 2.5x of the floor", d_wall / total, d_wall <= 2.5 * total))
        goals.append(("peak RSS <= 1 GiB", d_rss / 1024, d_rss <= 1024))
        hashing = d_ph.get("hash inputs", 0.0) / d_wall
        goals.append(("content fingerprints (every input hashed) under 5% of the run", hashing, hashing < 0.05))
        print()
        for name, value, ok in goals:
            print(f"  [{'PASS' if ok else 'FAIL'}] {name}: {value:.2f}")
    scaling = None
    if args.scaling and "dagrun" in results:
        big_events = args.events * args.scaling
        big = generate(work, args.songs, big_events)
        out = work / "out-dagrun-scaling"
        trash.discard(out)
        print(f"\nrunning dagrun on {big_events:,} events ({sum(p.stat().st_size for p in big.rglob('*.json')) / 1e9:.2f} GB)...", flush=True)
        wall, rss, ph = run_dagrun(big, out, args.threads)
        d_wall, d_rss, _ = results["dagrun"]
        ratio = wall / d_wall
        scaling = {"events": big_events, "wall": wall, "rss": rss, "phases": ph, "ratio": ratio}
        print(f"dagrun at {big_events:,} events: {wall:.2f} s, peak RSS {rss:.0f} MiB; x{args.scaling} events -> x{ratio:.2f} time, x{rss / d_rss:.2f} memory")
        print("  " + ", ".join(f"{p} {ph[p]:.2f} s" for p in phases))
        ok_time = ratio <= args.scaling * 1.1
        ok_rss = rss < 4096
        print(f"  [{'PASS' if ok_time else 'FAIL'}] time grows at most linearly (ratio <= {args.scaling * 1.1:.0f}): {ratio:.2f}")
        print(f"  [{'PASS' if ok_rss else 'FAIL'}] peak RSS under 4 GB: {rss:.0f} MiB")
        trash.discard(out)
    night = None
    if args.nightly:
        print("\nrunning the nightly case: a lake of every day but the last, then that one day...", flush=True)
        night = nightly(data, work, args.threads, trash)
        full, day = night["full"], night["one day"]
        print(f"{'':<24} {'wall s':>8} {'files written':>14} {'MB written':>11}")
        for name, r in [("full run (all but 1 day)", full), (f"one new day ({night['day']})", day)]:
            print(f"{name:<24} {r['wall']:>8.2f} {r['files']:>14,} {r['bytes'] / 1e6:>11.1f}")
        share = day["wall"] / full["wall"]
        print(f"  {' / '.join(night['summary'])}")
        print(f"  one day / full: time {share:.1%}, files {day['files'] / full['files']:.2%}, bytes {day['bytes'] / full['bytes']:.2%}")
        ok = share < 0.05
        print(f"  [{'PASS' if ok else 'FAIL'}] a one-day run costs under 5% of a full run: {share:.1%}")
        goals.append(("one new day under 5% of a full run", share, ok))
    if args.json:
        pathlib.Path(args.json).write_text(
            json.dumps({"results": results, "floor": floor, "agreement": agreement, "goals": goals, "scaling": scaling,
                        "nightly": night}, indent=2)
        )
    trash.empty()



if __name__ == "__main__":
    main()
