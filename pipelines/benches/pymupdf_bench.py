"""PyMuPDF peer for the real-PDF benchmark (examples/extract_bench/pdf_peers.rs): extracts the
text of every file given, in one process, and prints {"ok": N, "seconds": S} for the loop."""
import json
import sys
import time

import pymupdf


def main(paths):
    ok = 0
    start = time.perf_counter()
    for path in paths:
        try:
            with pymupdf.open(path) as doc:
                text = "\n\n".join(page.get_text() for page in doc)
            ok += 1 if text.strip() else 0
        except Exception:  # noqa: BLE001 - a failure counts as not ok, like the other engines
            pass
    print(json.dumps({"ok": ok, "seconds": time.perf_counter() - start}))


if __name__ == "__main__":
    main(sys.argv[1:])
