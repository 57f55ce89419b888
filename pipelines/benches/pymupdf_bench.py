"""PyMuPDF peer for the real-PDF benchmark (examples/extract_bench/pdf_peers.rs): extracts the
text of every file given, in one process, REPEATS times each, and prints
{"ok": N, "seconds": [best time per file]} (time of PyMuPDF's own open + text loop)."""
import json
import sys
import time

import pymupdf


def once(path):
    start = time.perf_counter()
    try:
        with pymupdf.open(path) as doc:
            text = "\n\n".join(page.get_text() for page in doc)
        ok = bool(text.strip())
    except Exception:  # noqa: BLE001 - a failure counts as not ok, like the other engines
        ok = False
    return ok, time.perf_counter() - start


def main(repeats, paths):
    ok = 0
    best = []
    for path in paths:
        results = [once(path) for _ in range(repeats)]
        ok += 1 if results[0][0] else 0
        best.append(min(s for _, s in results))
    print(json.dumps({"ok": ok, "seconds": best}))


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2:])
