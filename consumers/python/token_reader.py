"""Reads the access token token-refresher publishes to AWS Secrets Manager.

<prefix>access/<name> holds {"access_token","token_type","expires_at","scope","generation","status"[,"reason"]}.

- Cached until expires_at minus a margin (5 min, at most half the time left), not for a fixed TTL;
  one GetSecretValue serves concurrent threads.
- expires_at is an RFC 3339 time or absent: a token without one is used and re-read every 5 min.
- status "needs_reauth" raises NeedsReauth (an operator must act; retrying does not help).
- A refresh may revoke the token you hold (providers such as ORY Hydra do): on a 401 call
  reread(rejected_token) and retry once with the token it returns, if it differs
  (urlopen_with_token does this).
The token never appears in an exception message.
"""
import datetime as dt
import json
import re
import threading

MARGIN = dt.timedelta(minutes=5)
RETRY_INTERVAL = dt.timedelta(seconds=5)
NO_EXPIRY_TTL = dt.timedelta(minutes=5)
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


class NeedsReauth(Exception):
    def __init__(self, secret_id, reason=""):
        super().__init__(f"{secret_id}: token needs re-authorisation" + (f": {reason}" if reason else ""))
        self.reason = reason


class MalformedSecret(Exception):
    pass


class Expired(Exception):
    pass


def _now():
    return dt.datetime.now(dt.timezone.utc)


def parse_access_secret(secret_id, text):
    """Returns (token, token_type, expires_at or None, generation); errors name the field, never the value."""
    try:
        d = json.loads(text)
    except ValueError:
        raise MalformedSecret(f"{secret_id}: not JSON") from None
    if not isinstance(d, dict):
        raise MalformedSecret(f"{secret_id}: not a JSON object")
    status = d.get("status") or "active"  # hand-written documents may leave it out
    if status == "needs_reauth":
        raise NeedsReauth(secret_id, d.get("reason", ""))
    if status != "active":
        raise MalformedSecret(f"{secret_id}: unknown status {status!r}")
    tok = d.get("access_token")
    if not isinstance(tok, str) or not tok:
        raise MalformedSecret(f"{secret_id}: access_token is missing")
    exp = d.get("expires_at")  # absent (or "" from older refreshers): no stated expiry
    if exp in (None, ""):
        exp = None
    elif isinstance(exp, str) and _RFC3339.match(exp):
        exp = dt.datetime.fromisoformat(exp.upper().replace("Z", "+00:00"))  # Python < 3.11 needs +00:00
    else:
        raise MalformedSecret(f"{secret_id}: expires_at is not an RFC 3339 time")
    typ = d.get("token_type") or "Bearer"
    if not isinstance(typ, str):
        raise MalformedSecret(f"{secret_id}: token_type is not a string")
    return tok, ("Bearer" if typ.lower() == "bearer" else typ), exp, d.get("generation", 0)


class TokenReader:
    def __init__(self, secret_id, client=None, margin=MARGIN, now=_now):
        if client is None:
            import boto3
            client = boto3.client("secretsmanager")
        self.secret_id, self.client, self.margin, self.now = secret_id, client, margin, now
        self._lock = threading.Lock()  # one GetSecretValue at a time serves every thread
        self._cached = None  # (token, token_type, expires_at, generation, fresh_until)

    def token(self):
        """Returns (access_token, token_type); raises NeedsReauth, Expired, MalformedSecret or the AWS error."""
        c = self._cached
        if c and self.now() < c[4]:
            return c[0], c[1]
        with self._lock:
            c = self._cached
            if c and self.now() < c[4]:  # another thread just read it
                return c[0], c[1]
            return self._read()

    def reread(self, rejected):
        """After a 401 for `rejected`: read again unless another thread already has."""
        with self._lock:
            c = self._cached
            if c and c[0] != rejected and self._valid(c[2]):
                return c[0], c[1]
            return self._read()

    def _valid(self, exp):
        return exp is None or self.now() < exp

    def _read(self):
        now, old = self.now(), self._cached
        try:
            out = self.client.get_secret_value(SecretId=self.secret_id)
            if "SecretString" not in out:
                raise MalformedSecret(f"{self.secret_id}: no SecretString")
            tok, typ, exp, gen = parse_access_secret(self.secret_id, out["SecretString"])
        except NeedsReauth:
            self._cached = None
            raise
        except Exception:
            if old and self._valid(old[2]):  # Secrets Manager unavailable: serve the valid token a bit longer
                self._cached = old[:4] + (now + RETRY_INTERVAL if old[2] is None else min(now + RETRY_INTERVAL, old[2]),)
                return old[0], old[1]
            raise
        if exp is None:
            fresh = now + NO_EXPIRY_TTL
        elif now >= exp:
            raise Expired(f"{self.secret_id}: published token expired at {exp.isoformat()} (generation {gen})")
        else:
            margin = max(dt.timedelta(0), min(self.margin, (exp - now) / 2))
            fresh = max(exp - margin, min(now + RETRY_INTERVAL, exp))
        self._cached = (tok, typ, exp, gen, fresh)
        return tok, typ


def urlopen_with_token(reader, url, data=None, headers=None, method=None, timeout=30):
    """urllib.request.urlopen with Authorization; on a 401 re-reads once and retries if the token changed."""
    import urllib.error
    import urllib.request

    def send(tok, typ):
        req = urllib.request.Request(url, data=data, headers={**(headers or {}), "Authorization": f"{typ} {tok}"}, method=method)
        return urllib.request.urlopen(req, timeout=timeout)

    tok, typ = reader.token()
    try:
        return send(tok, typ)
    except urllib.error.HTTPError as e:
        if e.code != 401:
            raise
        new, typ = reader.reread(tok)
        if new == tok:
            raise
        e.close()
        return send(new, typ)
