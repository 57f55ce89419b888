#!/usr/bin/env python3
"""Minimal S3 client (standard library only, AWS SigV4, path-style) for backups, restores and
the e2e upload, so no S3 tool has to be in any image: runs in the stack's Python image.

  s3sync.py download DIR        every bucket the key can list -> DIR/<bucket>/<key> (current versions)
  s3sync.py upload DIR          DIR/<bucket>/<key> -> the buckets (created when missing)
  s3sync.py put BUCKET KEY FILE one object

Environment: S3_URL (http://s3:8333), S3_ACCESS_KEY, S3_SECRET_KEY, S3_REGION (us-east-1).
"""
import datetime
import hashlib
import hmac
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET

NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


class S3:
    def __init__(self, url, key, secret, region="us-east-1"):
        self.url, self.key, self.secret, self.region = url.rstrip("/"), key, secret, region

    def request(self, method, path, body=b"", query=""):
        """One signed request; returns (status, body bytes)."""
        now = datetime.datetime.now(datetime.timezone.utc)
        amz, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
        host = urllib.parse.urlsplit(self.url).netloc
        payload = hashlib.sha256(body).hexdigest()
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
        canon_q = "&".join(sorted(f"{urllib.parse.quote(k, safe='-_.~')}={urllib.parse.quote(v, safe='-_.~')}"
                                  for k, v in pairs))
        headers = {"host": host, "x-amz-content-sha256": payload, "x-amz-date": amz}
        signed = ";".join(sorted(headers))
        epath = urllib.parse.quote(path, safe="/-_.~")
        canonical = "\n".join([method, epath, canon_q, "".join(f"{k}:{headers[k]}\n" for k in sorted(headers)),
                               signed, payload])
        scope = f"{day}/{self.region}/s3/aws4_request"
        to_sign = "\n".join(["AWS4-HMAC-SHA256", amz, scope, hashlib.sha256(canonical.encode()).hexdigest()])
        k = ("AWS4" + self.secret).encode()
        for part in (day, self.region, "s3", "aws4_request"):
            k = hmac.new(k, part.encode(), hashlib.sha256).digest()
        sig = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
        req = urllib.request.Request(self.url + epath + (f"?{canon_q}" if canon_q else ""), data=body or None,
                                     method=method)
        req.add_header("x-amz-content-sha256", payload)
        req.add_header("x-amz-date", amz)
        req.add_header("Authorization", f"AWS4-HMAC-SHA256 Credential={self.key}/{scope}, "
                                        f"SignedHeaders={signed}, Signature={sig}")
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def ok(self, method, path, body=b"", query="", also=()):
        st, data = self.request(method, path, body, query)
        if st != 200 and st not in also:
            raise RuntimeError(f"{method} {path}?{query}: HTTP {st}: {data[:300]!r}")
        return data

    def buckets(self):
        root = ET.fromstring(self.ok("GET", "/"))
        return [b.findtext(f"{NS}Name") for b in root.iter(f"{NS}Bucket")]

    def keys(self, bucket):
        token = None
        while True:
            q = "list-type=2" + (f"&continuation-token={urllib.parse.quote(token, safe='')}" if token else "")
            root = ET.fromstring(self.ok("GET", f"/{bucket}", query=q))
            for c in root.iter(f"{NS}Contents"):
                yield c.findtext(f"{NS}Key")
            if root.findtext(f"{NS}IsTruncated") != "true":
                return
            token = root.findtext(f"{NS}NextContinuationToken")


def safe_join(base, *parts):
    path = os.path.realpath(os.path.join(base, *parts))
    if not path.startswith(os.path.realpath(base) + os.sep):
        raise RuntimeError(f"refusing a path outside {base}: {parts}")
    return path


def main(argv):
    s3 = S3(os.environ.get("S3_URL", "http://s3:8333"), os.environ["S3_ACCESS_KEY"], os.environ["S3_SECRET_KEY"],
            os.environ.get("S3_REGION", "us-east-1"))
    if len(argv) == 2 and argv[0] == "download":
        n = 0
        for b in s3.buckets():
            for key in s3.keys(b):
                if key.endswith("/"):
                    continue
                dest = safe_join(argv[1], b, key)
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                with open(dest, "wb") as f:
                    f.write(s3.ok("GET", f"/{b}/{key}"))
                n += 1
        print(f"s3sync: {n} objects downloaded")
    elif len(argv) == 2 and argv[0] == "upload":
        n = 0
        for b in sorted(os.listdir(argv[1])):
            s3.ok("PUT", f"/{b}", also=(409,))  # exists already: fine
            top = os.path.join(argv[1], b)
            for dirpath, _, files in os.walk(top):
                for fn in files:
                    key = os.path.relpath(os.path.join(dirpath, fn), top).replace(os.sep, "/")
                    with open(os.path.join(dirpath, fn), "rb") as f:
                        s3.ok("PUT", f"/{b}/{key}", f.read())
                    n += 1
        print(f"s3sync: {n} objects uploaded")
    elif len(argv) == 4 and argv[0] == "put":
        with open(argv[3], "rb") as f:
            s3.ok("PUT", f"/{argv[1]}/{argv[2]}", f.read())
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
