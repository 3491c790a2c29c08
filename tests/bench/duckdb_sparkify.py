"""The Sparkify contract in DuckDB (Python package): read_json with the declared columns, the
pipeline's own SQL, the same checks, COPY ... PARTITION_BY to zstd Parquet.
Usage: duckdb_sparkify.py INPUT OUTPUT THREADS; prints phase timings as JSON on the last line."""

import json
import sys
import time

import duckdb

import contract

TYPES = {"string": "VARCHAR", "int": "BIGINT", "float": "DOUBLE", "bool": "BOOLEAN", "timestamp_ms": "BIGINT"}


def main():
    src, out, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
    extracts, transforms, checks, loads = contract.load()
    con = duckdb.connect()
    con.execute(f"SET threads = {threads}")
    phases = {}
    for e in extracts:
        t = time.perf_counter()
        # One read of each source field; columns reading the same field are derived from it.
        fields = {}
        for name, ty, frm in e["columns"]:
            fields.setdefault(frm, TYPES[ty])
        cols = "{" + ", ".join(f"'{f}': '{ty}'" for f, ty in fields.items()) + "}"
        select = ", ".join(
            (f'make_timestamptz("{frm}" * 1000) AS {name}' if ty == "timestamp_ms" else f'"{frm}" AS {name}')
            for name, ty, frm in e["columns"]
        )
        con.execute(
            f"CREATE TABLE {e['id']} AS SELECT {select} FROM read_json('{src}/{e['dir']}/**/*.json', "
            f"format = 'newline_delimited', columns = {cols})"
        )
        phases[f"read {e['dir']}"] = time.perf_counter() - t
    t = time.perf_counter()
    for tr in transforms:
        con.execute(f"CREATE TABLE {tr['id']} AS {tr['sql']}")
    failures = 0
    for c in checks:
        for name, sql in contract.check_queries(c):
            failures += con.execute(sql).fetchone()[0] > 0
    phases["transforms and checks"] = time.perf_counter() - t
    t = time.perf_counter()
    for l in loads:
        parts = ", ".join(l["partition_by"])
        options = "FORMAT PARQUET, COMPRESSION ZSTD" + (f", PARTITION_BY ({parts})" if parts else "")
        target = f"{out}/{l['dir']}" + ("" if parts else "/part-00000.parquet")
        if not parts:
            import os

            os.makedirs(f"{out}/{l['dir']}", exist_ok=True)
        con.execute(f"COPY {l['table']} TO '{target}' ({options})")
    phases["write"] = time.perf_counter() - t
    print(json.dumps({"phases": phases, "failed_checks": int(failures)}))


if __name__ == "__main__":
    main()
