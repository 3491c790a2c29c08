"""Test-only AWS server for dagrun's integration tests: moto's server application (S3 and EMR on
one endpoint) behind a fault-injecting middleware, with control routes under /_dagrun/.

Started by the Rust test harness (tests/support.rs) on 127.0.0.1 and a free port; prints
`port N` on stdout once it listens, and exits when its stdin closes (so it never outlives a test).

Control routes (JSON in, JSON out):
  POST /_dagrun/faults    {"rules": [...]}  replace the fault rules, reset the counters (and let
                                            every held request go on)
  POST /_dagrun/release   {}                let every request a `hold` rule holds go on
  GET  /_dagrun/stats                       faults injected so far, by kind, requests seen, and
                                            conditional writes (If-None-Match / If-Match) decided
  POST /_dagrun/upload    {"bucket", "prefix", "dir"}  create the bucket, upload a folder
  POST /_dagrun/download  {"bucket", "prefix", "dir", "manifest": bool}
                          download a prefix; with manifest, only the files `_manifest.json` names
  POST /_dagrun/bucket    {"bucket", "region"}  create an empty bucket; with a region, the bucket
                          answers as S3 does for a bucket in that region (below)
  POST /_dagrun/upload    ... "region" too, the same way
  POST /_dagrun/head      {"bucket", "key"} an object's size, content type, storage class, encryption
  POST /_dagrun/uploads   {"bucket"}        the keys of multipart uploads begun and not completed or aborted
  POST /_dagrun/begin_upload {"bucket", "key"} begin a multipart upload and leave it (a killed writer's)
  POST /_dagrun/prices    {"AmazonEC2": {"m5.xlarge": "0.5"}, "ElasticMapReduce": {...}}
                          what the Price List API's GetProducts answers (AWS's PriceList JSON), per
                          service and instance type; requests are counted in the stats as `pricing`

Buckets in other regions, as S3 answers them: a request signed for another region (the SigV4
credential scope of its Authorization header) gets 301 PermanentRedirect (HEAD, no body) or 400
AuthorizationHeaderMalformed naming the expected region, both with the `x-amz-bucket-region`
header; HeadBucket answers carry that header too. Such answers are counted in the stats as
`wrong_region`.

A fault rule: {"kind": "slowdown" | "error500" | "reset" | "delay" | "hold" | "denied" | "kms_denied",
               "method": "GET", "match": "substring of the path", "bucket": "name",
               "query": "substring of the query string",
               "every": N (every Nth matching request; default 1), "seconds": 1.5 (delay),
               "limit": N (only the first N matching requests; default all)}
`hold` keeps the request, unanswered and not yet given to moto, until POST /_dagrun/release: a
write the network delayed past anything its sender could know.

EMR (moto's cluster is WAITING at once, its steps never finish, CancelSteps is not implemented,
and a step has no FailureDetails; the harness drives all of that):
  POST /_dagrun/emr/mode  {"steps": "complete" | "hold" | "spark", "fail": ["substring of a step name"],
                           "reason": "...", "stderr": "...", "start_polls": N}
      how steps behave from now on: completed at their first DescribeStep, left running, or run
      for real: the step's program runs with PySpark on a local mirror of the S3 objects it reads,
      and what it writes is put back into S3 (as a cluster would, one step at a time);
      steps whose name contains a `fail` entry fail with the reason (and, when `stderr` is given,
      a stderr.gz under the cluster's log URI); a new cluster reports STARTING for N polls.
      As on EMR: a step whose command starts with `timeout ... Ns` fails with exit code 124 once it
      has run N seconds, whoever is watching; a failed real step's FailureDetails say only
      "Unknown Error.", and its logs are laid out as EMR lays them out: in client mode the
      driver's stderr is the step's stderr.gz; in cluster mode the step's stderr.gz holds the
      spark-submit client's YARN report and the driver's stderr is under
      containers/<application>/<container>_000001/stderr.gz
  POST /_dagrun/emr/step  {"step": id, "state": "COMPLETED" | "FAILED" | ..., "reason": "..."}
  GET  /_dagrun/emr       every cluster (state, tags, steps with names, args and states) and
                          every RunJobFlow and AddJobFlowSteps request body received
"""

import gzip
import io
import shutil
import subprocess
import tempfile


import argparse
import json
import os
import re
import socket
import struct
import sys
import threading
import time

from moto.core import DEFAULT_ACCOUNT_ID
from moto.emr import models as emr_models
from moto.emr.models import emr_backends
from moto.s3.models import s3_backends
from moto.server import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import make_server

ERROR_XML = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    "<Error><Code>{code}</Code><Message>{message}</Message><RequestId>dagrun-test</RequestId></Error>"
)


def s3():
    return s3_backends[DEFAULT_ACCOUNT_ID]["aws"]


def emr():
    return emr_backends[DEFAULT_ACCOUNT_ID]["us-east-1"]


# moto's Step.status has no FailureDetails; EMR's does, and dagrun reports it.
_moto_step_status = emr_models.Step.status.fget


def _step_status(step):
    status = _moto_step_status(step)
    details = getattr(step, "failure_details", None)
    if details:
        status["FailureDetails"] = details
    return status


emr_models.Step.status = property(_step_status)

# moto answers ListMultipartUploads with a fixed Initiated date (2010); S3 gives the real one,
# and dagrun only aborts uploads begun before a bound. Record when each upload began.
from moto.s3 import models as s3_models  # noqa: E402

_multipart_init = s3_models.FakeMultipart.__init__
UPLOAD_BEGUN = {}


def _multipart_init_timed(self, *args, **kwargs):
    _multipart_init(self, *args, **kwargs)
    UPLOAD_BEGUN[self.id] = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


s3_models.FakeMultipart.__init__ = _multipart_init_timed


def real_initiated(body):
    def fix(m):
        block = m.group(0)
        found = re.search(rb"<UploadId>([^<]+)</UploadId>", block)
        begun = UPLOAD_BEGUN.get(found.group(1).decode()) if found else None
        if begun is None:
            return block
        return re.sub(rb"<Initiated>[^<]*</Initiated>", b"<Initiated>" + begun.encode() + b"</Initiated>", block)

    return re.sub(rb"<Upload>.*?</Upload>", fix, body, flags=re.S)


class Emr:
    """The harness's side of EMR: step outcomes, slow starts, CancelSteps, recorded requests."""

    def __init__(self):
        self.lock = threading.Lock()
        self.mode = {"steps": "complete"}
        self.requests = []
        self.step_requests = []
        self.starting = {}
        self.launched = set()
        self.running_since = {}
        threading.Thread(target=self.enforce_timeouts, daemon=True).start()

    def enforce_timeouts(self):
        """The cluster side of `timeout N spark-submit ...`: the step ends after N seconds of
        running whether or not dagrun is still polling (it may have been killed)."""
        while True:
            time.sleep(0.1)
            with self.lock:
                for cluster in self.clusters():
                    for step in cluster.steps:
                        if step.state != "RUNNING":
                            continue
                        limit = step_timeout(step.args)
                        if limit is None:
                            continue
                        since = self.running_since.setdefault(step.id, time.time())
                        if time.time() - since > limit and step.id not in self.launched:
                            self.finish(cluster, step, "FAILED", "Step failed with exitCode 124 (timeout)")

    def write_logs(self, cluster, step, driver_stderr):
        """A failed step's logs where EMR puts them (see the module's docstring)."""
        if not (cluster.log_uri and cluster.log_uri.startswith("s3://")):
            return
        root = f"{cluster.log_uri.rstrip('/')}/{cluster.id}"
        bucket, key = split_s3(f"{root}/steps/{step.id}/stderr.gz")
        if deploy_mode(step.args) == "cluster":
            app = f"application_{int(time.time() * 1000)}_0001"
            report = (
                f"24/12/01 10:00:00 INFO Client: Application report for {app} (state: FINISHED)\n"
                "24/12/01 10:00:00 INFO Client:\n\t client token: N/A\n\t diagnostics: User application exited with status 1\n"
                f"Exception in thread \"main\" org.apache.spark.SparkException: Application {app} finished with failed status\n"
            )
            s3().put_object(bucket, key, gzip.compress(report.encode()))
            cbucket, ckey = split_s3(f"{root}/containers/{app}/container_{app[12:]}_01_000001/stderr.gz")
            s3().put_object(cbucket, ckey, gzip.compress(driver_stderr.encode()))
        else:
            s3().put_object(bucket, key, gzip.compress(driver_stderr.encode()))

    def clusters(self):
        return list(emr().clusters.values())

    def step(self, step_id):
        for cluster in self.clusters():
            for step in cluster.steps:
                if step.id == step_id:
                    return cluster, step
        raise KeyError(f"no step {step_id}")

    def finish(self, cluster, step, state, reason=None, stderr=None):
        step.state = state
        step.end_date_time = emr_models.utcnow()
        if state == "FAILED":
            log = f"{cluster.log_uri.rstrip('/')}/{cluster.id}/steps/{step.id}/stderr.gz" if cluster.log_uri else None
            step.failure_details = {"Reason": reason or "Step failed", "Message": reason or "", "LogFile": log}
            if stderr is not None and log and log.startswith("s3://"):
                bucket, key = log[len("s3://"):].split("/", 1)
                s3().put_object(bucket, key, gzip.compress(stderr.encode()))
        # The next pending step starts, as on EMR.
        pending = [s for s in cluster.steps if s.state == "PENDING"]
        if pending and not any(s.state == "RUNNING" for s in cluster.steps):
            pending[0].state = "RUNNING"
            pending[0].start()

    def before(self, target, body):
        """Runs before moto answers an EMR call; returns a response to send instead, if any."""
        with self.lock:
            if target == "RunJobFlow":
                self.requests.append(body)
            elif target == "AddJobFlowSteps":
                self.step_requests.append(body)
            elif target == "DescribeCluster":
                cluster = emr().clusters.get(body.get("ClusterId"))
                if cluster is not None and cluster.state in ("WAITING", "RUNNING", "STARTING"):
                    left = self.starting.setdefault(cluster.id, int(self.mode.get("start_polls", 0)))
                    if left > 0:
                        self.starting[cluster.id] = left - 1
                        cluster.state = "STARTING"
                    elif cluster.state == "STARTING":
                        cluster.state = "WAITING"
            elif target == "DescribeStep":
                cluster, step = self.step(body.get("StepId"))
                if step.state in ("PENDING", "RUNNING"):
                    failing = any(f in step.name for f in self.mode.get("fail", []))
                    if failing:
                        self.finish(cluster, step, "FAILED", self.mode.get("reason"), self.mode.get("stderr"))
                    elif self.mode.get("steps") == "complete":
                        self.finish(cluster, step, "COMPLETED")
                    elif self.mode.get("steps") == "spark" and step.state == "RUNNING" and step.id not in self.launched:
                        self.launched.add(step.id)
                        threading.Thread(target=self.run_spark, args=(cluster, step), daemon=True).start()
            elif target == "CancelSteps":
                infos = []
                for step_id in body.get("StepIds", []):
                    cluster, step = self.step(step_id)
                    if step.state in ("PENDING", "RUNNING"):
                        self.finish(cluster, step, "CANCELLED")
                        infos.append({"StepId": step_id, "Status": "SUBMITTED", "Reason": ""})
                    else:
                        infos.append({"StepId": step_id, "Status": "FAILED", "Reason": f"step is {step.state}"})
                return {"CancelStepsInfoList": infos}
        return None

    def run_spark(self, cluster, step):
        """Runs a step's program for real: `spark-submit ... RUNNER SPEC` with s3:// paths mapped
        to a local mirror (local Spark has no S3 connector), then uploads what it wrote."""
        work = tempfile.mkdtemp(prefix="dagrun-emr-step-")
        try:
            runner_uri, spec_uri = step.args[-2], step.args[-1]
            spec = json.loads(read_s3(spec_uri))
            local = lambda uri: os.path.join(work, "s3", *split_s3(uri))  # noqa: E731
            reads = list(spec.get("inputs", {}).values())
            if spec.get("extract"):
                reads.append(spec["extract"]["path"])
            for uri in reads:
                bucket, key = split_s3(uri)
                download(bucket, key, local(uri), False)
            mapped = json.loads(json.dumps(spec), object_hook=lambda d: {k: local(v) if isinstance(v, str) and v.startswith("s3://") else v for k, v in d.items()})
            mapped["inputs"] = {k: local(v) for k, v in spec.get("inputs", {}).items()}
            runner = os.path.join(work, "dagrun_step.py")
            with open(runner, "wb") as f:
                f.write(read_s3(runner_uri))
            spec_file = os.path.join(work, "spec.json")
            with open(spec_file, "w") as f:
                json.dump(mapped, f)
            env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1"}
            try:
                proc = subprocess.run(
                    [sys.executable, runner, spec_file], capture_output=True, text=True, env=env,
                    timeout=step_timeout(step.args),
                )
                code, stderr = proc.returncode, proc.stderr
            except subprocess.TimeoutExpired as e:
                code, stderr = 124, (e.stderr.decode() if isinstance(e.stderr, bytes) else e.stderr or "")
            if code != 0:
                with self.lock:
                    self.write_logs(cluster, step, stderr)
                    self.finish(cluster, step, "FAILED", "Unknown Error.")
                return
            for key in ("output", "result", "quarantine"):
                if spec.get(key):
                    put_back(spec[key], local(spec[key]))
            if spec.get("load"):
                put_back(spec["load"]["path"], local(spec["load"]["path"]))
            with self.lock:
                self.finish(cluster, step, "COMPLETED")
        except Exception as e:  # noqa: BLE001 - a failed harness step is a failed step
            with self.lock:
                self.finish(cluster, step, "FAILED", f"harness: {type(e).__name__}: {e}")
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def control(self, path, body):
        with self.lock:
            if path == "/_dagrun/emr/mode":
                self.mode = body
                return {"mode": body}
            if path == "/_dagrun/emr/step":
                cluster, step = self.step(body["step"])
                self.finish(cluster, step, body["state"], body.get("reason"), body.get("stderr"))
                return {"step": step.id, "state": step.state}
            if path == "/_dagrun/emr":
                return {
                    "requests": self.requests,
                    "step_requests": self.step_requests,
                    "clusters": [
                        {
                            "id": c.id,
                            "name": c.name,
                            "state": c.state,
                            "tags": dict(c._tags),
                            "steps": [{"id": s.id, "name": s.name, "args": s.args, "state": s.state} for s in c.steps],
                        }
                        for c in self.clusters()
                    ],
                }
        raise KeyError(f"no control route {path}")


class Faults:
    def __init__(self):
        self.lock = threading.Lock()
        self.rules = []
        self.counts = []
        self.injected = {}
        self.requests = 0
        self.queries = {}
        self.released = threading.Event()

    def set(self, rules):
        with self.lock:
            self.rules = rules
            self.counts = [0] * len(rules)
            self.injected = {}
            self.requests = 0
            self.queries = {}
            self.release()

    def release(self):
        """Lets every held request go on; later holds wait for the next release."""
        self.released.set()
        self.released = threading.Event()

    def pick(self, method, path, query):
        """The rule to apply to this request, if any (first match wins)."""
        with self.lock:
            self.requests += 1
            for part in filter(None, query.split("&")):
                name = part.split("=", 1)[0]
                self.queries[name] = self.queries.get(name, 0) + 1
            for i, rule in enumerate(self.rules):
                if rule.get("method") and rule["method"] != method:
                    continue
                if rule.get("match") and rule["match"] not in path:
                    continue
                if rule.get("query") and rule["query"] not in query:
                    continue
                if rule.get("bucket") and path.lstrip("/").split("/", 1)[0] != rule["bucket"]:
                    continue
                self.counts[i] += 1
                if rule.get("limit") is not None and self.counts[i] > int(rule["limit"]):
                    continue
                if self.counts[i] % int(rule.get("every", 1)) == 0:
                    self.injected[rule["kind"]] = self.injected.get(rule["kind"], 0) + 1
                    return rule
            return None


SIGNED_REGION = re.compile(r"Credential=[^/]+/\d{8}/([^/]+)/s3/aws4_request")


class App:
    def __init__(self):
        self.moto = DomainDispatcherApplication(create_backend_app)
        self.faults = Faults()
        self.bucket_regions = {}
        self.wrong_region = 0
        self.prices = {}
        self.pricing_requests = 0
        self.emr = Emr()
        # moto checks If-None-Match / If-Match and then writes, in two steps: two conditional
        # writes of one key at once could both pass. S3 decides them atomically; so does this.
        self.conditional = threading.Lock()
        self.conditional_writes = 0

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path.startswith("/_dagrun/"):
            return self.control(environ, start_response, path)
        regional = self.regional(environ, start_response, path)
        if regional is not None:
            return regional
        rule = self.faults.pick(environ.get("REQUEST_METHOD", ""), path, environ.get("QUERY_STRING", ""))
        if rule:
            kind = rule["kind"]
            if kind == "delay":
                time.sleep(float(rule.get("seconds", 1.0)))
            elif kind == "hold":
                self.faults.released.wait(timeout=300)
            elif kind == "reset":
                sock = environ.get("werkzeug.socket")
                if sock is not None:
                    # Drop the connection mid-request. shutdown() acts on the connection itself
                    # (close() alone would not: the server still holds the socket's file objects).
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    sock.shutdown(socket.SHUT_RDWR)
                return []

            else:
                status, code, message = {
                    "slowdown": ("503 Slow Down", "SlowDown", "Please reduce your request rate."),
                    "error500": ("500 Internal Server Error", "InternalError", "We encountered an internal error."),
                    "denied": ("403 Forbidden", "AccessDenied", "Access Denied"),
                    # What S3 answers when the caller may write to the bucket but not use its KMS key.
                    "kms_denied": (
                        "403 Forbidden",
                        "AccessDenied",
                        "User: arn:aws:iam::123456789012:user/dagrun is not authorized to perform: "
                        "kms:GenerateDataKey on resource: arn:aws:kms:us-east-1:123456789012:key/"
                        "1234abcd-12ab-34cd-56ef-1234567890ab because no identity-based policy allows the "
                        "kms:GenerateDataKey action",
                    ),
                }[kind]
                body = ERROR_XML.format(code=code, message=message).encode()
                start_response(status, [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))])
                return [body]
        if environ.get("REQUEST_METHOD") == "POST" and "uploadId=" in environ.get("QUERY_STRING", ""):
            return self.complete_multipart(environ, start_response)
        query_names = {part.split("=", 1)[0] for part in environ.get("QUERY_STRING", "").split("&")}
        if environ.get("REQUEST_METHOD") == "GET" and "uploads" in query_names:
            return self.rewrite(environ, start_response, real_initiated)
        if environ.get("REQUEST_METHOD") in ("PUT", "DELETE") and (
            "HTTP_IF_NONE_MATCH" in environ or "HTTP_IF_MATCH" in environ
        ):
            with self.conditional:
                self.conditional_writes += 1
                return list(self.moto(environ, start_response))
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if target == "AWSPriceListService.GetProducts":
            return self.get_products(environ, start_response)
        if target.startswith("ElasticMapReduce."):
            length = int(environ.get("CONTENT_LENGTH") or 0)
            raw = environ["wsgi.input"].read(length) if length else b""
            environ["wsgi.input"] = io.BytesIO(raw)
            answer = self.emr.before(target.split(".", 1)[1], json.loads(raw or b"{}"))
            if answer is not None:
                data = json.dumps(answer).encode()
                start_response("200 OK", [("Content-Type", "application/x-amz-json-1.1"), ("Content-Length", str(len(data)))])
                return [data]
        return self.moto(environ, start_response)

    def get_products(self, environ, start_response):
        """The Price List API's GetProducts, from the prices set with /_dagrun/prices."""
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = json.loads(environ["wsgi.input"].read(length) or b"{}")
        filters = {f["Field"]: f["Value"] for f in body.get("Filters", [])}
        self.pricing_requests += 1
        usd = self.prices.get(body.get("ServiceCode"), {}).get(filters.get("instanceType"))
        documents = []
        if usd is not None:
            documents.append(json.dumps({
                "product": {"attributes": {"instanceType": filters.get("instanceType"), "regionCode": filters.get("regionCode")}},
                "terms": {"OnDemand": {"SKU.TERM": {"priceDimensions": {"SKU.TERM.RATE": {"unit": "Hrs", "pricePerUnit": {"USD": str(usd)}}}}}},
            }))
        data = json.dumps({"FormatVersion": "aws_v1", "PriceList": documents}).encode()
        start_response("200 OK", [("Content-Type", "application/x-amz-json-1.1"), ("Content-Length", str(len(data)))])
        return [data]

    def regional(self, environ, start_response, path):
        """S3's answers for a bucket in another region than the request was signed for; None to go on."""
        parts = path.lstrip("/").split("/", 1)
        bucket = parts[0]
        region = self.bucket_regions.get(bucket)
        if region is None or environ.get("HTTP_X_AMZ_TARGET"):
            return None
        found = SIGNED_REGION.search(environ.get("HTTP_AUTHORIZATION", ""))
        signed = found.group(1) if found else None
        is_head_bucket = environ.get("REQUEST_METHOD") == "HEAD" and (len(parts) == 1 or not parts[1])
        if signed == region:
            if is_head_bucket:
                def with_region(status, headers, exc_info=None):
                    return start_response(status, list(headers) + [("x-amz-bucket-region", region)], exc_info)
                return self.moto(environ, with_region)
            return None
        with self.faults.lock:
            self.wrong_region += 1
        headers = [("x-amz-bucket-region", region), ("Content-Type", "application/xml")]
        if environ.get("REQUEST_METHOD") == "HEAD":
            start_response("301 Moved Permanently", headers + [("Content-Length", "0")])
            return []
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AuthorizationHeaderMalformed</Code>'
            f"<Message>The authorization header is malformed; the region '{signed}' is wrong; expecting '{region}'</Message>"
            f"<Region>{region}</Region><RequestId>dagrun-test</RequestId></Error>"
        ).encode()
        start_response("400 Bad Request", headers + [("Content-Length", str(len(body)))])
        return [body]

    def complete_multipart(self, environ, start_response):
        """moto answers CompleteMultipartUpload with a `CompleteMultipartUploadResponse` root
        element; S3 (and the Rust SDK's parser) use `CompleteMultipartUploadResult`."""
        return self.rewrite(
            environ,
            start_response,
            lambda body: body.replace(b"CompleteMultipartUploadResponse", b"CompleteMultipartUploadResult"),
        )

    def rewrite(self, environ, start_response, change):
        """moto's answer with its body changed."""
        captured = {}

        def capture(status, headers, exc_info=None):
            captured["status"], captured["headers"] = status, headers
            return lambda data: None

        body = change(b"".join(self.moto(environ, capture)))
        headers = [(k, v) for k, v in captured["headers"] if k.lower() != "content-length"]
        headers.append(("Content-Length", str(len(body))))
        start_response(captured["status"], headers)
        return [body]


    def control(self, environ, start_response, path):
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = json.loads(environ["wsgi.input"].read(length) or b"{}") if length else {}
            result = self.handle(path, body)
            status = "200 OK"
        except Exception as e:  # noqa: BLE001 - a test harness reports every failure
            result = {"error": f"{type(e).__name__}: {e}"}
            status = "500 Internal Server Error"
        data = json.dumps(result).encode()
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
        return [data]

    def handle(self, path, body):
        if path == "/_dagrun/faults":
            self.faults.set(body.get("rules", []))
            return {"rules": len(self.faults.rules)}
        if path == "/_dagrun/release":
            self.faults.release()
            return {"released": True}
        if path.startswith("/_dagrun/emr"):
            return self.emr.control(path, body)
        if path == "/_dagrun/stats":

            return {
                "injected": self.faults.injected,
                "requests": self.faults.requests,
                "queries": self.faults.queries,
                "conditional_writes": self.conditional_writes,
                "wrong_region": self.wrong_region,
                "pricing": self.pricing_requests,
            }
        if path == "/_dagrun/head":
            key = s3().get_object(body["bucket"], body["key"])
            return {
                "size": key.size,
                "content_type": key.metadata.get("Content-Type"),
                "storage_class": key.storage_class,
                "encryption": key.encryption,
            }
        if path == "/_dagrun/uploads":
            bucket = s3().get_bucket(body["bucket"])
            return {"keys": sorted(m.key_name for m in bucket.multiparts.values())}
        if path == "/_dagrun/prices":
            self.prices = body
            return {"prices": body}
        if path == "/_dagrun/begin_upload":
            begun = s3().create_multipart_upload(body["bucket"], body["key"], {}, "STANDARD", {}, None, None, None)
            return {"upload_id": begun.id}
        if path == "/_dagrun/bucket":
            s3().create_bucket(body["bucket"], body.get("region", "us-east-1"))
            if body.get("region"):
                self.bucket_regions[body["bucket"]] = body["region"]
            return {"bucket": body["bucket"]}
        if path == "/_dagrun/upload":
            if body.get("region"):
                self.bucket_regions[body["bucket"]] = body["region"]
            return upload(body["bucket"], body.get("prefix", ""), body["dir"])
        if path == "/_dagrun/download":
            return download(body["bucket"], body.get("prefix", ""), body["dir"], body.get("manifest", False))
        raise KeyError(f"no control route {path}")


def step_timeout(args):
    """N from a step command `timeout [--kill-after=D] Ns spark-submit ...`, or None."""
    if not args or args[0] != "timeout":
        return None
    for a in args[1:]:
        if not a.startswith("-"):
            return float(a.rstrip("s"))
    return None


def deploy_mode(args):
    for i, a in enumerate(args[:-1]):
        if a == "--deploy-mode":
            return args[i + 1]
    return "client"


def split_s3(uri):
    bucket, _, key = uri[len("s3://"):].partition("/")
    return bucket, key.strip("/")


def read_s3(uri):
    bucket, key = split_s3(uri)
    obj = s3().get_object(bucket, key)
    if obj is None:
        raise FileNotFoundError(uri)
    return obj.value


def put_back(uri, path):
    """Uploads a file or a folder a step wrote locally to its s3:// place."""
    bucket, key = split_s3(uri)
    if os.path.isdir(path):
        upload(bucket, key, path)
    elif os.path.isfile(path):
        with open(path, "rb") as f:
            s3().put_object(bucket, key, f.read())


def upload(bucket, prefix, folder):
    backend = s3()
    try:
        backend.get_bucket(bucket)
    except Exception:  # noqa: BLE001
        backend.create_bucket(bucket, "us-east-1")
    count = 0
    for root, _, files in os.walk(folder):
        for name in sorted(files):
            full = os.path.join(root, name)
            rel = os.path.relpath(full, folder).replace(os.sep, "/")
            key = f"{prefix.strip('/')}/{rel}" if prefix.strip("/") else rel
            with open(full, "rb") as f:
                backend.put_object(bucket, key, f.read())
            count += 1
    return {"uploaded": count}


def download(bucket, prefix, folder, follow_manifest):
    backend = s3()
    prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
    keys = [k for k in backend.get_bucket(bucket).keys.keys() if k.startswith(prefix)]
    # A Delta table is downloaded whole (its log and every file); its readers follow the log.
    is_delta = any(k.startswith(prefix + "_delta_log/") for k in keys)
    if follow_manifest and not is_delta:
        manifest = json.loads(backend.get_object(bucket, prefix + "_manifest.json").value)
        keys = [prefix + f["path"] for f in manifest["files"]]
    found = []
    for key in keys:
        data = read_object(backend, bucket, key)
        if data is None:
            if follow_manifest:
                raise FileNotFoundError(f"s3://{bucket}/{key} is named but missing")
            continue  # deleted since it was listed (a run is going on)
        target = os.path.join(folder, key[len(prefix):])
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "wb") as f:
            f.write(data)
        found.append(key)
    return {"downloaded": len(found), "keys": sorted(found)}


def read_object(backend, bucket, key):
    """An object's bytes, or None if it is gone. A key overwritten while it is read (a lease
    renewed, a run going on) has its old value's buffer closed by moto: read the new one."""
    for _ in range(20):
        try:
            obj = backend.get_object(bucket, key)
        except Exception:
            return None
        if obj is None:
            return None
        try:
            return obj.value
        except ValueError:
            time.sleep(0.01)
    raise RuntimeError(f"s3://{bucket}/{key} kept changing while it was read")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    server = make_server("127.0.0.1", args.port, App(), threaded=True)
    print(f"port {server.server_port}", flush=True)

    def watch_stdin():
        sys.stdin.read()
        os._exit(0)

    threading.Thread(target=watch_stdin, daemon=True).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
