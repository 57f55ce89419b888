"""Replays the Filebeat processors of infra/filebeat/filebeat.yml on one container log line
(the subset of processors that config uses), and flattens Elasticsearch mappings, so
check-stack.py can compare what a real worker log line becomes with what the template maps."""
import json
import re


def get_path(d, dotted):
    cur = d
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def pop_path(d, dotted):
    parts = dotted.split(".")
    cur = d
    for part in parts[:-1]:
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur.pop(parts[-1], None) if isinstance(cur, dict) else None


def set_path(d, dotted, value):
    parts = dotted.split(".")
    cur = d
    for part in parts[:-1]:
        cur = cur.setdefault(part, {})
    cur[parts[-1]] = value


def replay(processors, line):
    """The subset of Filebeat processors the config uses, applied to one container log line."""
    event = {"message": line}
    for proc in processors:
        (kind, conf), = proc.items()
        if kind == "add_docker_metadata":
            continue
        if kind == "decode_json_fields":
            regexp = (conf.get("when") or {}).get("regexp", {}).get("message")
            if regexp and not re.search(regexp, event.get("message", "")):
                continue
            for field in conf["fields"]:
                try:
                    value = json.loads(get_path(event, field))
                except (TypeError, ValueError):
                    continue
                set_path(event, conf["target"], value)
        elif kind in ("rename", "copy_fields"):
            for f in conf["fields"]:
                if get_path(event, f["from"]) is None or get_path(event, f["to"]) is not None:
                    continue
                v = pop_path(event, f["from"]) if kind == "rename" else get_path(event, f["from"])
                set_path(event, f["to"], v)
        elif kind == "drop_fields":
            for f in conf["fields"]:
                pop_path(event, f)
        else:
            raise ValueError(f"processor {kind} not understood by the replay")
    return event


def mapped_fields(props, prefix=""):
    out = {}
    for k, v in props.items():
        name = prefix + k
        if "properties" in v:
            out.update(mapped_fields(v["properties"], name + "."))
        else:
            out[name] = v["type"]
    return out


def leaves(d, prefix=""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from leaves(v, prefix + k + ".")
        else:
            yield prefix + k
