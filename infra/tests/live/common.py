"""Helpers shared by the live infra runs (monitoring.py, nginx.py, rabbitmq_init.py,
s3_init.py): free loopback ports, processes that are always stopped, HTTP calls, PASS/FAIL
reporting."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, seconds, what, proc=None):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{what} is not listening on 127.0.0.1:{port} after {seconds}s")


def env_example():
    env = {}
    with open(os.path.join(ROOT, ".env.example")) as f:
        for line in f:
            s = line.strip()
            if s and not s.startswith("#") and "=" in s:
                k, v = s.split("=", 1)
                env[k] = v
    return env


def render(path, out, extra=None):
    """infra/scripts/render-template.sh with .env.example values (+ overrides)."""
    env = dict(os.environ)
    env.update(env_example())
    env.update(extra or {})
    subprocess.run(["sh", os.path.join(ROOT, "infra/scripts/render-template.sh"), path, out],
                   check=True, env=env)
    with open(out) as f:
        return f.read()


class Procs:
    """Processes started by a run; stop_all() ends each by its own pid (process group)."""

    def __init__(self, logdir):
        self.logdir = logdir
        self.items = []

    def start(self, name, argv, env=None, cwd=None):
        log = open(os.path.join(self.logdir, f"{name}.log"), "wb")
        p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                             start_new_session=True)
        self.items.append((name, p, log))
        return p

    def stop(self, p, sig=signal.SIGTERM, wait=15):
        if p.poll() is None:
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                return
            try:
                p.wait(wait)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)

    def stop_all(self):
        for _, p, log in reversed(self.items):
            try:
                self.stop(p)
            finally:
                log.close()


class Report:
    def __init__(self, prefix):
        self.prefix = prefix
        self.passed = 0
        self.failed = 0

    def check(self, name, ok, detail=""):
        if ok:
            self.passed += 1
        else:
            self.failed += 1
        print(f"{'PASS' if ok else 'FAIL'} {self.prefix}:{name}" + (f": {detail}" if detail else ""), flush=True)
        return ok

    def finish(self):
        """Prints the totals and exits: 1 when any check failed."""
        print(f"{self.prefix}: {self.passed} passed, {self.failed} failed")
        sys.exit(1 if self.failed else 0)


def run_in_tmp(report, tmp_prefix, log_name, tail, scenario):
    """Runs scenario(procs, tmp) in a new temp dir, then exits with the report's verdict.

    An exception is one failed check (with the last `tail` lines of `tmp/log_name`, the
    server's log); the processes are always stopped and the dir removed."""
    tmp = tempfile.mkdtemp(prefix=tmp_prefix)
    procs = Procs(tmp)
    try:
        scenario(procs, tmp)
    except Exception as e:  # noqa: BLE001 - report, then clean up
        report.check("run", False, f"{type(e).__name__}: {e}")
        log = os.path.join(tmp, log_name)
        if os.path.exists(log):
            print("".join(open(log).readlines()[-tail:]))
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    report.finish()


def http_json(url, data=None, timeout=10):
    req = urllib.request.Request(url, data=data)
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.load(r)


def retry(seconds, fn, every=1.0):
    """Calls fn until it returns a truthy value or time runs out; returns the last value."""
    deadline = time.time() + seconds
    value = None
    while True:
        try:
            value = fn()
        except (OSError, ValueError, urllib.error.URLError, KeyError) as e:
            value = None
            last = e  # noqa: F841 - kept for debugging
        if value or time.time() >= deadline:
            return value
        time.sleep(every)
