#!/usr/bin/env python3
"""Every pinned image at or above its minimum patched version (infra/tests/image-minimums.txt).

  check-image-minimums.py [--compose FILE] [--dockerfile FILE ...] [--images FILE]

Reads image references from a compose file (services' `image:`), Dockerfiles (`FROM`) and/or
a plain list (one reference per line). For each repository with minimums: the tag's version
must be >= the minimum of its line; a line older than the oldest listed one fails (out of
support); a newer line passes. Prints one line per image; exit 1 if any is below.
"""
import argparse
import os
import re
import sys

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
MINIMUMS = os.path.join(HERE, "..", "tests", "image-minimums.txt")


def load_minimums(path):
    table = {}
    for line in open(path):
        if not line.strip() or line.startswith("#"):
            continue
        if line.startswith("!"):
            ref, _, why = line[1:].rstrip("\n").partition("\t")
            ACCEPTED[ref] = why
            continue
        repo, ln, minimum, why = (line.rstrip("\n").split("\t") + [""])[:4]
        table.setdefault(repo, {})[ln] = (minimum, why)
    return table


ACCEPTED = {}


def version(tag):
    """(1, 30, 4) from 1.30.4-alpine, v1.20.0, 16.15-bookworm, 8.6.6-trixie; None otherwise."""
    m = re.match(r"v?(\d+(?:\.\d+)*)", tag)
    return tuple(int(x) for x in m.group(1).split(".")) if m else None


def check(ref, table):
    """(ok, message) for one reference, or None when no minimum applies."""
    repo, _, tag = ref.rpartition(":")
    if "/" in tag or not repo:
        return None
    lines = table.get(repo) or table.get(repo.removeprefix("docker.io/").removeprefix("library/"))
    if not lines:
        return None
    if "*" in lines:  # date-stamped releases (MinIO): compare the strings
        minimum, why = lines["*"]
        return (tag >= minimum, f"{ref}: {'>=' if tag >= minimum else 'BELOW'} {minimum} ({why})")
    v = version(tag)
    if v is None:
        return (False, f"{ref}: tag has no version number to compare")
    width = len(next(iter(lines)).split("."))
    line = ".".join(map(str, v[:width]))
    if line in lines:
        minimum, why = lines[line]
        ok = v >= version(minimum)
        return (ok, f"{ref}: {'>=' if ok else 'BELOW'} {minimum} on line {line} ({why})")
    oldest = min(version(k) for k in lines)
    if v[:width] < oldest:
        return (False, f"{ref}: line {line} is older than every supported line ({', '.join(sorted(lines))})")
    newest = max(version(k) for k in lines)
    if v[:width] > newest:
        return (True, f"{ref}: line {line} newer than every listed line")
    return (False, f"{ref}: line {line} has no minimum listed (add it to infra/tests/image-minimums.txt)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--compose")
    ap.add_argument("--dockerfile", action="append", default=[])
    ap.add_argument("--images")
    ap.add_argument("--minimums", default=MINIMUMS)
    ap.add_argument("--no-exceptions", action="store_true", help="ignore the accepted exceptions")
    args = ap.parse_args()
    refs = []
    if args.compose:
        for svc in (yaml.safe_load(open(args.compose)).get("services") or {}).values():
            if svc.get("image") and "build" not in svc:
                refs.append(svc["image"])
    for df in args.dockerfile:
        refs += re.findall(r"^FROM\s+(?:--platform=\S+\s+)?(\S+)", open(df).read(), re.M)
    if args.images:
        refs += [ln.strip() for ln in open(args.images) if ln.strip() and not ln.startswith("#")]
    table = load_minimums(args.minimums)
    bad = checked = 0
    for ref in sorted(set(refs)):
        r = check(ref, table)
        if r is None:
            continue
        checked += 1
        ok, msg = r
        if not ok and ref in ACCEPTED and not args.no_exceptions:
            print(f"ACCEPTED {msg}: {ACCEPTED[ref]}")
            continue
        bad += not ok
        print(("ok    " if ok else "BELOW ") + msg)
    print(f"{checked} pinned images with a minimum, {bad} below it")
    return 1 if bad or not checked else 0


if __name__ == "__main__":
    sys.exit(main())
