"""Publishes mindora task envelopes with plain pika, the way a Python app would.

Used by worker/tests/amqp_python.rs (interop) and shown in docs/amqp.md.

    publish.py URL QUEUE COUNT [--function NAME] [--rpc]

Publishes COUNT envelopes ``{"function": NAME, "args": [i], ...}`` with publisher confirms
(so every message is the broker's before this script exits), priority = i % 10. With
--rpc it then calls ``mindora.echo`` over reply_to/correlation_id and prints the reply as
one JSON line on stdout.
"""
import argparse
import datetime
import json
import sys
import time
import uuid

import pika


def envelope(function, args, kwargs=None, priority=None, max_attempts=None):
    env = {
        "id": str(uuid.uuid4()),
        "function": function,
        "args": args,
        "kwargs": kwargs or {},
        "attempt": 1,
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "trace_id": uuid.uuid4().hex,
    }
    if priority is not None:
        env["priority"] = priority
    if max_attempts is not None:
        env["max_attempts"] = max_attempts
    return env


def publish(channel, queue, env, reply_to=None, correlation_id=None):
    channel.basic_publish(
        exchange="",
        routing_key=queue,
        body=json.dumps(env).encode(),
        properties=pika.BasicProperties(
            content_type="application/json",
            delivery_mode=2,
            message_id=env["id"],
            priority=env.get("priority"),
            reply_to=reply_to,
            correlation_id=correlation_id,
            type="mindora.task",
        ),
        mandatory=True,
    )


def call(channel, queue, function, args, timeout=10.0):
    result = channel.queue_declare(queue="", exclusive=True, auto_delete=True)
    reply_queue = result.method.queue
    correlation_id = str(uuid.uuid4())
    publish(channel, queue, envelope(function, args), reply_queue, correlation_id)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        method, props, body = channel.basic_get(reply_queue, auto_ack=True)
        if method is None:
            time.sleep(0.02)
            continue
        if props.correlation_id == correlation_id:
            return json.loads(body)
    raise TimeoutError(f"no reply within {timeout}s")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("queue")
    p.add_argument("count", type=int)
    p.add_argument("--function", default="mindora.echo")
    p.add_argument("--rpc", action="store_true")
    a = p.parse_args()
    conn = pika.BlockingConnection(pika.URLParameters(a.url))
    ch = conn.channel()
    ch.confirm_delivery()  # basic_publish now raises unless the broker confirmed
    for i in range(a.count):
        publish(ch, a.queue, envelope(a.function, [i], {"from": "pika"}, priority=i % 10))
    if a.rpc:
        reply = call(ch, a.queue, "mindora.echo", ["from-python"])
        print(json.dumps(reply), flush=True)
    conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
