"""The Sparkify contract as the benchmark's other engines run it: read from pipelines/sparkify.yaml
itself (the extract schemas, the transform SQL, the checks, the loads), so every engine runs the
same tables, the same SQL text and the same checks as dagrun."""

import pathlib

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
PIPELINE = ROOT / "pipelines" / "sparkify.yaml"


def load():
    spec = yaml.safe_load(PIPELINE.read_text())
    tasks = spec["tasks"]
    extracts, transforms, checks, loads = [], [], [], []
    for t in tasks:
        kind = t["kind"]
        if kind == "extract":
            columns = []
            for name, col in t["schema"].items():
                if isinstance(col, str):
                    columns.append((name, col, name))
                else:
                    columns.append((name, col["type"], col.get("from", name)))
            sub = t["path"].replace("${input}/", "")
            extracts.append({"id": t["id"], "dir": sub, "format": t["format"], "columns": columns})
        elif kind == "transform":
            transforms.append({"id": t["id"], "sql": t["sql"]})
        elif kind == "quality_check":
            checks.append({"id": t["id"], "table": t["table"], "checks": t["checks"]})
        elif kind == "load":
            loads.append({"table": t["table"], "dir": t["path"].replace("${output}/", ""), "partition_by": t.get("partition_by", [])})
    return extracts, transforms, checks, loads


def check_queries(check_task):
    """(name, SQL returning one count of failures) for each check of a quality_check task."""
    table = check_task["table"]
    out = []
    for c in check_task["checks"]:
        if "not_null" in c:
            cols = c["not_null"] if isinstance(c["not_null"], list) else [c["not_null"]]
            for col in cols:
                out.append((f"not_null({col})", f"SELECT COUNT(*) FROM {table} WHERE {col} IS NULL"))
        elif "unique" in c:
            cols = c["unique"] if isinstance(c["unique"], list) else [c["unique"]]
            keys = ", ".join(cols)
            nn = " AND ".join(f"{k} IS NOT NULL" for k in cols)
            out.append((f"unique({keys})", f"SELECT COUNT(*) FROM (SELECT {keys} FROM {table} WHERE {nn} GROUP BY {keys} HAVING COUNT(*) > 1) d"))
        elif "row_count" in c:
            lo = c["row_count"].get("min", 0)
            out.append(("row_count", f"SELECT CASE WHEN COUNT(*) >= {lo} THEN 0 ELSE 1 END FROM {table}"))
        elif "accepted_values" in c:
            col = c["accepted_values"]["column"]
            values = ", ".join(f"'{v}'" for v in c["accepted_values"]["values"])
            out.append((f"accepted_values({col})", f"SELECT COUNT(*) FROM {table} WHERE {col} IS NOT NULL AND CAST({col} AS VARCHAR) NOT IN ({values})"))
        elif "relationships" in c:
            r = c["relationships"]
            out.append(
                (
                    f"relationships({r['column']})",
                    f"SELECT COUNT(*) FROM {table} t WHERE t.{r['column']} IS NOT NULL AND t.{r['column']} NOT IN (SELECT {r['field']} FROM {r['to']} WHERE {r['field']} IS NOT NULL)",
                )
            )
        elif "sql" in c:
            out.append((c.get("name", "sql"), f"SELECT COUNT(*) FROM ({c['sql']}) q"))
    return out
