"""The worker's memory rule, one formula for compose (MEM_WORKER) and Kubernetes
(resources.limits.memory), checked by infra/scripts/check-stack.py and deploy/kubernetes/lint.py.

    limit >= BASE + concurrency x FACTOR x max_object_bytes + tmp

Measured in a real cgroup v1 memory limit (infra/tests/worker-memory-cgroup.sh, release build,
infra/README.md "Worker memory"): one 100 MiB text document alone peaked at 1402 MiB (about 14 x
its size: the text, its chunks and their 1536-d vectors, held by the job after extraction), a
100 MiB PDF's helper process at 312 MiB beside the worker. Only the download is shared by the
replica's jobs (MINDORA_MAX_OBJECT_BYTES is a per-process budget, released after extraction), so
every running job can hold its own document's text and vectors at once: the rule multiplies by
the concurrency. FACTOR is the measured 14 plus headroom; it scales with the embedding
dimensions (vectors are 4 x dims bytes per ~1000 characters), measured at 1536. At concurrency 1
with 100 MiB documents the heap the allocator keeps between jobs and the PDF helper exceed it
(2000 MiB measured against 1856): that setting is sized from the measurement (2304m), see the
README.
"""
MIB = 1024 * 1024
BASE_MIB = 128  # idle worker ~6 MiB measured, plus one tesseract (120 MiB with chi_sim+eng)
FACTOR = 16


def need_bytes(concurrency, max_object_bytes, tmp_bytes):
    """The least memory limit for a replica, in bytes."""
    return BASE_MIB * MIB + concurrency * FACTOR * max_object_bytes + tmp_bytes


def formula(concurrency, max_object_bytes, tmp_bytes):
    """The rule with the numbers filled in, for messages."""
    return (f"{BASE_MIB} MiB + {concurrency} x {FACTOR} x {max_object_bytes / MIB:g} MiB"
            f" + /tmp {tmp_bytes / MIB:g} MiB = {need_bytes(concurrency, max_object_bytes, tmp_bytes) / MIB:g} MiB")
