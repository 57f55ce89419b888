"""Rules deploy/kubernetes must keep beyond schema validity (run by check.sh).

Usage: lint.py DIR [--worker-metrics FILE]
"""
import re
import sys
from pathlib import Path

import yaml

# The same memory rule as compose's (infra/scripts/check-stack.py), measured in a real cgroup.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "infra" / "scripts"))
import memory_rule  # noqa: E402


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def mebibytes(q):
    m = re.fullmatch(r"(\d+)(Mi|Gi)", str(q))
    if not m:
        fail(f"memory quantity {q!r}: use Mi or Gi")
    return int(m.group(1)) * (1024 if m.group(2) == "Gi" else 1)


def main():
    root = Path(sys.argv[1])
    metrics = sys.argv[3] if len(sys.argv) > 3 and sys.argv[2] == "--worker-metrics" else None
    docs = []
    for f in sorted(root.rglob("*.yaml")):
        docs += [(f, d) for d in yaml.safe_load_all(f.read_text()) if d]
    by_kind = {}
    for f, d in docs:
        by_kind.setdefault(d["kind"], []).append(d)

    config = next(d for d in by_kind["ConfigMap"] if d["metadata"]["name"] == "mindora-worker")["data"]
    deploy = next(d for d in by_kind["Deployment"] if d["metadata"]["name"] == "mindora-worker")
    pod = deploy["spec"]["template"]["spec"]
    worker = pod["containers"][0]

    grace = int(config["MINDORA_SHUTDOWN_GRACE_SECS"])
    if pod["terminationGracePeriodSeconds"] <= grace + 5:
        fail(f"terminationGracePeriodSeconds {pod['terminationGracePeriodSeconds']} must exceed "
             f"MINDORA_SHUTDOWN_GRACE_SECS {grace} by more than 5 s")
    if worker["livenessProbe"]["httpGet"]["path"] != "/healthz":
        fail("liveness probe must GET /healthz")
    if worker["readinessProbe"]["httpGet"]["path"] != "/readyz":
        fail("readiness probe must GET /readyz")
    port = config["MINDORA_METRICS_ADDR"].rsplit(":", 1)[1]
    if str(worker["ports"][0]["containerPort"]) != port:
        fail("container port must match MINDORA_METRICS_ADDR")

    # One memory rule for compose and Kubernetes (infra/scripts/memory_rule.py): base +
    # concurrency x per-job bound + PDF helpers + /tmp (a disk emptyDir's page cache counts in
    # the pod). The object cap bounds the downloads emptyDir, not memory.
    concurrency = int(config["MINDORA_CONCURRENCY"])
    cap = int(config["MINDORA_MAX_OBJECT_BYTES"])
    parsed = int(config["MINDORA_MAX_PARSED_BYTES"])
    pool = int(config["MINDORA_PDF_POOL"])
    tmp_vol = next(v for v in pod["volumes"] if v["name"] == "tmp")
    tmp = mebibytes(tmp_vol["emptyDir"]["sizeLimit"]) * 1024 * 1024
    need = memory_rule.need_bytes(concurrency, parsed, pool, tmp) / (1024 * 1024)
    limit = mebibytes(worker["resources"]["limits"]["memory"])
    request = mebibytes(worker["resources"]["requests"]["memory"])
    if limit < need:
        fail(f"memory limit {limit}Mi below the rule {memory_rule.formula(concurrency, parsed, pool, tmp)}")
    if memory_rule.object_problem(cap):
        fail(memory_rule.object_problem(cap))
    downloads = next((v for v in pod["volumes"] if v["name"] == "downloads"), None)
    mounts = {m["name"]: m["mountPath"] for m in worker["volumeMounts"]}
    if not downloads or mounts.get("downloads") != config.get("MINDORA_TMP_DIR"):
        fail("no emptyDir 'downloads' mounted at MINDORA_TMP_DIR")
    if mebibytes(downloads["emptyDir"]["sizeLimit"]) * 1024 * 1024 < concurrency * cap:
        fail("the downloads emptyDir holds less than MINDORA_CONCURRENCY x MINDORA_MAX_OBJECT_BYTES")
    if request > limit:
        fail("memory request above the limit")

    selector = deploy["spec"]["selector"]["matchLabels"]
    for pdb in by_kind.get("PodDisruptionBudget", []):
        if pdb["spec"]["selector"]["matchLabels"] != selector:
            fail("PodDisruptionBudget must select the worker pods")
    if not by_kind.get("PodDisruptionBudget"):
        fail("no PodDisruptionBudget")

    for so in by_kind.get("ScaledObject", []):
        if so["spec"]["scaleTargetRef"]["name"] != deploy["metadata"]["name"]:
            fail(f"ScaledObject {so['metadata']['name']} targets another workload")
        for t in so["spec"]["triggers"]:
            if t["type"] == "prometheus" and "mindora_queue_backlog" not in t["metadata"]["query"]:
                fail("the Prometheus trigger must query mindora_queue_backlog")
            if t["type"] == "prometheus" and so["spec"].get("minReplicaCount", 0) < 1:
                fail("a Prometheus trigger on the workers' own metric needs minReplicaCount >= 1")
    for hpa in by_kind.get("HorizontalPodAutoscaler", []):
        if hpa["spec"]["scaleTargetRef"]["name"] != deploy["metadata"]["name"]:
            fail("the HPA targets another workload")

    if metrics:
        text = Path(metrics).read_text()
        if not re.search(r"^mindora_queue_backlog\{", text, re.M):
            fail(f"{metrics} has no mindora_queue_backlog series: the autoscalers would see nothing")
    print(f"  {len(docs)} resources; grace {pod['terminationGracePeriodSeconds']}s > {grace}s; "
          f"memory limit {limit}Mi >= {need:.0f}Mi")


main()
