"""Reference texts for the real-document corpus, made with tools independent of ours.

    python reference.py MANIFEST CORPUS_DIR

PDF: poppler's `pdftotext` (with poppler-data for CJK CMaps); DOCX: python-docx; XLSX: openpyxl
(cached formula values); XLS: xlrd; ODS: odfpy; HTML: BeautifulSoup. Cell values are written the
way people read them (dates as ISO dates, booleans as TRUE/FALSE, numbers to 15 significant
digits), which is what the extractor is scored against.
"""

import datetime
import subprocess
import sys
from pathlib import Path


def fmt(v):
    if v is None:
        return ""
    if isinstance(v, bool):
        return "TRUE" if v else "FALSE"
    if isinstance(v, datetime.datetime):
        if v.time() == datetime.time(0, 0):
            return v.date().isoformat()
        return v.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(v, datetime.date):
        return v.isoformat()
    if isinstance(v, datetime.time):
        return v.strftime("%H:%M:%S")
    if isinstance(v, datetime.timedelta):
        secs = int(v.total_seconds())
        return "%02d:%02d:%02d" % (secs // 3600, secs % 3600 // 60, secs % 60)
    if isinstance(v, float):
        if v.is_integer() and abs(v) < 1e15:
            return str(int(v))
        return "%.15g" % v
    return str(v)


def pdf(path, password):
    cmd = ["pdftotext", "-q", "-enc", "UTF-8"]
    if password:
        cmd += ["-upw", password]
    out = subprocess.run(cmd + [str(path), "-"], check=True, capture_output=True)
    return out.stdout.decode("utf-8", "replace")


def docx(path):
    import docx as d

    doc = d.Document(str(path))
    lines = [p.text for p in doc.paragraphs]
    for table in doc.tables:
        seen = []
        for row in table.rows:
            for cell in row.cells:
                # python-docx repeats a merged cell once per grid column and per row it
                # spans; people read it once.
                if not any(cell._tc is tc for tc in seen):
                    lines.append(cell.text)
                    seen.append(cell._tc)
    return "\n".join(lines)


def xlsx(path):
    import openpyxl

    wb = openpyxl.load_workbook(str(path), data_only=True)
    out = []
    for ws in wb.worksheets:
        out.append("# Sheet: " + ws.title)
        for row in ws.iter_rows(values_only=True):
            out.append("\t".join(fmt(v) for v in row))
    return "\n".join(out)


def xls(path):
    import xlrd

    book = xlrd.open_workbook(str(path))
    out = []
    for sheet in book.sheets():
        out.append("# Sheet: " + sheet.name)
        for r in range(sheet.nrows):
            cells = []
            for c in range(sheet.ncols):
                cell = sheet.cell(r, c)
                if cell.ctype == xlrd.XL_CELL_DATE:
                    dt = xlrd.xldate_as_datetime(cell.value, book.datemode)
                    cells.append(fmt(dt.time()) if cell.value < 1 else fmt(dt))
                elif cell.ctype == xlrd.XL_CELL_BOOLEAN:
                    cells.append(fmt(bool(cell.value)))
                elif cell.ctype in (xlrd.XL_CELL_EMPTY, xlrd.XL_CELL_BLANK, xlrd.XL_CELL_ERROR):
                    cells.append("")
                else:
                    cells.append(fmt(cell.value))
            out.append("\t".join(cells))
    return "\n".join(out)


def ods_time(v):
    # PT12H30M00S
    h = m = s = 0
    num = ""
    for ch in v.lstrip("P").lstrip("T"):
        if ch.isdigit() or ch == ".":
            num += ch
        elif ch == "H":
            h, num = int(float(num)), ""
        elif ch == "M":
            m, num = int(float(num)), ""
        elif ch == "S":
            s, num = int(float(num)), ""
        else:
            num = ""
    return "%02d:%02d:%02d" % (h, m, s)


def ods(path):
    from odf import teletype
    from odf.opendocument import load
    from odf.table import Table, TableCell, TableRow
    from odf.text import P

    doc = load(str(path))
    out = []
    for table in doc.spreadsheet.getElementsByType(Table):
        out.append("# Sheet: " + table.getAttribute("name"))
        for row in table.getElementsByType(TableRow):
            cells = []
            for cell in row.childNodes:
                if cell.qname[1] != "table-cell":
                    continue
                kind = cell.getAttribute("valuetype")
                if kind in ("float", "percentage", "currency"):
                    text = fmt(float(cell.getAttribute("value")))
                elif kind == "date":
                    v = cell.getAttribute("datevalue")
                    text = v.replace("T00:00:00", "").replace("T", " ")
                elif kind == "time":
                    text = ods_time(cell.getAttribute("timevalue"))
                elif kind == "boolean":
                    text = fmt(cell.getAttribute("booleanvalue") == "true")
                else:
                    text = " ".join(teletype.extractText(p) for p in cell.getElementsByType(P))
                repeat = int(cell.getAttribute("numbercolumnsrepeated") or 1)
                cells.extend([text] * (min(repeat, 100) if text else 1))
            out.append("\t".join(cells))
    return "\n".join(out)


def html(path):
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(path.read_bytes(), "html.parser")
    for tag in soup(["script", "style", "noscript", "template"]):
        tag.decompose()
    return soup.get_text("\n")


def main():
    manifest, corpus = Path(sys.argv[1]), Path(sys.argv[2])
    builders = {"pdf": None, "docx": docx, "xlsx": xlsx, "xls": xls, "ods": ods, "html": html}
    for line in manifest.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        cols = line.split("\t")
        doc_id, path, expect = cols[0], cols[2], cols[3]
        password = cols[4] if len(cols) > 4 else None
        if expect == "no_text" or (expect == "locked" and not password):
            continue
        ext = path.rsplit(".", 1)[-1].lower()
        src = corpus / "docs" / (doc_id + "." + path.rsplit(".", 1)[-1])
        text = pdf(src, password) if ext == "pdf" else builders[ext](src)
        (corpus / "ref" / (doc_id + ".txt")).write_text(text, encoding="utf-8")
        print("reference: %-32s %7d chars" % (doc_id, len(text)))


if __name__ == "__main__":
    main()
