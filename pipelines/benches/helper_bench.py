"""Fallback real-PDF figures when the Rust benchmark cannot be built: one warm release
`mindora-pdf` helper (path requests, PDFium and fonts loaded once; the first request is the
warm-up) beside PyMuPDF (in this process) and pdftotext (a process per file), same files, same
run, best of REPEATS per file. The full benchmark is examples/extract_bench (pdf_peers.rs).

usage: python helper_bench.py <mindora-pdf> <repeats> <pdf>...
"""
import json
import statistics
import subprocess
import sys
import time

import pymupdf


def helper_once(proc, path):
    start = time.perf_counter()
    proc.stdin.write(json.dumps({"password": None, "bytes": 0, "path": path}) + "\n")
    proc.stdin.flush()
    ok = False
    while True:
        msg = json.loads(proc.stdout.readline())
        if msg["t"] in ("text", "scan_text") and msg["text"].strip():
            ok = True
        if msg["t"] in ("done", "failed", "rendered"):
            return ok and msg["t"] == "done", time.perf_counter() - start


def pymupdf_once(path):
    start = time.perf_counter()
    with pymupdf.open(path) as doc:
        text = "\n\n".join(page.get_text() for page in doc)
    return bool(text.strip()), time.perf_counter() - start


def pdftotext_once(path):
    start = time.perf_counter()
    r = subprocess.run(["pdftotext", "-q", "-enc", "UTF-8", path, "-"], capture_output=True)
    return r.returncode == 0, time.perf_counter() - start


def best(f, path, repeats):
    runs = [f(path) for _ in range(repeats)]
    return runs[0][0], min(s for _, s in runs)


def main(helper, repeats, paths):
    proc = subprocess.Popen([helper], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    helper_once(proc, paths[0])
    engines = {
        "mindora-pdf (warm helper, path)": lambda p: helper_once(proc, p),
        "pdftotext (poppler)": pdftotext_once,
        "PyMuPDF": pymupdf_once,
    }
    rows = {name: [best(f, p, repeats) for p in paths] for name, f in engines.items()}
    proc.stdin.close()
    proc.wait()
    poppler = [s for _, s in rows["pdftotext (poppler)"]]
    print(f"{'file':<34}" + "".join(f"{n[:22]:>26}" for n in rows))
    for i, p in enumerate(paths):
        cells = "".join(f"{r[i][1] * 1e3:>12.1f} ms ({poppler[i] / r[i][1]:>5.2f}x)" for r in rows.values())
        print(f"{p.rsplit('/', 1)[-1][:34]:<34}{cells}")
    print(f"{'engine':<34}{'ok':>4}{'total s':>10}{'median ms':>11}{'median vs pdftotext':>21}")
    for name, r in rows.items():
        secs = [s for _, s in r]
        ratio = statistics.median(p / s for p, s in zip(poppler, secs))
        print(f"{name:<34}{sum(ok for ok, _ in r):>4}{sum(secs):>10.2f}{statistics.median(secs) * 1e3:>11.1f}{ratio:>20.2f}x")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3:])
