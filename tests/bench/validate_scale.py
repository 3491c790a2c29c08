#!/usr/bin/env python3
"""How `dagrun validate` grows with the number of tasks: generated pipelines of 2,000 to 20,000
tasks in two shapes, timed in one run on one machine.

- groups: independent extract -> transform -> check -> load groups, each load in its own folder;
- chain: the same groups, but each transform also reads the previous group's transform, so the
  DAG is one deep chain (the worst case for anything that walks ancestors).

    python3 tests/bench/validate_scale.py                 # target/release/dagrun
    python3 tests/bench/validate_scale.py --binary target/debug/dagrun --tasks 2000 8000

The goal (issue "never lose data"): near-linear, 20,000 tasks in under 5 s.
"""

import argparse
import pathlib
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]


def pipeline(tasks, chain):
    groups = tasks // 4
    out = ["name: scale", "vars: {input: in, output: out}", "tasks:"]
    for g in range(groups):
        deps = f"[e{g}]" if not chain or g == 0 else f"[e{g}, t{g - 1}]"
        sql = (
            f"SELECT a, b FROM e{g}"
            if not chain or g == 0
            else f"SELECT e{g}.a, e{g}.b FROM e{g} JOIN t{g - 1} ON e{g}.a = t{g - 1}.a"
        )
        out += [
            f"  - id: e{g}",
            "    kind: extract",
            f"    path: ${{input}}/e{g}",
            "    format: jsonl",
            "    schema: {a: int, b: string}",
            f"  - id: t{g}",
            "    kind: transform",
            f"    depends_on: {deps}",
            f"    sql: {sql}",
            f"  - id: c{g}",
            "    kind: quality_check",
            f"    depends_on: [t{g}]",
            f"    table: t{g}",
            "    checks: [{not_null: [a]}, {unique: a}]",
            f"  - id: l{g}",
            "    kind: load",
            f"    depends_on: [c{g}]",
            f"    table: t{g}",
            f"    path: ${{output}}/t{g}",
        ]
    return "\n".join(out) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", default=str(ROOT / "target" / "release" / "dagrun"))
    parser.add_argument("--tasks", type=int, nargs="+", default=[2000, 8000, 20000])
    args = parser.parse_args()
    args.binary = str(pathlib.Path(args.binary).resolve())
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for shape in ("groups", "chain"):
            for n in args.tasks:
                path = pathlib.Path(work) / f"{shape}-{n}.yaml"
                path.write_text(pipeline(n, shape == "chain"))
                start = time.perf_counter()
                proc = subprocess.run([args.binary, "validate", str(path)], cwd=work, capture_output=True, text=True)
                wall = time.perf_counter() - start
                if proc.returncode != 0:
                    sys.exit(f"validate {path.name} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
                rows.append((shape, n, wall))
    print("| shape | tasks | validate s | s per 1,000 tasks |")
    print("| --- | ---: | ---: | ---: |")
    for shape, n, wall in rows:
        print(f"| {shape} | {n:,} | {wall:.2f} | {wall / n * 1000:.3f} |")


if __name__ == "__main__":
    main()
