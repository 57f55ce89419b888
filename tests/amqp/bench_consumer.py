"""Baseline for the AMQP benchmark: a Python pika consumer doing what the worker does per
message (decode the envelope, look the function up, call it, ack after it returned).

    bench_consumer.py URL QUEUE COUNT PREFETCH [ACK_EVERY]

ACK_EVERY (default 1: one ack per message, what a plain pika consumer does) > 1 acks with
multiple=True every ACK_EVERY messages instead: the reference for what coalesced acks can save
the broker at best. Prints one JSON line: {"messages": N, "seconds": S, "per_sec": R}.
"""
import json
import sys
import time

import pika


def noop(*_args, **_kwargs):
    return None


HANDLERS = {"mindora.noop": noop}


def main():
    url, queue, count, prefetch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    ack_every = int(sys.argv[5]) if len(sys.argv) > 5 else 1
    conn = pika.BlockingConnection(pika.URLParameters(url))
    ch = conn.channel()
    ch.basic_qos(prefetch_count=prefetch)
    state = {"n": 0, "start": None}

    def on_message(channel, method, _props, body):
        if state["start"] is None:
            state["start"] = time.perf_counter()
            state["cpu"] = time.process_time()
        env = json.loads(body)
        HANDLERS[env["function"]](*env.get("args", []), **env.get("kwargs", {}))
        state["n"] += 1
        if ack_every == 1:
            channel.basic_ack(method.delivery_tag)
        elif state["n"] % ack_every == 0 or state["n"] >= count:
            channel.basic_ack(method.delivery_tag, multiple=True)
        if state["n"] >= count:
            channel.stop_consuming()

    ch.basic_consume(queue, on_message)
    ch.start_consuming()
    seconds = time.perf_counter() - state["start"]
    cpu_seconds = time.process_time() - state["cpu"]
    conn.close()
    print(json.dumps({"messages": state["n"], "seconds": seconds, "per_sec": state["n"] / seconds,
                      "cpu_seconds": cpu_seconds}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
