"""Structure benchmark: our extraction's Markdown (examples/to_markdown.rs) beside PyMuPDF4LLM's
on the same real documents in the same run, scored against each document's own structure.

Ground truth, from the files themselves (read with independent libraries):
  * text / reading order: the corpus reference text (pdftotext -layout-free, python-docx,
    openpyxl, BeautifulSoup; pipelines/tests/corpus/reference.py);
  * headings: PDF outline (bookmark) titles (pypdf), HTML h1-h4 (BeautifulSoup), Word
    paragraphs in a Heading N / Title style (python-docx);
  * table rows: HTML <tr>, Word table rows, spreadsheet rows (openpyxl / xlrd / odfpy via the
    corpus reference's own readers are not needed: rows come from the reference text's lines).

Metrics, per file then averaged per format:
  * token F1 (bag of words; CJK counted per character) and bigram F1 (adjacent token pairs:
    order-aware) of the Markdown with its markup stripped, against the reference text;
  * heading recall (ground-truth titles found as a Markdown heading line) and precision (heading
    lines that are a ground-truth title; PDFs with an outline only);
  * table-row recall (ground-truth rows found as a Markdown table row, cells in order);
  * seconds per file (ours: from its own clock inside the example; PyMuPDF4LLM: in-process).

python score.py CORPUS_DIR OUR_BINARY [--layout] [--max-mb N] [--no-peers] [--per-file]   (run by run.sh)
"""
import json
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
TOKEN = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]|[^\W_]+", re.U)


def tokens(text):
    return [t.lower() for t in TOKEN.findall(text)]


def strip_markdown(md):
    md = re.sub(r"^\s*\|?\s*:?-{3,}.*$", " ", md, flags=re.M)  # table separators
    md = re.sub(r"[#*_`|>]", " ", md)
    md = re.sub(r"!\[[^\]]*\]\([^)]*\)", " ", md)
    return md


def f1(ref, out):
    a, b = Counter(ref), Counter(out)
    common = sum((a & b).values())
    if not ref or not out:
        return 0.0
    p, r = common / sum(b.values()), common / sum(a.values())
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def text_scores(ref_text, md):
    rt, ot = tokens(ref_text), tokens(strip_markdown(md))
    return f1(rt, ot), f1(list(zip(rt, rt[1:])), list(zip(ot, ot[1:])))


def norm(s):
    s = re.sub(r"\*\*|__|`", "", s)
    return "".join(c for c in s.lower() if c.isalnum())


def title_match(a, b):
    if not a or not b:
        return False
    if a == b:
        return True
    # Printed numbering on one side only ("1.2 Foo" vs "Foo").
    long, short = (a, b) if len(a) > len(b) else (b, a)
    return long.endswith(short) and len(short) >= 3 and not any(c.isalpha() for c in long[: len(long) - len(short)] if not c.isdigit() and c not in "ivx")


def heading_lines(md):
    return [norm(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.*)$", md, flags=re.M)]


def heading_scores(truth, md):
    truth = [norm(t) for t in truth if norm(t)]
    got = [h for h in heading_lines(md) if h]
    if not truth:
        return None, None
    recall = sum(any(title_match(t, h) for h in got) for t in truth) / len(truth)
    precision = (sum(any(title_match(t, h) for t in truth) for h in got) / len(got)) if got else 0.0
    return recall, precision


def md_table_rows(md):
    rows = set()
    for line in md.splitlines():
        line = line.strip()
        if line.startswith("|") and line.endswith("|") and not re.match(r"^\|[\s:|-]+\|$", line):
            rows.add(tuple(norm(c) for c in re.split(r"(?<!\\)\|", line[1:-1])))
    return rows


def row_found(want, got):
    # The row's non-empty cells in order, each inside one cell of a Markdown row (a cell may
    # hold more, e.g. an image's alt text the ground truth leaves out).
    for row in got:
        it = iter(row)
        if all(any(w in g for g in it) for w in want):
            return True
    return False


def table_scores(truth_rows, md):
    truth = [[c for c in (norm(x) for x in row) if c] for row in truth_rows]
    truth = [t for t in truth if t]
    if not truth:
        return None
    got = md_table_rows(md)
    return sum(row_found(t, got) for t in truth) / len(truth)


# ---- ground truth from the files themselves -------------------------------------------------

def pdf_outline(path):
    import pypdf

    titles = []

    def walk(items):
        for it in items:
            if isinstance(it, list):
                walk(it)
            else:
                titles.append(str(it.title))

    try:
        walk(pypdf.PdfReader(str(path)).outline)
    except Exception:  # noqa: BLE001 - a damaged outline is no ground truth
        return []
    return titles


def html_truth(path):
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(path.read_bytes(), "html.parser")
    heads = [h.get_text(" ", strip=True) for h in soup.find_all(["h1", "h2", "h3", "h4"])]
    rows = []
    for tr in soup.find_all("tr"):
        if tr.find("table"):
            continue  # a row holding a nested table: its rows count, not it
        rows.append([c.get_text(" ", strip=True) for c in tr.find_all(["td", "th"], recursive=False)])
    return heads, rows


def docx_truth(path):
    import docx

    d = docx.Document(str(path))
    heads = [
        p.text
        for p in d.paragraphs
        if p.style is not None and (p.style.name.startswith("Heading") or p.style.name == "Title")
    ]
    rows = [[c.text for c in r.cells] for t in d.tables for r in t.rows]
    return heads, rows


def sheet_truth(ref_text):
    # The corpus reference writes one sheet row per line, cells tab-separated.
    return [line.split("\t") for line in ref_text.splitlines() if "\t" in line]


# ---- engines --------------------------------------------------------------------------------

def run_ours(binary, files):
    out_dir = Path(tempfile.mkdtemp(prefix="structure-ours-"))
    started = time.perf_counter()
    proc = subprocess.run([binary, str(out_dir), *map(str, files)], capture_output=True, text=True, check=True)
    wall = time.perf_counter() - started
    res = {}
    for line in proc.stdout.splitlines():
        r = json.loads(line)
        p = Path(r["file"])
        res[p.stem] = ((out_dir / f"{p.stem}.md").read_text(), r["seconds"], r["ok"])
    return res, wall


def run_pymupdf4llm(files, layout):
    import pymupdf4llm

    pymupdf4llm.use_layout(layout)
    res = {}
    started = time.perf_counter()
    for f in files:
        t = time.perf_counter()
        try:
            kwargs = {"show_progress": False}
            if layout:
                kwargs.update(use_ocr=False)
            md = pymupdf4llm.to_markdown(str(f), **kwargs)
            ok = True
        except Exception as e:  # noqa: BLE001 - counted as a failure
            md, ok = "", False
            print(f"  pymupdf4llm failed on {f.name}: {e}", file=sys.stderr)
        res[f.stem] = (md, time.perf_counter() - t, ok)
    return res, time.perf_counter() - started


def main():
    corpus = Path(sys.argv[1])
    binary = sys.argv[2]
    layout = "--layout" in sys.argv
    # --max-mb N: leave out files above N MB (the long books) for a quick run.
    max_bytes = float("inf")
    if "--max-mb" in sys.argv:
        max_bytes = float(sys.argv[sys.argv.index("--max-mb") + 1]) * 1e6
    manifest = [
        l.split("\t")
        for l in (corpus / "manifest.tsv").read_text().splitlines()
        if l and not l.startswith("#")
    ]
    docs = corpus / "docs"
    files = []
    for row in manifest:
        if row[3] not in ("text", "layout", "gap"):
            continue
        found = [p for p in docs.glob(row[0] + ".*")]
        if found and found[0].stat().st_size <= max_bytes:
            files.append(found[0])
    pdfs = [f for f in files if f.suffix == ".pdf"]
    ours, ours_wall = run_ours(binary, files)
    engines = {"ours": ours}
    walls = {"ours": ours_wall}
    peers = [("pymupdf4llm", False)] + ([("pymupdf4llm-layout", True)] if layout else [])
    if "--no-peers" in sys.argv:
        peers = []
    for name, lay in peers:
        engines[name], walls[name] = run_pymupdf4llm(pdfs, lay)

    rows = []
    for f in files:
        ref_text = (corpus / "ref" / f"{f.stem}.txt").read_text(errors="replace")
        kind = f.stem.split("-")[0]
        heads, trows = [], []
        if kind == "pdf":
            heads = pdf_outline(f)
        elif kind == "html":
            heads, trows = html_truth(f)
        elif kind == "docx":
            heads, trows = docx_truth(f)
        else:
            trows = sheet_truth(ref_text)
        for engine, res in engines.items():
            if f.stem not in res:
                continue
            md, secs, ok = res[f.stem]
            tf, bf = text_scores(ref_text, md)
            hr, hp = heading_scores(heads, md)
            tr = table_scores(trows, md)
            rows.append(dict(file=f.stem, kind=kind, engine=engine, ok=ok, seconds=secs,
                             token_f1=tf, bigram_f1=bf, head_recall=hr, head_precision=hp,
                             table_rows=tr, n_heads=len(heads), n_rows=len(trows)))

    def mean(xs):
        xs = [x for x in xs if x is not None]
        return (sum(xs) / len(xs), len(xs)) if xs else (None, 0)

    fmt = lambda v: "   -  " if v[0] is None else f"{v[0]:.3f}({v[1]})"
    print(f"{'class':<8} {'engine':<18} {'token F1':>11} {'bigram F1':>11} {'head R':>11} {'head P':>11} {'table rows':>11} {'seconds':>8}")
    for kind in ["pdf", "pdf+outline", "html", "docx", "xlsx", "xls", "ods"]:
        for engine in engines:
            sel = [r for r in rows if r["engine"] == engine and (
                r["kind"] == kind or (kind == "pdf+outline" and r["kind"] == "pdf" and r["n_heads"] > 0))]
            if not sel:
                continue
            secs = sum(r["seconds"] for r in sel)
            print(f"{kind:<8} {engine:<18} {fmt(mean([r['token_f1'] for r in sel])):>11} "
                  f"{fmt(mean([r['bigram_f1'] for r in sel])):>11} {fmt(mean([r['head_recall'] for r in sel])):>11} "
                  f"{fmt(mean([r['head_precision'] for r in sel])):>11} {fmt(mean([r['table_rows'] for r in sel])):>11} {secs:8.2f}")
    pdf_secs = {e: sorted(r["seconds"] for r in rows if r["engine"] == e and r["kind"] == "pdf") for e in engines}
    for e, s in pdf_secs.items():
        if s:
            print(f"PDF time {e}: total {sum(s):.2f} s, median {s[len(s) // 2]:.3f} s over {len(s)} files")
    print(f"wall (incl. process start) ours {walls['ours']:.2f} s for {len(files)} files")
    if "--per-file" in sys.argv:
        for r in rows:
            print(json.dumps(r, ensure_ascii=False))


if __name__ == "__main__":
    main()
