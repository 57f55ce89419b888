"""The worker's memory rule, one formula for compose (MEM_WORKER) and Kubernetes
(resources.limits.memory), checked by infra/scripts/check-stack.py and deploy/kubernetes/lint.py.

    limit >= BASE + concurrency x max(STREAM, PARSED_FACTOR x max_parsed_bytes)
                  + min(pdf_pool, concurrency) x HELPER + tmp

Since issue 24 a document's size no longer decides the worker's memory: the object is streamed
to a temporary file on disk (MINDORA_TMP_DIR), a PDF is read page by page by a warm helper that
maps the file, and chunks are embedded, indexed and stored batch by batch, then dropped. What a
job still holds is a bounded stream (STREAM), except for the formats parsed whole (DOCX, XLSX,
ODS, HTML, text), which MINDORA_MAX_PARSED_BYTES caps (PARSED_FACTOR per parsed byte). The PDF
helpers are separate processes, at most MINDORA_PDF_POOL of them (one per running PDF job).

Measured 2026-12-08 with pipelines/examples/stream_memory.rs (release build, each document in a
fresh process, peak RSS VmHWM; pipelines/README.md "Memory"): the worker peaked at 38 MiB for a
1.4 MiB PDF, 42 MiB for 11.4 MiB and 71 MiB for a 93 MiB PDF (5,044 pages); its helper at 15, 76
and 409 MiB (VmHWM, the mapped file's pages included). Text parsed whole: 82 MiB for 10 MiB,
523 MiB for 100 MiB (4.8 x the file above the base); HTML 10.6 x (37.8 MiB: 437 MiB), XLSX
11 x (8.8 MiB: 138 MiB), DOCX 63 x its (compressed) file (2.8 MiB: 214 MiB, 11.1 MiB: 683 MiB). The object cap (MINDORA_MAX_OBJECT_BYTES) is not in the rule: it bounds disk
(concurrency x cap in MINDORA_TMP_DIR), and the page cache of those files is reclaimable.
"""
MIB = 1024 * 1024
# A worker at rest with a small document's stream (38 MiB measured) plus one tesseract
# (120 MiB with chi_sim+eng, measured for issue 19's OCR).
BASE_MIB = 160
# One job streaming a PDF: 71 - 38 = 33 MiB measured at 93 MiB / 5,044 pages; + ~45% headroom.
STREAM_MIB = 48
# Bytes held per file byte of a format parsed whole: text 4.8, HTML 10.6, XLSX 11, DOCX 63
# (its XML compresses ~3x); 64 = the largest, rounded up.
PARSED_FACTOR = 64
# One PDF helper while it reads a document up to 100 MiB: 409 MiB measured (VmHWM) for 93 MiB;
# a warm helper past MINDORA_PDF_RECYCLE_RSS_MB (512) of anonymous memory is replaced.
HELPER_MIB = 512
# The object cap the helper figure holds for (measured up to 93 MiB, rounded up).
HELPER_MAX_OBJECT_BYTES = 100 * MIB


def job_bytes(max_parsed_bytes):
    """What one running job may hold."""
    return max(STREAM_MIB * MIB, PARSED_FACTOR * max_parsed_bytes)


def need_bytes(concurrency, max_parsed_bytes, pdf_pool, tmp_bytes):
    """The least memory limit for a replica, in bytes."""
    helpers = min(pdf_pool, concurrency)
    return (BASE_MIB * MIB + concurrency * job_bytes(max_parsed_bytes)
            + helpers * HELPER_MIB * MIB + tmp_bytes)


def formula(concurrency, max_parsed_bytes, pdf_pool, tmp_bytes):
    """The rule with the numbers filled in, for messages."""
    job = job_bytes(max_parsed_bytes) / MIB
    return (f"{BASE_MIB} MiB + {concurrency} x max({STREAM_MIB}, {PARSED_FACTOR} x "
            f"{max_parsed_bytes / MIB:g}) = {job:g} MiB + {min(pdf_pool, concurrency)} PDF helpers"
            f" x {HELPER_MIB} MiB + /tmp {tmp_bytes / MIB:g} MiB"
            f" = {need_bytes(concurrency, max_parsed_bytes, pdf_pool, tmp_bytes) / MIB:g} MiB")


def object_problem(max_object_bytes):
    """Why an object cap is outside what the helper figure was measured for, or None."""
    if max_object_bytes > HELPER_MAX_OBJECT_BYTES:
        return (f"object cap {max_object_bytes / MIB:g} MiB above the {HELPER_MAX_OBJECT_BYTES / MIB:g}"
                " MiB the PDF helper's memory was measured for (memory_rule.HELPER_MIB)")
    return None
