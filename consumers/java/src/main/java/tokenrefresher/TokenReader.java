package tokenrefresher;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Clock;
import java.time.Duration;
import java.time.Instant;
import java.time.OffsetDateTime;
import java.util.regex.Pattern;
import software.amazon.awssdk.services.secretsmanager.SecretsManagerClient;

/**
 * Reads the access token token-refresher publishes to AWS Secrets Manager ({@code <prefix>access/<name>}:
 * {"access_token","token_type","expires_at","scope","generation","status"[,"reason"]}).
 *
 * <ul>
 *   <li>Cached until expires_at minus a margin (5 min, at most half the time left), not for a fixed TTL;
 *       one GetSecretValue serves concurrent threads.
 *   <li>expires_at is an RFC 3339 time or absent: a token without one is used and re-read every 5 min.
 *   <li>status "needs_reauth" throws {@link NeedsReauthException}: an operator must act, retrying does not help.
 *   <li>A refresh may revoke the token you hold (ORY Hydra does): on a 401 call {@link #reread} and retry
 *       once if the token changed — {@link #send} does it.
 * </ul>
 * The token never appears in an exception message or in {@link Token#toString}.
 */
public final class TokenReader {
  public static final Duration MARGIN = Duration.ofMinutes(5);
  public static final Duration RETRY_INTERVAL = Duration.ofSeconds(5);
  public static final Duration NO_EXPIRY_TTL = Duration.ofMinutes(5);
  private static final Pattern RFC3339 =
      Pattern.compile("^\\d{4}-\\d{2}-\\d{2}[Tt]\\d{2}:\\d{2}:\\d{2}(\\.\\d+)?([Zz]|[+-]\\d{2}:\\d{2})$");
  private static final ObjectMapper JSON = new ObjectMapper();

  /** expiresAt is null when the document states none. */
  public record Token(String accessToken, String tokenType, Instant expiresAt, long generation) {
    @Override
    public String toString() {
      return "Token[type=" + tokenType + ", expiresAt=" + expiresAt + ", generation=" + generation + "]";
    }
  }

  public static final class NeedsReauthException extends RuntimeException {
    public final String reason;

    NeedsReauthException(String secretId, String reason) {
      super(secretId + ": token needs re-authorisation" + (reason.isEmpty() ? "" : ": " + reason));
      this.reason = reason;
    }
  }

  public static final class MalformedSecretException extends RuntimeException {
    MalformedSecretException(String secretId, String what) {
      super(secretId + ": malformed access secret: " + what);
    }
  }

  public static final class ExpiredException extends RuntimeException {
    ExpiredException(String secretId, Token t) {
      super(secretId + ": published token expired at " + t.expiresAt() + " (generation " + t.generation() + ")");
    }
  }

  private record Cached(Token token, Instant freshUntil) {}

  private final SecretsManagerClient sm;
  private final String secretId;
  private final Duration margin;
  private final Clock clock;
  private volatile Cached cached;

  public TokenReader(SecretsManagerClient sm, String secretId) {
    this(sm, secretId, MARGIN, Clock.systemUTC());
  }

  public TokenReader(SecretsManagerClient sm, String secretId, Duration margin, Clock clock) {
    this.sm = sm;
    this.secretId = secretId;
    this.margin = margin;
    this.clock = clock;
  }

  public Token token() {
    Cached c = cached;
    if (c != null && clock.instant().isBefore(c.freshUntil())) return c.token();
    synchronized (this) {
      c = cached; // another thread may just have read it
      if (c != null && clock.instant().isBefore(c.freshUntil())) return c.token();
      return read();
    }
  }

  /** After a 401 for {@code rejected}: read again unless another thread already has. */
  public synchronized Token reread(String rejected) {
    Cached c = cached;
    if (c != null && !c.token().accessToken().equals(rejected) && valid(c.token())) return c.token();
    return read();
  }

  /** Sends with Authorization; on a 401 re-reads once and retries if the token changed. */
  public HttpResponse<String> send(HttpClient http, HttpRequest.Builder req) throws IOException, InterruptedException {
    Token t = token();
    HttpResponse<String> resp = http.send(withAuth(req, t), HttpResponse.BodyHandlers.ofString());
    if (resp.statusCode() != 401) return resp;
    Token next = reread(t.accessToken());
    if (next.accessToken().equals(t.accessToken())) return resp;
    return http.send(withAuth(req, next), HttpResponse.BodyHandlers.ofString());
  }

  private static HttpRequest withAuth(HttpRequest.Builder req, Token t) {
    return req.copy().setHeader("Authorization", t.tokenType() + " " + t.accessToken()).build();
  }

  private boolean valid(Token t) {
    return t.expiresAt() == null || clock.instant().isBefore(t.expiresAt());
  }

  private Token read() {
    Instant now = clock.instant();
    Cached old = cached;
    Token t;
    try {
      String s = sm.getSecretValue(r -> r.secretId(secretId)).secretString();
      if (s == null) throw new MalformedSecretException(secretId, "no SecretString");
      t = parse(secretId, s);
    } catch (NeedsReauthException e) {
      cached = null;
      throw e;
    } catch (RuntimeException e) {
      if (old != null && valid(old.token())) { // Secrets Manager unavailable: serve the valid token a bit longer
        Instant until = now.plus(RETRY_INTERVAL);
        Instant exp = old.token().expiresAt();
        cached = new Cached(old.token(), exp != null && exp.isBefore(until) ? exp : until);
        return old.token();
      }
      throw e;
    }
    if (!valid(t)) throw new ExpiredException(secretId, t);
    Instant fresh;
    if (t.expiresAt() == null) {
      fresh = now.plus(NO_EXPIRY_TTL);
    } else {
      Duration half = Duration.between(now, t.expiresAt()).dividedBy(2);
      fresh = t.expiresAt().minus(half.compareTo(margin) < 0 ? half : margin);
      Instant floor = now.plus(RETRY_INTERVAL); // near expiry, keep each read a few seconds, never past expiry
      if (floor.isAfter(t.expiresAt())) floor = t.expiresAt();
      if (fresh.isBefore(floor)) fresh = floor;
    }
    cached = new Cached(t, fresh);
    return t;
  }

  /** Checks the document; errors name the field, never the token. */
  static Token parse(String secretId, String text) {
    JsonNode d;
    try {
      d = JSON.readTree(text);
    } catch (IOException e) {
      throw new MalformedSecretException(secretId, "not JSON");
    }
    if (d == null || !d.isObject()) throw new MalformedSecretException(secretId, "not a JSON object");
    String status = d.path("status").asText("");
    if (status.isEmpty()) status = "active"; // hand-written documents may leave it out
    if (status.equals("needs_reauth")) throw new NeedsReauthException(secretId, d.path("reason").asText(""));
    if (!status.equals("active")) throw new MalformedSecretException(secretId, "unknown status");
    JsonNode tok = d.path("access_token");
    if (!tok.isTextual() || tok.asText().isEmpty()) throw new MalformedSecretException(secretId, "access_token is missing");
    Instant exp = null; // absent (or "" from older refreshers): no stated expiry
    JsonNode e = d.path("expires_at");
    if (!e.isMissingNode() && !e.isNull() && !(e.isTextual() && e.asText().isEmpty())) {
      if (!e.isTextual() || !RFC3339.matcher(e.asText()).matches()) {
        throw new MalformedSecretException(secretId, "expires_at is not an RFC 3339 time");
      }
      exp = OffsetDateTime.parse(e.asText().toUpperCase()).toInstant();
    }
    String type = d.path("token_type").asText("");
    if (type.isEmpty() || type.equalsIgnoreCase("bearer")) type = "Bearer";
    return new Token(tok.asText(), type, exp, d.path("generation").asLong(0));
  }
}
