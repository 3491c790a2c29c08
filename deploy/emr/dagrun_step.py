"""dagrun's Spark step program: runs dagrun tasks on Spark (EMR, or any spark-submit).

    spark-submit dagrun_step.py TASK.json [TASK.json ...]

Each TASK.json (written by dagrun's EMR engine, or `dagrun emr specs`) is one task, or a list of
tasks run in order in one Spark session:

- extract:   read JSON documents or JSON lines with the declared schema (numbers where text is
             declared keep their text; "" in a numeric column is null; whole floats are integers;
             a record that cannot be read or cast is quarantined with its file and reason, and
             more than max_bad_records of them fail the step), then publish the table;
- transform: register each input table (a published table, read through its _manifest.json)
             as a view named after its task, run the SQL with Spark SQL, publish the result;
- load:      publish an input table at its path, hive-partitioned, the way dagrun's local engine
             does.

Publishing follows dagrun's convention. On s3:// the files go beside the current ones under names
carrying the run's tag, are checked, then `_manifest.json` is replaced in one PUT, `_SUCCESS`
rewritten, and only then the files the manifest does not name are deleted. Elsewhere (a local
folder, HDFS) the table is completed in a hidden staging folder and renamed into place. Paths may
be s3:// URIs or local folders; everything goes through Hadoop's FileSystem API.
"""

import json
import re
import sys
import time

from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

MANIFEST = "_manifest.json"
SUCCESS = "_SUCCESS"
# dagrun's mark on a table's place on S3, written before its first file.
TABLE_MARKER = "_dagrun_table"


class StepError(Exception):
    """A failure worth one clear line in the step's stderr (dagrun shows its tail)."""


# --- files through Hadoop's FileSystem API ----------------------------------------------------


class Files:
    def __init__(self, spark):
        self.jvm = spark._jvm
        self.conf = spark._jsc.hadoopConfiguration()

    def _path(self, uri):
        return self.jvm.org.apache.hadoop.fs.Path(uri)

    def fs(self, uri):
        return self._path(uri).getFileSystem(self.conf)

    def exists(self, uri):
        return self.fs(uri).exists(self._path(uri))

    def read_text(self, uri):
        stream = self.fs(uri).open(self._path(uri))
        try:
            reader = self.jvm.java.io.BufferedReader(self.jvm.java.io.InputStreamReader(stream, "UTF-8"))
            lines = []
            line = reader.readLine()
            while line is not None:
                lines.append(line)
                line = reader.readLine()
            return "\n".join(lines)
        finally:
            stream.close()

    def write_text(self, uri, text):
        out = self.fs(uri).create(self._path(uri), True)
        try:
            out.write(bytearray(text.encode("utf-8")))
        finally:
            out.close()

    def list_files(self, root):
        """(relative path, size) of every file under root, recursively."""
        fs = self.fs(root)
        base = self._path(root)
        if not fs.exists(base):
            return []
        qualified = fs.makeQualified(base).toString().rstrip("/")
        out = []
        it = fs.listFiles(base, True)
        while it.hasNext():
            status = it.next()
            full = status.getPath().toString()
            rel = full[len(qualified) :].lstrip("/")
            out.append((rel, status.getLen()))
        return sorted(out)

    def rename(self, src, dst):
        fs = self.fs(src)
        parent = self._path(dst).getParent()
        if parent is not None:
            fs.mkdirs(parent)
        if not fs.rename(self._path(src), self._path(dst)):
            raise StepError(f"could not move {src} to {dst}")

    def delete(self, uri, recursive=True):
        fs = self.fs(uri)
        if fs.exists(self._path(uri)):
            fs.delete(self._path(uri), recursive)


def join(root, rel):
    return root.rstrip("/") + "/" + rel.lstrip("/")


def hidden(rel):
    return any(part.startswith((".", "_")) for part in rel.split("/"))


DAGRUN_FILE = re.compile(r"part-\d{5}-.+-\d+\.parquet")


def dagrun_named(rel):
    """A data file as dagrun names them in its hive folders: what its cleanup may take."""
    folders, _, name = rel.rpartition("/")
    in_hive = not folders or all("=" in f and not f.startswith("=") for f in folders.split("/"))
    return in_hive and DAGRUN_FILE.fullmatch(name) is not None


def glob_regex(glob):
    """dagrun's globs, as the local engine's globset reads them (literal separators): `*` and `?`
    stay within a folder, `**` crosses folders (`**/x`, `x/**`, `a/**/b`), `[abc]`, `[a-z]` and
    `[!abc]` are classes, `{a,b}` are alternatives, and a backslash makes the next character
    literal."""
    return re.compile(_glob_part(glob, top=True) + r"\Z")


def _glob_part(glob, top=False):
    out = ""
    i = 0
    n = len(glob)
    while i < n:
        c = glob[i]
        if glob.startswith("**", i) and (i == 0 or glob[i - 1] == "/") and (i + 2 == n or glob[i + 2] == "/"):
            if i + 2 == n:
                # `**` at the end: everything below.
                out += ".*"
                i += 2
            else:
                # `**/`: zero or more folders.
                out += "(?:.*/)?"
                i += 3
        elif c == "*":
            out += "[^/]*"
            i += 1
        elif c == "?":
            out += "[^/]"
            i += 1
        elif c == "\\" and i + 1 < n:
            out += re.escape(glob[i + 1])
            i += 2
        elif c == "[":
            end = i + 1
            if end < n and glob[end] in "!^":
                end += 1
            if end < n and glob[end] == "]":
                end += 1
            while end < n and glob[end] != "]":
                end += 1
            if end >= n:
                raise StepError(f"invalid glob `{glob}`: unclosed character class")
            body = glob[i + 1 : end]
            negate = body[:1] in ("!", "^")
            if negate:
                body = body[1:]
            escaped = "".join("\\" + ch if ch in "\\^]" else ch for ch in body)
            out += f"[^/{escaped}]" if negate else f"[{escaped}]"
            i = end + 1
        elif c == "{":
            depth, end = 1, i + 1
            while end < n and depth:
                depth += {"{": 1, "}": -1}.get(glob[end], 0)
                end += 1
            if depth:
                raise StepError(f"invalid glob `{glob}`: unclosed alternatives")
            inner = glob[i + 1 : end - 1]
            if "{" in inner:
                raise StepError(f"invalid glob `{glob}`: nested alternatives")
            out += "(?:" + "|".join(_glob_part(a) for a in inner.split(",")) + ")"
            i = end
        else:
            out += re.escape(c)
            i += 1
    return out


def slice_regex(template):
    """A `slice_path` template (`{year}/{month}/{year}-{month}-{day}-*.json`) as a regular
    expression matching the end of a file's path, with the file's year, month and day as groups:
    a placeholder named twice must read the same both times, as the local engine requires."""
    out = ""
    seen = set()
    for token in re.split(r"(\{year\}|\{month\}|\{day\})", template):
        if token in ("{year}", "{month}", "{day}"):
            name = token[1:-1]
            width = 4 if name == "year" else 2
            out += f"(?P={name})" if name in seen else f"(?P<{name}>\\d{{{width}}})"
            seen.add(name)
        elif token:
            out += _glob_part(token)
    return re.compile(r"(?:^|/)" + out + r"\Z")


def day_number(year, month, day):
    """Days since 1970-01-01 of a civil date, or None when there is no such date."""
    import datetime

    try:
        return (datetime.date(year, month, day) - datetime.date(1970, 1, 1)).days
    except ValueError:
        return None


def day_text(number):
    import datetime

    return (datetime.date(1970, 1, 1) + datetime.timedelta(days=number)).isoformat()


def slice_reason(e):
    """For a sliced extract, a column giving why a row is quarantined by its day, as the local
    engine does (`crates/polars/src/days.rs`): its `slice_column` is empty, or falls farther from
    its file's day than `slice_tolerance`. `None` for other extracts."""
    template = (e.get("slice") or {}).get("text")
    column = e.get("slice_column")
    if not template or not column:
        return None
    tolerance = int(e.get("slice_tolerance") or 0)
    pattern = slice_regex(template)
    source = next(c["from"] for c in e["columns"] if c["name"] == column)

    def why(path, text):
        found = pattern.search(path or "")
        if not found:
            return None
        file_day = day_number(int(found.group("year")), int(found.group("month")), int(found.group("day")))
        if file_day is None:
            return None
        try:
            millis = None if text is None or not str(text).strip() else int(float(str(text).strip()))
        except ValueError:
            return None  # quarantined for its type already
        if millis is None:
            return f"column `{column}` is empty: the row's day is unknown, so no run of a day would hold it"
        day = millis // 86_400_000
        distance = abs(day - file_day)
        if distance > tolerance:
            return (
                f"column `{column}` falls on {day_text(day)}, {distance} days from its file's day "
                f"{day_text(file_day)}, farther than slice_tolerance ({tolerance}d): no run of its day reads this file"
            )
        return None

    return F.udf(why, T.StringType())(F.col("_file"), F.col(f"`{source}`"))


# --- reading ---------------------------------------------------------------------------------


def read_table(spark, files, location):
    """A table published by dagrun, read through its manifest (partition columns from folders),
    and its row count as the manifest states it."""
    manifest = json.loads(files.read_text(join(location, MANIFEST)))
    paths = [join(location, f["path"]) for f in manifest["files"]]
    if not paths:
        raise StepError(f"{location} holds no files")
    return spark.read.option("basePath", location).parquet(*paths), int(manifest.get("rows", 0))


MIN_TIMESTAMP_MS = -62_135_596_800_000
MAX_TIMESTAMP_MS = 253_402_300_799_999

SPARK_TYPES = {"string": "string", "int": "bigint", "float": "double", "bool": "boolean", "timestamp_ms": "bigint"}


def hadoop_glob(name):
    """A dagrun glob of file names (no `/`) in Hadoop's GlobFilter syntax: the same but `[^...]`."""
    return name.replace("[!", "[^")


def source_paths(files, e):
    """What Spark reads for an extract, and the options that make it read exactly the matched files.

    A glob of the form `**` or `**/<file name pattern>` (Sparkify's `**/*.json`) is read by its
    root with `recursiveFileLookup` and `pathGlobFilter`: Spark lists the prefix itself, in pages of
    1,000 keys, instead of being handed hundreds of thousands of paths that its file index would
    look up one request at a time. Other globs are matched here, on one recursive listing, and the
    matched files are passed by name. Returns (paths, options, listed), listed being None when
    Spark lists."""
    glob = e.get("glob") or "**"
    by_root = re.fullmatch(r"\*\*(?:/([^/]+))?", glob)
    if by_root and "**" not in (by_root.group(1) or ""):
        if not files.exists(e["path"]):
            raise StepError(f"listing {e['path']}: no such folder or prefix")
        options = {"recursiveFileLookup": "true"}
        if by_root.group(1) not in (None, "*"):
            options["pathGlobFilter"] = hadoop_glob(by_root.group(1))
        return [e["path"]], options, None
    pattern = glob_regex(glob)
    listed = [rel for rel, _ in files.list_files(e["path"]) if not hidden(rel) and pattern.match(rel)]
    if not listed and not files.exists(e["path"]):
        raise StepError(f"listing {e['path']}: no such folder or prefix")
    return [join(e["path"], rel) for rel in listed], {}, listed


def split_documents(text):
    """The JSON documents of a file, as the local engine reads them: one object, several
    concatenated objects, or arrays (kept whole, their objects are rows). An unparseable tail is one
    more document, which then fails to parse and is quarantined. Texts are kept as written, so that
    numbers read as text keep their digits."""
    if text is None:
        return []
    decoder = json.JSONDecoder()
    out = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i] in " \t\r\n":
            i += 1
        if i >= n:
            return out
        try:
            _, end = decoder.raw_decode(text, i)
        except ValueError:
            out.append(text[i:])
            return out
        out.append(text[i:end])
        i = end


def read_documents(spark, files, e, schema):
    """`format: json` files as rows of the declared fields (text), `_corrupt` and `_file`, with
    every concatenated object a row (Spark's multiLine reader would keep only the first), and the
    documents themselves (for drift)."""
    paths, options, listed = source_paths(files, e)
    if not paths:
        empty = spark.createDataFrame([], schema.add("_file", T.StringType()))
        return empty, spark.createDataFrame([], "doc string, _file string"), listed
    text = spark.read.options(**options).text(paths, wholetext=True).withColumn("_file", F.input_file_name())
    split = F.udf(split_documents, T.ArrayType(T.StringType()))
    docs = text.select(F.explode(split("value")).alias("doc"), "_file")
    opts = {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": "_corrupt"}
    plain = T.StructType([f for f in schema.fields if f.name != "_corrupt"])
    one = F.from_json("doc", schema, opts)
    many = F.from_json("doc", T.ArrayType(plain), opts)
    is_array = F.ltrim("doc").startswith("[") & many.isNotNull()
    as_row = F.struct(*[one[f.name].alias(f.name) for f in schema.fields])
    items = F.when(is_array, F.transform(many, lambda r: F.struct(*[r[f.name].alias(f.name) for f in plain.fields], F.lit(None).cast("string").alias("_corrupt")))).otherwise(F.array(as_row))
    raw = docs.select(F.explode(items).alias("r"), "_file").select("r.*", "_file")
    return raw, docs, listed


def extract(spark, files, spec):
    e = spec["extract"]
    fields = []
    for c in e["columns"]:
        if c["from"] not in fields:
            fields.append(c["from"])
    # Every field is read as text and converted here, so the rules match the local engine's.
    schema = T.StructType([T.StructField(f, T.StringType()) for f in fields] + [T.StructField("_corrupt", T.StringType())])
    if e["format"] == "json":
        raw, docs, listed = read_documents(spark, files, e, schema)
    else:
        paths, options, listed = source_paths(files, e)
        reader = spark.read.schema(schema).options(**options).option("mode", "PERMISSIVE").option("columnNameOfCorruptRecord", "_corrupt")
        if paths:
            raw = reader.json(paths).withColumn("_file", F.input_file_name())
            docs = spark.read.options(**options).text(paths).select(F.col("value").alias("doc"), F.input_file_name().alias("_file"))
        else:
            raw = spark.createDataFrame([], schema.add("_file", T.StringType()))
            docs = spark.createDataFrame([], "doc string, _file string")
    n_files = len(listed) if listed is not None else len(raw.inputFiles())
    raw = raw.cache()

    reasons = []
    converted = []
    for c in e["columns"]:
        s = F.col(f"`{c['from']}`")
        blank = s.isNull() | (F.trim(s) == "")
        ty = c["type"]
        if ty == "string":
            value, bad = s, F.lit(False)
        elif ty in ("int", "timestamp_ms"):
            num = F.trim(s).cast("double")
            whole = num.isNotNull() & (num == F.floor(num))
            value = F.when(blank, F.lit(None)).otherwise(num.cast("bigint"))
            bad = ~blank & ~whole
            if ty == "timestamp_ms":
                # Years 0001 to 9999: what Parquet readers (DuckDB, Spark, pyarrow) accept.
                outside = whole & ((num < F.lit(MIN_TIMESTAMP_MS)) | (num > F.lit(MAX_TIMESTAMP_MS)))
                reasons.append(
                    F.when(
                        outside,
                        F.concat(
                            F.lit(f"column `{c['name']}`: epoch milliseconds outside the years 0001 to 9999 that Parquet readers accept, found "),
                            s,
                        ),
                    )
                )
                value = F.timestamp_millis(F.when(outside, F.lit(None)).otherwise(value))
        elif ty == "float":
            num = F.trim(s).cast("double")
            value = F.when(blank, F.lit(None)).otherwise(num)
            bad = ~blank & num.isNull()
        elif ty == "bool":
            low = F.lower(F.trim(s))
            value = F.when(low == "true", F.lit(True)).when(low == "false", F.lit(False))
            bad = ~blank & value.isNull()
        else:
            raise StepError(f"unknown column type {ty}")
        expected = {"int": "a whole number", "timestamp_ms": "epoch milliseconds", "float": "a number", "bool": "true or false"}.get(ty)
        if expected:
            reasons.append(F.when(bad, F.concat(F.lit(f"column `{c['name']}`: expected {expected}, found "), s)))
        converted.append(value.alias(c["name"]))
    by_day = slice_reason(e)
    if by_day is not None:
        reasons.append(by_day)
    reason = F.coalesce(F.when(F.col("_corrupt").isNotNull(), F.lit("invalid JSON")), *reasons) if reasons else F.when(F.col("_corrupt").isNotNull(), F.lit("invalid JSON"))
    marked = raw.withColumn("_reason", reason)
    good = marked.where(F.col("_reason").isNull()).select(*converted)
    bad = marked.where(F.col("_reason").isNotNull())
    bad_count = bad.count()
    total = raw.count()
    if bad_count:
        rows = bad.select(
            F.col("_file").alias("file"),
            F.lit(None).cast("long").alias("line"),
            F.col("_reason").alias("reason"),
            F.coalesce(F.col("_corrupt"), F.to_json(F.struct(*[F.col(f"`{f}`") for f in fields]))).alias("record"),
        ).limit(100000).collect()
        if spec.get("quarantine"):
            files.write_text(spec["quarantine"], "".join(json.dumps(r.asDict()) + "\n" for r in rows))
        limit = int(e.get("max_bad_records", 0))
        if bad_count > limit:
            first = rows[0]
            raise StepError(
                f"{bad_count} of {total} records quarantined in {spec.get('quarantine')} (first: {first['file']}: {first['reason']}); more than max_bad_records ({limit})"
            )
    return good, total, bad_count, n_files, source_drift(e, fields, docs, bad)


def source_drift(e, fields, docs, bad):
    """Schema drift, as dagrun's local engine reports it: records quarantined for a wrong type, per
    column, and with on_new_fields warn or fail, the fields no column is read from and
    ignore_fields does not list (in JSON-lines records and one-object documents; Spark cannot tell
    an absent field from a null one, so missing fields are not counted here)."""
    drift = {}
    mismatched = (
        bad.where(F.col("_reason").startswith("column `"))
        .select(F.regexp_extract("_reason", r"^column `([^`]*)`", 1).alias("field"), "_file")
        .groupBy("field")
        .agg(F.count(F.lit(1)).alias("records"), F.min("_file").alias("first"))
        .orderBy("field")
        .collect()
    )
    if mismatched:
        drift["mismatched"] = [r.asDict() for r in mismatched]
    policy = e.get("on_new_fields", "ignore")
    if policy != "ignore":
        known = list(set(fields) | set(e.get("ignore_fields", [])))
        new_fields = (
            docs.select("_file", F.explode(F.expr("json_object_keys(doc)")).alias("field"))
            .where(~F.col("field").isin(known))
            .groupBy("field")
            .agg(F.count(F.lit(1)).alias("records"), F.min("_file").alias("first"))
            .orderBy(F.desc("records"), "field")
            .collect()
        )
        if new_fields:
            drift["new_fields"] = [r.asDict() for r in new_fields]
            if policy == "fail":
                named = ", ".join(f"`{r['field']}` ({r['records']} records, first in {r['first']})" for r in new_fields)
                raise StepError(
                    f"{len(new_fields)} source field(s) not in the schema: {named}; declare them under `schema`, "
                    "list them in `ignore_fields`, or set `on_new_fields: ignore`"
                )
    return drift


# --- publishing ------------------------------------------------------------------------------


def claim(files, target, on_s3):
    """dagrun replaces only tables it created, and never deletes anything else: the place must hold
    a dagrun manifest, dagrun's marker (a first load that did not finish), or nothing."""
    manifest = join(target, MANIFEST)
    if files.exists(manifest):
        try:
            if isinstance(json.loads(files.read_text(manifest))["files"], list):
                return
        except (ValueError, KeyError, TypeError):
            pass
        raise StepError(f"refusing to replace {target}: its {MANIFEST} was not written by dagrun")
    if on_s3 and files.exists(join(target, TABLE_MARKER)):
        return
    present = [rel for rel, _ in files.list_files(target)]
    if present:
        raise StepError(
            f"refusing to replace {target}: it holds files that dagrun did not publish (such as `{present[0]}`) "
            f"and no {MANIFEST}; dagrun only replaces tables it created and never deletes anything else: "
            "move those files away or choose another path"
        )
    if on_s3:
        files.write_text(join(target, TABLE_MARKER), "")


def publish(spark, files, df, target, partition_by, compression, spec, table_name):
    target = target.rstrip("/")
    tag = f"{spec['run_id']}-{spec['attempt']}"
    on_s3 = target.startswith("s3://") or target.startswith("s3a://")
    claim(files, target, on_s3)
    parent, name = target.rsplit("/", 1) if "/" in target else (".", target)
    staging = join(target, f"_staging-{tag}") if on_s3 else join(parent, f".{name}.staging-{tag}")
    files.delete(staging)
    writer = df.write.mode("overwrite").option("compression", "uncompressed" if compression == "none" else compression)
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    writer.parquet(staging)
    written = [(rel, size) for rel, size in files.list_files(staging) if not hidden(rel) and rel.endswith(".parquet")]
    # dagrun's names: part-NNNNN.parquet in each partition folder (with the tag on S3).
    by_dir = {}
    for rel, size in written:
        folder = rel.rsplit("/", 1)[0] if "/" in rel else ""
        by_dir.setdefault(folder, []).append((rel, size))
    placed = []
    for folder in sorted(by_dir):
        for n, (rel, size) in enumerate(sorted(by_dir[folder])):
            base = f"part-{n:05d}-{tag}.parquet" if on_s3 else f"part-{n:05d}.parquet"
            new_rel = f"{folder}/{base}" if folder else base
            placed.append((rel, new_rel, size))
    rows = df.count()
    manifest = {
        "table": table_name,
        "run_id": spec["run_id"],
        "rows": rows,
        "partition_by": list(partition_by),
        "files": [{"path": new_rel, "size": size} for _, new_rel, size in placed],
        "fingerprint": spec.get("fingerprint"),
    }
    if on_s3:
        for rel, new_rel, _ in placed:
            files.rename(join(staging, rel), join(target, new_rel))
        # Check every file before the table becomes current.
        present = dict(files.list_files(target))
        for f in manifest["files"]:
            if present.get(f["path"]) != f["size"]:
                raise StepError(f"checking {join(target, f['path'])}: missing or changed after upload")
        previous = set()
        if files.exists(join(target, MANIFEST)):
            try:
                previous = {f["path"] for f in json.loads(files.read_text(join(target, MANIFEST)))["files"]}
            except (ValueError, KeyError, TypeError):
                previous = set()
        listed = files.list_files(target)
        files.write_text(join(target, MANIFEST), json.dumps(manifest, indent=2))
        files.write_text(join(target, SUCCESS), "")
        keep = {f["path"] for f in manifest["files"]} | {MANIFEST, SUCCESS}
        files.delete(staging)
        # The previous table's files, and files dagrun names that loads which never published
        # left; never another tool's files.
        for rel, _ in listed:
            if rel not in keep and not hidden(rel) and (rel in previous or dagrun_named(rel)):
                files.delete(join(target, rel), False)
    else:
        for rel, new_rel, _ in placed:
            if rel != new_rel:
                files.rename(join(staging, rel), join(staging, new_rel))
        for rel, _ in files.list_files(staging):
            if hidden(rel) or rel.endswith(".crc"):
                files.delete(join(staging, rel), False)
        files.write_text(join(staging, MANIFEST), json.dumps(manifest, indent=2))
        files.write_text(join(staging, SUCCESS), "")
        old = join(parent, f".{name}.old-{tag}")
        claim(files, target, on_s3)
        if files.exists(target):
            files.rename(target, old)
        files.rename(staging, target)
        files.delete(old)
    return rows, len(placed)


# --- tasks -----------------------------------------------------------------------------------


def run_task(spark, files, spec):
    kind = spec["kind"]
    started = time.time()
    result = {"task": spec["task"], "kind": kind}
    if kind == "extract":
        df, total, bad, n_files, drift = extract(spark, files, spec)
        rows, _ = publish(spark, files, df, spec["output"], [], "zstd", spec, spec["task"])
        result.update(rows_in=total, rows_out=rows, quarantined=bad, files=n_files)
        if drift:
            result["drift"] = drift
    elif kind == "transform":
        rows_in = 0
        for name, location in spec["inputs"].items():
            df, rows = read_table(spark, files, location)
            df.createOrReplaceTempView(name)
            rows_in += rows
        out = spark.sql(spec["sql"])
        rows, _ = publish(spark, files, out, spec["output"], [], "zstd", spec, spec["task"])
        result.update(rows_in=rows_in, rows_out=rows)
    elif kind == "load":
        load = spec["load"]
        df, _ = read_table(spark, files, spec["inputs"][load["table"]])
        missing = [c for c in load["partition_by"] if c not in df.columns]
        if missing:
            raise StepError(f"table `{load['table']}` has no column `{missing[0]}` (columns: {', '.join(df.columns)})")
        rows, n = publish(spark, files, df, load["path"], load["partition_by"], load["compression"], spec, load["table"])
        result.update(rows_in=rows, rows_out=rows, files=n)
    else:
        raise StepError(f"{kind} tasks do not run on Spark")
    result["seconds"] = round(time.time() - started, 3)
    if spec.get("result"):
        files.write_text(spec["result"], json.dumps(result))
    print(f"dagrun: {spec['task']} ({kind}) done: {json.dumps(result)}", flush=True)


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    spark = (
        SparkSession.builder.appName("dagrun")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MILLIS")
        .config("spark.sql.sources.partitionOverwriteMode", "static")
        .getOrCreate()
    )
    files = Files(spark)
    try:
        for arg in argv[1:]:
            text = files.read_text(arg) if "://" in arg else open(arg, encoding="utf-8").read()
            specs = json.loads(text)
            for spec in specs if isinstance(specs, list) else [specs]:
                run_task(spark, files, spec)
    except StepError as e:
        print(f"dagrun: error: {e}", file=sys.stderr, flush=True)
        return 1
    finally:
        spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
