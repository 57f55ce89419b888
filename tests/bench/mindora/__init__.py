"""Python twins of mindora-worker's built-in handlers, so Python rq's own worker can run
the very same jobs (`mindora.noop`, `mindora.echo`) in the benchmark."""


def noop(*args, **kwargs):
    return None


def echo(*args, **kwargs):
    return {"args": list(args), "kwargs": kwargs}


def sleep(seconds):
    """Twin of `mindora.sleep` (the rate-limit fleet test runs it on both kinds of worker)."""
    import time

    time.sleep(float(seconds))
    return float(seconds)
