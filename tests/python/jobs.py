"""Plain Python job functions for the interop tests (run by a real `rq worker`)."""


def add(x, y=1):
    return {"sum": x + y}


def echo(*args, **kwargs):
    return {"args": list(args), "kwargs": kwargs}


def boom(message):
    raise ValueError(message)
