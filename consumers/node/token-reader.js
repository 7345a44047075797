// Reads the access token token-refresher publishes to AWS Secrets Manager
// (<prefix>access/<name>): {"access_token","token_type","expires_at","scope","generation","status"[,"reason"]}.
//
// - Cached until expires_at minus a margin (5 min, at most half the time left), not for a fixed TTL;
//   concurrent callers share one GetSecretValue.
// - expires_at is an RFC 3339 time or absent: a token without one is used and re-read every 5 min.
// - status "needs_reauth" throws NeedsReauthError (an operator must act; retrying does not help).
// - A refresh may revoke the token a consumer holds (providers such as ORY Hydra do), so on a 401
//   call reread(rejectedToken) — or use reader.fetch(), which does it once and retries.
// The token is never put in an error message.
import { GetSecretValueCommand, SecretsManagerClient } from "@aws-sdk/client-secrets-manager";

export const DEFAULT_MARGIN_MS = 5 * 60 * 1000;
export const RETRY_INTERVAL_MS = 5 * 1000;
export const NO_EXPIRY_TTL_MS = 5 * 60 * 1000;

const RFC3339 = /^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/;

export class NeedsReauthError extends Error {
  constructor(secretId, reason) {
    super(`${secretId}: token needs re-authorisation${reason ? ": " + reason : ""}`);
    this.name = "NeedsReauthError";
    this.reason = reason ?? "";
  }
}

export class MalformedSecretError extends Error {
  constructor(secretId, what) {
    super(`${secretId}: malformed access secret: ${what}`);
    this.name = "MalformedSecretError";
  }
}

export class ExpiredError extends Error {
  constructor(secretId, expiresAt, generation) {
    super(`${secretId}: published token expired at ${new Date(expiresAt).toISOString()} (generation ${generation})`);
    this.name = "ExpiredError";
  }
}

// parseAccessSecret checks the document; its errors name the field, never the token.
export function parseAccessSecret(secretId, text) {
  let d;
  try {
    d = JSON.parse(text);
  } catch {
    throw new MalformedSecretError(secretId, "not JSON");
  }
  if (d === null || typeof d !== "object" || Array.isArray(d)) {
    throw new MalformedSecretError(secretId, "not a JSON object");
  }
  const status = d.status ?? "active"; // hand-written documents may leave it out
  if (status === "needs_reauth") throw new NeedsReauthError(secretId, d.reason);
  if (status !== "active") throw new MalformedSecretError(secretId, `unknown status ${JSON.stringify(status)}`);
  if (typeof d.access_token !== "string" || d.access_token === "") {
    throw new MalformedSecretError(secretId, "access_token is missing");
  }
  if (d.token_type !== undefined && d.token_type !== null && typeof d.token_type !== "string") {
    throw new MalformedSecretError(secretId, "token_type is not a string");
  }
  let expiresAt = null; // absent (or "" from older refreshers): no stated expiry
  if (d.expires_at !== undefined && d.expires_at !== null && d.expires_at !== "") {
    expiresAt = typeof d.expires_at === "string" && RFC3339.test(d.expires_at) ? Date.parse(d.expires_at) : NaN;
    if (!Number.isFinite(expiresAt)) throw new MalformedSecretError(secretId, "expires_at is not an RFC 3339 time");
  }
  return {
    accessToken: d.access_token,
    tokenType: !d.token_type || d.token_type.toLowerCase() === "bearer" ? "Bearer" : d.token_type,
    expiresAt,
    scope: d.scope ?? "",
    generation: d.generation ?? 0,
  };
}

export class TokenReader {
  #cached = null; // {token, freshUntil}
  #inflight = { read: null, reread: null }; // one shared read of each kind
  #failure = null; // {error, until}

  // secretId: "token-refresher/access/<name>" or its ARN. client: a SecretsManagerClient.
  constructor(secretId, { client = new SecretsManagerClient({}), marginMs = DEFAULT_MARGIN_MS, now = Date.now } = {}) {
    this.secretId = secretId;
    this.client = client;
    this.marginMs = marginMs;
    this.now = now;
  }

  // token returns {accessToken, tokenType, expiresAt (ms or null), scope, generation}.
  async token() {
    const c = this.#cached;
    if (c && this.now() < c.freshUntil) return c.token;
    return this.#shared("read", () => this.#load(null));
  }

  // reread is for a 401 with rejectedToken: read again unless another caller already has.
  async reread(rejectedToken) {
    const c = this.#cached;
    if (c && c.token.accessToken !== rejectedToken && this.#valid(c.token)) return c.token;
    return this.#shared("reread", () => this.#load(rejectedToken));
  }

  // fetch is globalThis.fetch with "Authorization: <type> <token>"; on a 401 it re-reads once
  // and, when the token changed and the body can be sent again (not a stream), retries once.
  async fetch(url, init = {}) {
    const tok = await this.token();
    const res = await globalThis.fetch(url, withAuth(init, tok));
    if (res.status !== 401 || init.body instanceof ReadableStream) return res;
    const next = await this.reread(tok.accessToken).catch(() => tok);
    if (next.accessToken === tok.accessToken) return res;
    await res.body?.cancel();
    return globalThis.fetch(url, withAuth(init, next));
  }

  #valid(t) {
    return t.expiresAt === null || this.now() < t.expiresAt;
  }

  // #shared runs one read of a kind for all concurrent callers; a re-read after a 401 never
  // joins a plain read, which may have started before the token was revoked.
  #shared(kind, fn) {
    if (!this.#inflight[kind]) {
      this.#inflight[kind] = fn().finally(() => {
        this.#inflight[kind] = null;
      });
    }
    return this.#inflight[kind];
  }

  async #load(rejected) {
    const now = this.now();
    const old = this.#cached;
    if (rejected === null && this.#failure && now < this.#failure.until) {
      if (old && this.#valid(old.token)) return old.token;
      throw this.#failure.error;
    }
    let tok;
    try {
      const out = await this.client.send(new GetSecretValueCommand({ SecretId: this.secretId }));
      if (typeof out.SecretString !== "string") throw new MalformedSecretError(this.secretId, "no SecretString");
      tok = parseAccessSecret(this.secretId, out.SecretString);
    } catch (err) {
      if (err instanceof NeedsReauthError) this.#cached = null;
      else if (old && this.#valid(old.token)) {
        // Secrets Manager unavailable: keep serving a still-valid token, ask again shortly.
        this.#cached = { token: old.token, freshUntil: Math.min(now + RETRY_INTERVAL_MS, old.token.expiresAt ?? Infinity) };
        return old.token;
      }
      this.#failure = { error: err, until: now + RETRY_INTERVAL_MS };
      throw err;
    }
    if (!this.#valid(tok)) {
      // The refresher is late, failing or stopped; reading again soon may find a new one.
      const err = new ExpiredError(this.secretId, tok.expiresAt, tok.generation);
      this.#failure = { error: err, until: now + RETRY_INTERVAL_MS };
      throw err;
    }
    this.#failure = null;
    this.#cached = { token: tok, freshUntil: this.#freshUntil(tok, now) };
    return tok;
  }

  #freshUntil(tok, now) {
    if (tok.expiresAt === null) return now + NO_EXPIRY_TTL_MS;
    const margin = Math.max(0, Math.min(this.marginMs, (tok.expiresAt - now) / 2));
    // Near expiry (a late refresher) keep each read at least RETRY_INTERVAL_MS, never past expiry.
    return Math.max(tok.expiresAt - margin, Math.min(now + RETRY_INTERVAL_MS, tok.expiresAt));
  }
}

function withAuth(init, tok) {
  const headers = new Headers(init.headers);
  headers.set("Authorization", `${tok.tokenType} ${tok.accessToken}`);
  return { ...init, headers };
}
