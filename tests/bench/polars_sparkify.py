"""The Sparkify contract in stock Polars from Python, as a Python user would write it: scan_ndjson
with the declared schema, the pipeline's own SQL through pl.SQLContext, the same checks, and
write_parquet(partition_by=...). Threads come from POLARS_MAX_THREADS.
Usage: polars_sparkify.py INPUT OUTPUT; prints phase timings as JSON on the last line."""

import glob
import json
import sys
import time

import polars as pl

import contract

TYPES = {"string": pl.String, "int": pl.Int64, "float": pl.Float64, "bool": pl.Boolean, "timestamp_ms": pl.Int64}


def main():
    src, out = sys.argv[1], sys.argv[2]
    extracts, transforms, checks, loads = contract.load()
    ctx = pl.SQLContext()
    phases = {}
    for e in extracts:
        t = time.perf_counter()
        schema = {}
        for name, ty, frm in e["columns"]:
            schema.setdefault(frm, TYPES[ty])
        files = sorted(glob.glob(f"{src}/{e['dir']}/**/*.json", recursive=True))
        df = pl.scan_ndjson(files, schema=schema).collect()
        df = df.select(
            [
                (pl.from_epoch(pl.col(frm), time_unit="ms").dt.replace_time_zone("UTC").alias(name) if ty == "timestamp_ms" else pl.col(frm).alias(name))
                for name, ty, frm in e["columns"]
            ]
        )
        ctx.register(e["id"], df)
        phases[f"read {e['dir']}"] = time.perf_counter() - t
    t = time.perf_counter()
    tables = {}
    for tr in transforms:
        tables[tr["id"]] = ctx.execute(tr["sql"], eager=True)
        ctx.register(tr["id"], tables[tr["id"]])
    failures = 0
    for c in checks:
        for name, sql in contract.check_queries(c):
            failures += ctx.execute(sql.replace("AS VARCHAR", "AS TEXT"), eager=True).item() > 0
    phases["transforms and checks"] = time.perf_counter() - t
    t = time.perf_counter()
    for l in loads:
        df = tables[l["table"]]
        if l["partition_by"]:
            df.write_parquet(f"{out}/{l['dir']}", partition_by=l["partition_by"], compression="zstd")
        else:
            import os

            os.makedirs(f"{out}/{l['dir']}", exist_ok=True)
            df.write_parquet(f"{out}/{l['dir']}/part-00000.parquet", compression="zstd")
    phases["write"] = time.perf_counter() - t
    print(json.dumps({"phases": phases, "failed_checks": int(failures)}))


if __name__ == "__main__":
    main()
