"""The runner's Redis connection, built from the same settings as the worker's own.

mindora-worker passes its Redis settings as environment variables, the names its own flags
read (``MINDORA_REDIS_*``): the URL (``redis://``, ``rediss://``, ``redis+sentinel://`` or
``rediss+sentinel://``), an ACL user and password (or password file) that override the
URL's, the TLS files (CA, client certificate and key), and Sentinel addresses, master name
and the Sentinels' own credentials. Under Sentinel the connection follows the master
through failovers (redis-py's ``Sentinel.master_for``). ``redis+cluster://h1:p1,h2:p2``
(or ``rediss+cluster://``) is a Redis Cluster (redis-py's ``RedisCluster``, seeded with
those nodes). rq 3.0 reads its key prefix from ``RQ_KEY_PREFIX``, which the worker passes
on; rq 2.12 cannot use any prefix but ``rq``, so it is refused with another.
"""

import os
from urllib.parse import unquote

import redis
from redis.connection import ConnectionPool, parse_url
from redis.sentinel import Sentinel

SENTINEL_SCHEMES = ("redis+sentinel://", "rediss+sentinel://")
CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")


def check_key_prefix(env):
    """Refuses a key prefix this rq cannot honour (rq 2.12 always uses ``rq``)."""
    wanted = env.get("RQ_KEY_PREFIX") or "rq"
    try:
        from rq.defaults import RQ_KEY_PREFIX as used
    except ImportError:
        used = "rq"
    if used != wanted:
        raise ValueError(
            f"RQ_KEY_PREFIX={wanted!r} but this rq ({rq_version()}) uses {used!r}: "
            "install rq>=3.0 in the runner's environment or use the default prefix"
        )


def rq_version():
    import rq

    return rq.__version__


def _cluster(url, username, password, env):
    from redis.cluster import ClusterNode, RedisCluster

    tls = url.startswith("rediss+")
    authority = url.split("://", 1)[1].partition("/")[0]
    userinfo, at, hosts = authority.rpartition("@")
    kwargs = dict(_tls_kwargs(env), ssl=True) if tls else {}
    if at:
        user, _, pw = userinfo.partition(":")
        username = username or unquote(user) or None
        password = password or unquote(pw) or None
    if username:
        kwargs["username"] = username
    if password:
        kwargs["password"] = password
    nodes = [ClusterNode(h, p) for h, p in (_host_port(a, 6379) for a in _split(hosts))]
    return RedisCluster(startup_nodes=nodes, **kwargs)


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
    check_key_prefix(env)
    url = env.get("MINDORA_REDIS_URL") or "redis://127.0.0.1:6379/0"
    username = _env(env, "USERNAME")
    password = _password(env)
    if url.startswith(CLUSTER_SCHEMES):
        return _cluster(url, username, password, env)
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
