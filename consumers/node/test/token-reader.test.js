// Runs against a Secrets Manager stand-in (moto) named by AWS_ENDPOINT_URL; the Go test
// internal/consumertest starts it, seeds TR_ACCESS_SECRET and runs `node --test`.
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import http from "node:http";
import { after, before, describe, test } from "node:test";

import {
  CreateSecretCommand,
  DeleteSecretCommand,
  PutSecretValueCommand,
  SecretsManagerClient,
} from "@aws-sdk/client-secrets-manager";

import { ExpiredError, MalformedSecretError, NeedsReauthError, TokenReader } from "../token-reader.js";

const skip = process.env.AWS_ENDPOINT_URL ? false : "AWS_ENDPOINT_URL is not set (run through go test ./internal/consumertest)";
const sm = new SecretsManagerClient({});
const t0 = Date.parse("2026-11-21T12:00:00Z");
const created = [];
const issued = [];

function newToken() {
  const t = "at-node-" + randomBytes(12).toString("hex");
  issued.push(t);
  return t;
}

// counting wraps the real client and counts GetSecretValue calls.
function counting() {
  const c = { calls: 0, send: (cmd) => (c.calls++, sm.send(cmd)) };
  return c;
}

class Clock {
  constructor(t) { this.t = t; }
  now = () => this.t;
}

async function newSecret(doc) {
  const name = "token-refresher/access/node-" + randomBytes(6).toString("hex");
  await sm.send(new CreateSecretCommand({ Name: name, SecretString: typeof doc === "string" ? doc : JSON.stringify(doc) }));
  created.push(name);
  return name;
}

async function publish(name, doc) {
  await sm.send(new PutSecretValueCommand({ SecretId: name, SecretString: typeof doc === "string" ? doc : JSON.stringify(doc) }));
}

function active(tok, expiresAtMs, generation = 1) {
  return { access_token: tok, token_type: "Bearer", expires_at: new Date(expiresAtMs).toISOString(), scope: "fund.read", generation, status: "active" };
}

// noLeak: no issued token in an error's message or stack.
function noLeak(err) {
  for (const t of issued) assert.ok(!String(err?.message).includes(t) && !String(err?.stack).includes(t), "error carries a token");
}

after(async () => {
  for (const name of created) await sm.send(new DeleteSecretCommand({ SecretId: name, ForceDeleteWithoutRecovery: true }));
});

describe("TokenReader", { skip }, () => {
  test("reads the secret the Go test seeded", async () => {
    const r = new TokenReader(process.env.TR_ACCESS_SECRET, { client: sm });
    const tok = await r.token();
    assert.equal(tok.accessToken, process.env.TR_ACCESS_TOKEN);
    assert.equal(tok.tokenType, "Bearer");
    assert.equal(tok.generation, Number(process.env.TR_ACCESS_GENERATION));
  });

  test("caches until expires_at minus the margin, capped at half the time left", async () => {
    for (const [lifetime, reReadBefore] of [[24 * 3600e3, 5 * 60e3], [6 * 60e3, 3 * 60e3]]) {
      const clk = new Clock(t0), c = counting();
      const tok1 = newToken(), exp = t0 + lifetime;
      const name = await newSecret(active(tok1, exp));
      const r = new TokenReader(name, { client: c, now: clk.now });
      assert.equal((await r.token()).accessToken, tok1);
      const tok2 = newToken();
      await publish(name, active(tok2, exp + 12 * 3600e3, 2));
      clk.t = exp - reReadBefore - 1000;
      assert.equal((await r.token()).accessToken, tok1, "re-read before the deadline");
      assert.equal(c.calls, 1);
      clk.t = exp - reReadBefore;
      assert.equal((await r.token()).accessToken, tok2, "not re-read at the deadline");
      assert.equal(c.calls, 2);
    }
  });

  test("concurrent callers share one read", async () => {
    const tok = newToken(), c = counting();
    const name = await newSecret(active(tok, t0 + 3600e3));
    const r = new TokenReader(name, { client: c, now: () => t0 });
    const got = await Promise.all(Array.from({ length: 200 }, () => r.token()));
    assert.ok(got.every((t) => t.accessToken === tok));
    assert.equal(c.calls, 1);
  });

  test("a token without expires_at is used and re-read every 5 minutes", async () => {
    for (const doc of [(t) => ({ access_token: t, generation: 3, status: "active" }), (t) => ({ access_token: t, expires_at: "", status: "active" })]) {
      const clk = new Clock(t0), c = counting(), tok = newToken();
      const r = new TokenReader(await newSecret(doc(tok)), { client: c, now: clk.now });
      const got = await r.token();
      assert.equal(got.accessToken, tok);
      assert.equal(got.expiresAt, null);
      clk.t += 4 * 60e3;
      await r.token();
      assert.equal(c.calls, 1);
      clk.t += 60e3;
      await r.token();
      assert.equal(c.calls, 2);
    }
  });

  test("needs_reauth (with no expires_at) throws NeedsReauthError with the reason", async () => {
    const name = await newSecret({ access_token: "", generation: 5, status: "needs_reauth", reason: "provider rejected the refresh: 400 invalid_grant" });
    const r = new TokenReader(name, { client: sm, now: () => t0 });
    const err = await r.token().then(() => null, (e) => e);
    assert.ok(err instanceof NeedsReauthError, `got ${err}`);
    assert.match(err.reason, /invalid_grant/);
  });

  test("malformed documents throw MalformedSecretError without quoting the token", async () => {
    for (const doc of [
      (t) => `{"access_token":"${t}" x}`,
      (t) => ({ access_token: t, expires_at: "tomorrow", status: "active" }),
      (t) => ({ access_token: t, expires_at: "2026-11-22", status: "active" }),
      (t) => ({ access_token: t, expires_at: t0 + 1, status: "active" }),
      (t) => ({ access_token: t, expires_at: "2026-11-22T12:00:00Z", status: "paused" }),
      () => ({ expires_at: "2026-11-22T12:00:00Z", status: "active" }),
    ]) {
      const r = new TokenReader(await newSecret(doc(newToken())), { client: sm, now: () => t0 });
      const err = await r.token().then(() => null, (e) => e);
      assert.ok(err instanceof MalformedSecretError, `got ${err}`);
      noLeak(err);
    }
  });

  test("an expired published token throws ExpiredError", async () => {
    const r = new TokenReader(await newSecret(active(newToken(), t0 - 60e3)), { client: sm, now: () => t0 });
    const err = await r.token().then(() => null, (e) => e);
    assert.ok(err instanceof ExpiredError, `got ${err}`);
    noLeak(err);
  });

  describe("fetch re-reads once on a 401", () => {
    let server, url, accepted;
    const seen = [];
    before(async () => {
      server = http.createServer((req, res) => {
        seen.push(req.headers.authorization);
        res.writeHead(req.headers.authorization === `Bearer ${accepted}` ? 200 : 401).end();
      });
      await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
      url = `http://127.0.0.1:${server.address().port}/v1/accounts`;
    });
    after(() => new Promise((ok) => server.close(ok)));

    test("the provider revoked the cached token: re-read, retry with the new one", async () => {
      const c = counting(), tok1 = newToken(), tok2 = newToken();
      const name = await newSecret(active(tok1, t0 + 24 * 3600e3, 1));
      const r = new TokenReader(name, { client: c, now: () => t0 });
      accepted = tok1;
      assert.equal((await r.fetch(url)).status, 200);
      await publish(name, active(tok2, t0 + 36 * 3600e3, 2)); // a refresh revoked tok1
      accepted = tok2;
      seen.length = 0;
      const res = await r.fetch(url, { method: "POST", body: "{}" });
      assert.equal(res.status, 200);
      assert.deepEqual(seen, [`Bearer ${tok1}`, `Bearer ${tok2}`]);
      assert.equal(c.calls, 2);
    });

    test("the published token is the rejected one: the 401 is returned, no loop", async () => {
      const c = counting(), tok = newToken();
      const r = new TokenReader(await newSecret(active(tok, t0 + 3600e3)), { client: c, now: () => t0 });
      accepted = "something else";
      seen.length = 0;
      assert.equal((await r.fetch(url)).status, 401);
      assert.equal(seen.length, 1);
      assert.equal(c.calls, 2);
    });
  });
});
