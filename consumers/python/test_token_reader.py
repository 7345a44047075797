"""Runs against moto named by AWS_ENDPOINT_URL; internal/consumertest starts it and runs
`python3 -m unittest` here. Without AWS_ENDPOINT_URL every test is skipped."""
import datetime as dt
import http.server
import json
import os
import secrets
import threading
import unittest
import urllib.error

from token_reader import Expired, MalformedSecret, NeedsReauth, TokenReader, urlopen_with_token

T0 = dt.datetime(2026, 11, 21, 12, 0, tzinfo=dt.timezone.utc)
ISSUED = []


def new_token():
    t = "at-py-" + secrets.token_hex(12)
    ISSUED.append(t)
    return t


def active(tok, exp, gen=1):
    return {"access_token": tok, "token_type": "Bearer", "expires_at": exp.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "scope": "fund.read", "generation": gen, "status": "active"}


class Counting:
    """The real boto3 client, counting GetSecretValue calls."""

    def __init__(self, sm):
        self.sm, self.calls = sm, 0

    def get_secret_value(self, **kw):
        self.calls += 1
        return self.sm.get_secret_value(**kw)


class Clock:
    def __init__(self, t):
        self.t = t

    def now(self):
        return self.t


@unittest.skipUnless(os.environ.get("AWS_ENDPOINT_URL"), "AWS_ENDPOINT_URL is not set (run through go test ./internal/consumertest)")
class TokenReaderTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        import boto3
        cls.sm = boto3.client("secretsmanager")
        cls.created = []

    @classmethod
    def tearDownClass(cls):
        for name in cls.created:
            cls.sm.delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)

    def new_secret(self, doc):
        name = "token-refresher/access/py-" + secrets.token_hex(6)
        self.sm.create_secret(Name=name, SecretString=doc if isinstance(doc, str) else json.dumps(doc))
        self.created.append(name)
        return name

    def publish(self, name, doc):
        self.sm.put_secret_value(SecretId=name, SecretString=json.dumps(doc))

    def no_leak(self, err):
        for t in ISSUED:
            self.assertNotIn(t, str(err))

    def test_reads_the_seeded_secret(self):
        tok, typ = TokenReader(os.environ["TR_ACCESS_SECRET"], client=self.sm).token()
        self.assertEqual((tok, typ), (os.environ["TR_ACCESS_TOKEN"], "Bearer"))

    def test_cached_until_expiry_minus_margin(self):
        for lifetime, before in ((dt.timedelta(hours=24), dt.timedelta(minutes=5)), (dt.timedelta(minutes=6), dt.timedelta(minutes=3))):
            clk, c, tok1 = Clock(T0), Counting(self.sm), new_token()
            exp = T0 + lifetime
            name = self.new_secret(active(tok1, exp))
            r = TokenReader(name, client=c, now=clk.now)
            self.assertEqual(r.token()[0], tok1)
            tok2 = new_token()
            self.publish(name, active(tok2, exp + dt.timedelta(hours=12), 2))
            clk.t = exp - before - dt.timedelta(seconds=1)
            self.assertEqual((r.token()[0], c.calls), (tok1, 1))
            clk.t = exp - before
            self.assertEqual((r.token()[0], c.calls), (tok2, 2))

    def test_threads_share_one_read(self):
        tok, c = new_token(), Counting(self.sm)
        r = TokenReader(self.new_secret(active(tok, T0 + dt.timedelta(hours=1))), client=c, now=lambda: T0)
        got = []
        threads = [threading.Thread(target=lambda: got.append(r.token()[0])) for _ in range(50)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        self.assertEqual((set(got), c.calls), ({tok}, 1))

    def test_no_expires_at(self):
        for doc in (lambda t: {"access_token": t, "status": "active"}, lambda t: {"access_token": t, "expires_at": "", "status": "active"}):
            clk, c, tok = Clock(T0), Counting(self.sm), new_token()
            r = TokenReader(self.new_secret(doc(tok)), client=c, now=clk.now)
            self.assertEqual(r.token()[0], tok)
            clk.t += dt.timedelta(minutes=4)
            r.token()
            self.assertEqual(c.calls, 1)
            clk.t += dt.timedelta(minutes=1)
            r.token()
            self.assertEqual(c.calls, 2)

    def test_needs_reauth(self):
        name = self.new_secret({"access_token": "", "generation": 5, "status": "needs_reauth", "reason": "provider rejected the refresh: 400 invalid_grant"})
        with self.assertRaises(NeedsReauth) as cm:
            TokenReader(name, client=self.sm, now=lambda: T0).token()
        self.assertIn("invalid_grant", cm.exception.reason)

    def test_malformed(self):
        for doc in (lambda t: '{"access_token":"%s" x}' % t,
                    lambda t: {"access_token": t, "expires_at": "tomorrow"},
                    lambda t: {"access_token": t, "expires_at": "2026-11-22"},
                    lambda t: {"access_token": t, "expires_at": 1764000000},
                    lambda t: {"access_token": t, "expires_at": "2026-11-22T12:00:00Z", "status": "paused"},
                    lambda t: {"expires_at": "2026-11-22T12:00:00Z"}):
            with self.assertRaises(MalformedSecret) as cm:
                TokenReader(self.new_secret(doc(new_token())), client=self.sm, now=lambda: T0).token()
            self.no_leak(cm.exception)

    def test_expired(self):
        with self.assertRaises(Expired) as cm:
            TokenReader(self.new_secret(active(new_token(), T0 - dt.timedelta(minutes=1))), client=self.sm, now=lambda: T0).token()
        self.no_leak(cm.exception)

    def test_rereads_once_on_401(self):
        accepted, seen = [None], []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                seen.append(self.headers.get("Authorization"))
                self.send_response(200 if self.headers.get("Authorization") == f"Bearer {accepted[0]}" else 401)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        self.addCleanup(srv.server_close)
        self.addCleanup(srv.shutdown)
        url = f"http://127.0.0.1:{srv.server_address[1]}/v1/accounts"

        c, tok1, tok2 = Counting(self.sm), new_token(), new_token()
        name = self.new_secret(active(tok1, T0 + dt.timedelta(hours=24)))
        r = TokenReader(name, client=c, now=lambda: T0)
        accepted[0] = tok1
        self.assertEqual(urlopen_with_token(r, url).status, 200)
        self.publish(name, active(tok2, T0 + dt.timedelta(hours=36), 2))  # a refresh revoked tok1
        accepted[0], seen[:] = tok2, []
        self.assertEqual(urlopen_with_token(r, url).status, 200)
        self.assertEqual((seen, c.calls), ([f"Bearer {tok1}", f"Bearer {tok2}"], 2))

        accepted[0], seen[:] = "something else", []  # the published token is the rejected one: no loop
        with self.assertRaises(urllib.error.HTTPError) as cm:
            urlopen_with_token(r, url)
        cm.exception.close()
        self.assertEqual((cm.exception.code, len(seen), c.calls), (401, 1, 3))


if __name__ == "__main__":
    unittest.main()
