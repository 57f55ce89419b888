"""Python baseline for the extraction benchmark: pypdf, python-docx and openpyxl on the same
corpus the Rust example generated. Prints one JSON object: per kind, files, bytes, seconds."""
import json
import os
import sys
import time

import docx
import openpyxl
from pypdf import PdfReader


def pdf_text(path):
    return "\n\n".join(page.extract_text() or "" for page in PdfReader(path).pages)


def docx_text(path):
    d = docx.Document(path)
    parts = [p.text for p in d.paragraphs]
    for t in d.tables:
        for row in t.rows:
            parts.append("\t".join(c.text for c in row.cells))
    return "\n\n".join(parts)


def xlsx_text(path):
    wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
    out = []
    for ws in wb.worksheets:
        out.append("# Sheet: " + ws.title)
        for row in ws.iter_rows(values_only=True):
            out.append("\t".join("" if v is None else str(v) for v in row))
    wb.close()
    return "\n".join(out)


def main(root):
    result = {}
    for kind, fn in (("pdf", pdf_text), ("docx", docx_text), ("xlsx", xlsx_text)):
        files = sorted(f for f in os.listdir(root) if f.endswith("." + kind))
        total_bytes = sum(os.path.getsize(os.path.join(root, f)) for f in files)
        chars = 0
        start = time.perf_counter()
        for f in files:
            chars += len(fn(os.path.join(root, f)))
        result[kind] = {"files": len(files), "bytes": total_bytes,
                        "seconds": time.perf_counter() - start, "chars": chars}
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1])
