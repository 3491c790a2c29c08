"""Test-only AWS server for dagrun's integration tests: moto's server application (S3 and EMR on
one endpoint) behind a fault-injecting middleware, with control routes under /_dagrun/.

Started by the Rust test harness (tests/support.rs) on 127.0.0.1 and a free port; prints
`port N` on stdout once it listens, and exits when its stdin closes (so it never outlives a test).

Control routes (JSON in, JSON out):
  POST /_dagrun/faults    {"rules": [...]}  replace the fault rules, reset the counters
  GET  /_dagrun/stats                       faults injected so far, by kind, and requests seen
  POST /_dagrun/upload    {"bucket", "prefix", "dir"}  create the bucket, upload a folder
  POST /_dagrun/download  {"bucket", "prefix", "dir", "manifest": bool}
                          download a prefix; with manifest, only the files `_manifest.json` names
  POST /_dagrun/bucket    {"bucket"}        create an empty bucket
  POST /_dagrun/head      {"bucket", "key"} an object's size, content type, storage class, encryption

A fault rule: {"kind": "slowdown" | "error500" | "reset" | "delay" | "denied",
               "method": "GET", "match": "substring of the path", "bucket": "name",
               "every": N (every Nth matching request; default 1), "seconds": 1.5 (delay)}
"""

import argparse
import json
import os
import socket
import struct
import sys
import threading
import time

from moto.core import DEFAULT_ACCOUNT_ID
from moto.s3.models import s3_backends
from moto.server import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import make_server

ERROR_XML = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    "<Error><Code>{code}</Code><Message>{message}</Message><RequestId>dagrun-test</RequestId></Error>"
)


def s3():
    return s3_backends[DEFAULT_ACCOUNT_ID]["aws"]


class Faults:
    def __init__(self):
        self.lock = threading.Lock()
        self.rules = []
        self.counts = []
        self.injected = {}
        self.requests = 0
        self.queries = {}

    def set(self, rules):
        with self.lock:
            self.rules = rules
            self.counts = [0] * len(rules)
            self.injected = {}
            self.requests = 0
            self.queries = {}

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
                if rule.get("bucket") and path.lstrip("/").split("/", 1)[0] != rule["bucket"]:
                    continue
                self.counts[i] += 1
                if self.counts[i] % int(rule.get("every", 1)) == 0:
                    self.injected[rule["kind"]] = self.injected.get(rule["kind"], 0) + 1
                    return rule
            return None


class App:
    def __init__(self):
        self.moto = DomainDispatcherApplication(create_backend_app)
        self.faults = Faults()

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path.startswith("/_dagrun/"):
            return self.control(environ, start_response, path)
        rule = self.faults.pick(environ.get("REQUEST_METHOD", ""), path, environ.get("QUERY_STRING", ""))
        if rule:
            kind = rule["kind"]
            if kind == "delay":
                time.sleep(float(rule.get("seconds", 1.0)))
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
                }[kind]
                body = ERROR_XML.format(code=code, message=message).encode()
                start_response(status, [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))])
                return [body]
        if environ.get("REQUEST_METHOD") == "POST" and "uploadId=" in environ.get("QUERY_STRING", ""):
            return self.complete_multipart(environ, start_response)
        return self.moto(environ, start_response)

    def complete_multipart(self, environ, start_response):
        """moto answers CompleteMultipartUpload with a `CompleteMultipartUploadResponse` root
        element; S3 (and the Rust SDK's parser) use `CompleteMultipartUploadResult`."""
        captured = {}

        def capture(status, headers, exc_info=None):
            captured["status"], captured["headers"] = status, headers
            return lambda data: None

        body = b"".join(self.moto(environ, capture))
        body = body.replace(b"CompleteMultipartUploadResponse", b"CompleteMultipartUploadResult")
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
        if path == "/_dagrun/stats":
            return {"injected": self.faults.injected, "requests": self.faults.requests, "queries": self.faults.queries}
        if path == "/_dagrun/head":
            key = s3().get_object(body["bucket"], body["key"])
            return {
                "size": key.size,
                "content_type": key.metadata.get("Content-Type"),
                "storage_class": key.storage_class,
                "encryption": key.encryption,
            }
        if path == "/_dagrun/bucket":
            s3().create_bucket(body["bucket"], "us-east-1")
            return {"bucket": body["bucket"]}
        if path == "/_dagrun/upload":
            return upload(body["bucket"], body.get("prefix", ""), body["dir"])
        if path == "/_dagrun/download":
            return download(body["bucket"], body.get("prefix", ""), body["dir"], body.get("manifest", False))
        raise KeyError(f"no control route {path}")


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
    if follow_manifest:
        manifest = json.loads(backend.get_object(bucket, prefix + "_manifest.json").value)
        keys = [prefix + f["path"] for f in manifest["files"]]
    for key in keys:
        target = os.path.join(folder, key[len(prefix):])
        os.makedirs(os.path.dirname(target), exist_ok=True)
        obj = backend.get_object(bucket, key)
        if obj is None:
            raise FileNotFoundError(f"s3://{bucket}/{key} is named but missing")
        with open(target, "wb") as f:
            f.write(obj.value)
    return {"downloaded": len(keys), "keys": sorted(keys)}


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
