"""The Sparkify contract in PySpark local[N]: spark.read.json with the declared schema, the
pipeline's own SQL, the same checks, partitionBy(...).parquet(...).
Usage: spark_sparkify.py INPUT OUTPUT THREADS; prints phase timings as JSON on the last line."""

import json
import sys
import time

from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

import contract

TYPES = {"string": T.StringType(), "int": T.LongType(), "float": T.DoubleType(), "bool": T.BooleanType(), "timestamp_ms": T.LongType()}


def main():
    src, out, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
    extracts, transforms, checks, loads = contract.load()
    spark = (
        SparkSession.builder.master(f"local[{threads}]")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.shuffle.partitions", str(threads * 2))
        .config("spark.ui.enabled", "false")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    phases = {}
    for e in extracts:
        t = time.perf_counter()
        fields = {}
        for name, ty, frm in e["columns"]:
            fields.setdefault(frm, TYPES[ty])
        schema = T.StructType([T.StructField(f, ty) for f, ty in fields.items()])
        df = spark.read.schema(schema).json(f"{src}/{e['dir']}", recursiveFileLookup=True)
        df = df.select(
            [
                (F.timestamp_millis(F.col(frm)).alias(name) if ty == "timestamp_ms" else F.col(frm).alias(name))
                for name, ty, frm in e["columns"]
            ]
        ).cache()
        df.count()
        df.createOrReplaceTempView(e["id"])
        phases[f"read {e['dir']}"] = time.perf_counter() - t
    t = time.perf_counter()
    for tr in transforms:
        df = spark.sql(tr["sql"]).cache()
        df.count()
        df.createOrReplaceTempView(tr["id"])
    failures = 0
    for c in checks:
        for name, sql in contract.check_queries(c):
            failures += spark.sql(sql.replace("AS VARCHAR", "AS STRING")).collect()[0][0] > 0
    phases["transforms and checks"] = time.perf_counter() - t
    t = time.perf_counter()
    for l in loads:
        writer = spark.table(l["table"]).write.mode("overwrite").option("compression", "zstd")
        if l["partition_by"]:
            writer = writer.partitionBy(*l["partition_by"])
        writer.parquet(f"{out}/{l['dir']}")
    phases["write"] = time.perf_counter() - t
    print(json.dumps({"phases": phases, "failed_checks": int(failures)}))
    spark.stop()


if __name__ == "__main__":
    main()
