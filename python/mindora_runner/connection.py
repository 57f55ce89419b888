"""The runner's Redis connection, built from the same settings as the worker's own.

mindora-worker passes its Redis settings as environment variables, the names its own flags
read (``MINDORA_REDIS_*``): the URL (``redis://``, ``rediss://``, ``redis+sentinel://`` or
``rediss+sentinel://``), an ACL user and password (or password file) that override the
URL's, the TLS files (CA, client certificate and key), and Sentinel addresses, master name
and the Sentinels' own credentials. Under Sentinel the connection follows the master
through failovers (redis-py's ``Sentinel.master_for``).
"""

import os
from urllib.parse import unquote

import redis
from redis.connection import ConnectionPool, parse_url
from redis.sentinel import Sentinel

SENTINEL_SCHEMES = ("redis+sentinel://", "rediss+sentinel://")


def _env(env, name):
    value = env.get("MINDORA_REDIS_" + name, "")
    return value or None


def _split(value):
    return [v.strip() for v in (value or "").split(",") if v.strip()]


def _host_port(addr, default_port):
    if addr.startswith("["):
        host, _, rest = addr[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    host, sep, port = addr.rpartition(":")
    return (host, int(port)) if sep else (addr, default_port)


def _password(env):
    password = _env(env, "PASSWORD")
    path = _env(env, "PASSWORD_FILE")
    if password is None and path:
        with open(path, encoding="utf-8") as f:
            password = f.read().rstrip()
    return password


def _tls_kwargs(env):
    kwargs = {}
    for key, name in (
        ("ssl_ca_certs", "CA_FILE"),
        ("ssl_certfile", "CLIENT_CERT"),
        ("ssl_keyfile", "CLIENT_KEY"),
    ):
        if _env(env, name):
            kwargs[key] = _env(env, name)
    return kwargs


def parse_sentinel_url(url):
    """``redis[s]+sentinel://[user:pass@]h1[:p1],h2[:p2]/master[/db]`` -> parts."""
    tls = url.startswith("rediss+")
    rest = url.split("://", 1)[1]
    authority, _, path = rest.partition("/")
    userinfo, at, hosts = authority.rpartition("@")
    username = password = None
    if at:
        user, _, pw = userinfo.partition(":")
        username, password = unquote(user) or None, unquote(pw) or None
    nodes = [_host_port(h, 26379) for h in _split(hosts)]
    segments = [s for s in path.split("/") if s]
    if not nodes or not segments:
        raise ValueError("redis+sentinel:// URLs need sentinel addresses and a master name")
    db = int(segments[1]) if len(segments) > 1 else 0
    return tls, username, password, nodes, segments[0], db


def connect(env=None):
    """A ``redis.Redis`` for the worker's Redis, as the worker's settings describe it."""
    env = os.environ if env is None else env
    url = env.get("MINDORA_REDIS_URL") or "redis://127.0.0.1:6379/0"
    username = _env(env, "USERNAME")
    password = _password(env)
    sentinels = _split(_env(env, "SENTINELS"))
    if url.startswith(SENTINEL_SCHEMES) or sentinels:
        if url.startswith(SENTINEL_SCHEMES):
            tls, url_user, url_pass, nodes, master, db = parse_sentinel_url(url)
        else:
            opts = parse_url(url)
            tls = url.startswith("rediss://")
            url_user, url_pass = opts.get("username"), opts.get("password")
            nodes = [_host_port(a, 26379) for a in sentinels]
            master = _env(env, "SENTINEL_MASTER")
            db = opts.get("db", 0)
            if not master:
                raise ValueError("MINDORA_REDIS_SENTINELS needs MINDORA_REDIS_SENTINEL_MASTER")
        tls_kwargs = dict(_tls_kwargs(env), ssl=True) if tls else {}
        sentinel_kwargs = dict(tls_kwargs)
        if _env(env, "SENTINEL_USERNAME"):
            sentinel_kwargs["username"] = _env(env, "SENTINEL_USERNAME")
        if _env(env, "SENTINEL_PASSWORD"):
            sentinel_kwargs["password"] = _env(env, "SENTINEL_PASSWORD")
        data_kwargs = dict(tls_kwargs, db=db)
        if username or url_user:
            data_kwargs["username"] = username or url_user
        if password or url_pass:
            data_kwargs["password"] = password or url_pass
        return Sentinel(nodes, sentinel_kwargs=sentinel_kwargs, **data_kwargs).master_for(master)
    opts = parse_url(url)
    if username:
        opts["username"] = username
    if password:
        opts["password"] = password
    if url.startswith("rediss://"):
        opts.update(_tls_kwargs(env))
    return redis.Redis(connection_pool=ConnectionPool(**opts))
