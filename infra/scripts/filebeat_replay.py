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


def matches(event, cond):
    """Filebeat's `when` conditions used by the config: and, or, not, regexp, equals."""
    if not cond:
        return True
    (kind, arg), = cond.items()
    if kind == "and":
        return all(matches(event, c) for c in arg)
    if kind == "or":
        return any(matches(event, c) for c in arg)
    if kind == "not":
        return not matches(event, arg)
    if kind == "regexp":
        return all(re.search(rx, str(get_path(event, f) or "")) for f, rx in arg.items())
    if kind == "equals":
        return all(get_path(event, f) == v for f, v in arg.items())
    raise ValueError(f"condition {kind} not understood by the replay")


def replay(processors, line, service="worker"):
    """The subset of Filebeat processors the config uses, applied to one container log line
    of the compose service `service` (what add_docker_metadata would label it with)."""
    event = {"message": line}
    for proc in processors:
        (kind, conf), = proc.items()
        if kind == "add_docker_metadata":
            set_path(event, "container.labels.com_docker_compose_service", service)
            continue
        if kind == "decode_json_fields":
            if not matches(event, conf.get("when")):
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
