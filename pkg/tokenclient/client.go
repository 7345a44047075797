// Package tokenclient reads access tokens that token-refresher publishes to
// AWS Secrets Manager (<prefix>access/<name>) and caches them for a consumer.
//
// A token is cached until its expires_at minus a margin, not for a fixed TTL, so a
// 24 h token republished every 12 h costs a process about two GetSecretValue calls a
// day however often it asks. Concurrent callers share one read (singleflight). The
// package never refreshes at the provider itself; with an Invoker it asks the refresher
// function to "ensure" the token (invocation.Request{Ensure: …}) when the published token
// is inside its margin or expired, once per published token across all callers.
package tokenclient

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"golang.org/x/oauth2"
	"golang.org/x/sync/singleflight"

	"github.com/seed-502fa48b/token-refresher/pkg/secretname"
)

// secretsGetter is the one Secrets Manager call the client needs.
type secretsGetter interface {
	GetSecretValue(ctx context.Context, in *secretsmanager.GetSecretValueInput, optFns ...func(*secretsmanager.Options)) (*secretsmanager.GetSecretValueOutput, error)
}

// Invoker is the one Lambda call the optional on-demand refresh needs; *lambda.Client
// satisfies it.
type Invoker interface {
	Invoke(ctx context.Context, in *lambda.InvokeInput, optFns ...func(*lambda.Options)) (*lambda.InvokeOutput, error)
}

const (
	// DefaultMargin is how long before expires_at a cached token is read again.
	DefaultMargin = 5 * time.Minute
	// DefaultRetryInterval is how long a failed read is remembered before the next one.
	DefaultRetryInterval = 5 * time.Second

	// Shared work runs detached from the caller that started it (other callers wait on
	// it too), so it gets its own bounds.
	readTimeout   = 30 * time.Second
	invokeTimeout = 2 * time.Minute

	// noExpiryTTL is how long a token published without expires_at is cached: nothing says
	// when it ends, so it is re-read every few minutes and after a 401.
	noExpiryTTL = 5 * time.Minute
)

// Options configure a Client. The zero value is usable.
type Options struct {
	// Margin: a token is re-read once it expires within Margin (default 5 min). The
	// margin is capped at half of the lifetime left when the token was read
	// (expires_at minus read time), so a token read late is still cached for a while
	// and repeated reads near expiry back off geometrically instead of hammering; a
	// read is kept at least RetryInterval (never past expires_at). The lifetime is
	// taken from the read time rather than from generation changes because it needs
	// no history: the first read of a process is capped the same way.
	Margin time.Duration

	// RetryInterval: after a failed read (AWS error, needs_reauth, expired token) the
	// outcome is kept this long (default 5 s) — a still-valid cached token keeps being
	// served, otherwise the error is returned — before Secrets Manager is asked again.
	RetryInterval time.Duration

	// Now is the clock (default time.Now).
	Now func() time.Time

	// Invoker enables ensure (opt-in, for short-lived tokens): when a read finds the
	// published token expiring within Margin (or expired), the refresher function
	// FunctionName is invoked synchronously with {"ensure":[TokenName]} — at most once
	// per published token (generation and expires_at) across all callers of the Client —
	// and the secret is read again. The refresher refreshes only if the token is inside
	// its own margin, otherwise it touches nothing. A still-valid token is served if the
	// invoke fails. FunctionName (name, ARN, or qualified with the "ensure" alias, e.g.
	// "token-refresher:ensure", whose policy allows only ensure) is required; without it,
	// or without a token name, ensure stays off. Needs lambda:InvokeFunction.
	Invoker      Invoker
	FunctionName string

	// TokenName overrides the name derived from the secret name
	// (<prefix>access/<name> → <name>). Set it when secretName is a partial ARN.
	TokenName string

	// Logger receives warnings (served a cached token after a read error, on-demand
	// refresh). Tokens are never logged. Nil discards.
	Logger *slog.Logger
}

// Client reads one access secret. It is safe for concurrent use.
type Client struct {
	sm            secretsGetter
	secretName    string
	tokenName     string
	functionName  string
	invoker       Invoker
	margin        time.Duration
	retryInterval time.Duration
	now           func() time.Time
	log           *slog.Logger

	cache   atomic.Pointer[entry] // nil: nothing cached
	reads   singleflight.Group    // "read" (cache miss) and "reread" (after a 401)
	invokes singleflight.Group    // keyed by the published token (generation@expires_at)

	mu         sync.Mutex
	failErr    error     // outcome of the last failed read …
	failUntil  time.Time // … returned until then without asking again
	invokedFor string    // key of the last published token ensure was invoked for
}

// New returns a Client for the access secret secretName (name or ARN), e.g.
// "token-refresher/access/sahamati". client is usually a *secretsmanager.Client.
func New(client secretsGetter, secretName string, opts Options) *Client {
	c := &Client{
		sm:            client,
		secretName:    secretName,
		tokenName:     opts.TokenName,
		functionName:  opts.FunctionName,
		invoker:       opts.Invoker,
		margin:        opts.Margin,
		retryInterval: opts.RetryInterval,
		now:           opts.Now,
		log:           opts.Logger,
	}
	if c.margin <= 0 {
		c.margin = DefaultMargin
	}
	if c.retryInterval <= 0 {
		c.retryInterval = DefaultRetryInterval
	}
	if c.now == nil {
		c.now = time.Now
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.tokenName == "" {
		c.tokenName = tokenNameFrom(secretName)
	}
	if c.invoker != nil && (c.functionName == "" || c.tokenName == "") {
		c.log.Warn("tokenclient: ensure disabled: FunctionName and a token name are required",
			"secret", secretName, "function", c.functionName, "token", c.tokenName)
		c.invoker = nil
	}
	return c
}

// tokenNameFrom derives <name> from "<prefix>access/<name>" or from the ARN of such a
// secret. It returns "" when the name does not have that shape.
func tokenNameFrom(secretName string) string {
	name := secretName
	if strings.HasPrefix(name, "arn:") {
		i := strings.Index(name, ":secret:")
		if i < 0 {
			return ""
		}
		name = name[i+len(":secret:"):]
		// A full ARN always ends in "-" and six random characters that Secrets
		// Manager appends; they are not part of the name.
		if j := len(name) - 7; j > 0 && name[j] == '-' {
			name = name[:j]
		}
	}
	return secretname.TokenOfAccessAnyPrefix(name)
}

// entry is one read of the secret. Entries are immutable once stored.
type entry struct {
	tok        oauth2.Token // copied out on every return: oauth2 mutates the tokens it is given; zero Expiry: none stated
	generation int64
	readAt     time.Time
	freshUntil time.Time // served from the cache until then
	rejected   bool      // a re-read after a 401 returned this same token
}

func (e *entry) token() *oauth2.Token {
	t := e.tok
	return &t
}

// valid: not expired. A token without a stated expiry is valid until a 401 says otherwise.
func (e *entry) valid(now time.Time) bool { return e.tok.Expiry.IsZero() || now.Before(e.tok.Expiry) }

// extended returns a copy served from the cache until now+d, never past expiry.
func (e *entry) extended(now time.Time, d time.Duration) *entry {
	n := *e
	n.freshUntil = now.Add(d)
	if !n.tok.Expiry.IsZero() && n.freshUntil.After(n.tok.Expiry) {
		n.freshUntil = n.tok.Expiry
	}
	return &n
}

func (c *Client) newEntry(d *accessDoc, now time.Time) *entry {
	tok := oauth2.Token{AccessToken: d.AccessToken, TokenType: d.TokenType, Expiry: d.expiresAt}
	extra := tok.WithExtra(map[string]any{"scope": d.Scope, "generation": d.Generation})
	e := &entry{tok: *extra, generation: d.Generation, readAt: now}
	if d.expiresAt.IsZero() {
		e.freshUntil = now.Add(noExpiryTTL)
		return e
	}
	m := c.margin
	if half := d.expiresAt.Sub(now) / 2; half < m {
		m = max(half, 0)
	}
	fresh := d.expiresAt.Add(-m)
	// Near expiry (a late refresher) the halving would re-read ever faster: keep every
	// read at least RetryInterval, never past expiry.
	if floor := now.Add(c.retryInterval); fresh.Before(floor) {
		fresh = floor
		if fresh.After(d.expiresAt) {
			fresh = d.expiresAt
		}
	}
	e.freshUntil = fresh
	return e
}

// inMargin: the published token expires within Margin, or has expired — worth an ensure.
func (c *Client) inMargin(d *accessDoc, now time.Time) bool {
	return !d.expiresAt.IsZero() && d.expiresAt.Sub(now) <= c.margin
}

// Token returns the published access token, from the cache while it is fresh. The
// returned token is the caller's own copy.
//
// Errors: *NeedsReauthError (errors.Is ErrNeedsReauth) when the refresher needs an
// operator; ErrExpired when the published token has expired and no refresh could be
// had; ErrMalformed; or the wrapped Secrets Manager error when no valid token is
// cached. A read error while the cached token is still valid returns that token.
func (c *Client) Token(ctx context.Context) (*oauth2.Token, error) {
	if e := c.cache.Load(); e != nil && c.now().Before(e.freshUntil) {
		return e.token(), nil
	}
	e, err := c.share(ctx, "read", c.load)
	if err != nil {
		return nil, err
	}
	return e.token(), nil
}

// TokenSource adapts the client to oauth2.TokenSource, for oauth2.NewClient and
// libraries that take one; ctx is used for every read. oauth2.NewClient adds its own
// reuse layer that keeps a token until 10 s before expires_at and knows nothing of
// 401s; prefer Transport for HTTP clients.
func (c *Client) TokenSource(ctx context.Context) oauth2.TokenSource {
	return &tokenSource{ctx: ctx, c: c}
}

type tokenSource struct {
	ctx context.Context
	c   *Client
}

func (s *tokenSource) Token() (*oauth2.Token, error) { return s.c.Token(s.ctx) }

// Invalidate drops the cached token and any remembered read failure, so the next
// Token reads the secret.
func (c *Client) Invalidate() {
	c.cache.Store(nil)
	c.mu.Lock()
	c.failErr, c.failUntil = nil, time.Time{}
	c.mu.Unlock()
}

// share runs fn once for all concurrent callers of key. fn runs detached from the
// caller's cancellation, because other callers wait on it; each caller still stops
// waiting when its own ctx ends.
func (c *Client) share(ctx context.Context, key string, fn func(context.Context) (*entry, error)) (*entry, error) {
	ch := c.reads.DoChan(key, func() (any, error) {
		return fn(context.WithoutCancel(ctx))
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.(*entry), nil
	case <-ctx.Done():
		return nil, fmt.Errorf("tokenclient: %s: %w", c.secretName, context.Cause(ctx))
	}
}

// load serves a cache miss.
func (c *Client) load(ctx context.Context) (*entry, error) {
	now := c.now()
	old := c.cache.Load()
	if old != nil && now.Before(old.freshUntil) {
		return old, nil // the flight that ended just before this one read it
	}
	if err := c.failure(now); err != nil {
		if old != nil && old.valid(now) {
			return old, nil
		}
		return nil, err
	}
	return c.fetch(ctx, old, "")
}

// reread serves a 401 for the token rejected: read again unless another caller has
// already moved past it, or a re-read confirmed it as current less than
// RetryInterval ago.
func (c *Client) reread(ctx context.Context, rejected string) (*entry, error) {
	now := c.now()
	old := c.cache.Load()
	if old != nil && old.valid(now) {
		if old.tok.AccessToken != rejected {
			return old, nil
		}
		if old.rejected && now.Sub(old.readAt) < c.retryInterval {
			return old, nil
		}
	}
	return c.fetch(ctx, old, rejected)
}

// fetch reads the secret and, with ensure on, asks the refresher at most once per published
// token that is inside its margin, then reads again. old is the entry cached when the flight
// started.
func (c *Client) fetch(ctx context.Context, old *entry, rejected string) (*entry, error) {
	var ensureErr error
	ensured := false
	for {
		now := c.now()
		d, err := c.read(ctx)
		if err != nil {
			return c.readFailed(ctx, old, now, err)
		}
		if d.Status == statusNeedsReauth {
			err := &NeedsReauthError{Secret: c.secretName, Reason: d.Reason}
			c.cache.Store(nil)
			c.setFailure(err, now)
			c.log.WarnContext(ctx, "tokenclient: token needs re-authorisation",
				"secret", c.secretName, "generation", d.Generation, "reason", d.Reason)
			return nil, err
		}
		if !ensured && c.invoker != nil && c.inMargin(d, now) {
			if did, err := c.ensureOnce(ctx, d); did {
				ensured, ensureErr = true, err
				if err != nil {
					c.log.WarnContext(ctx, "tokenclient: ensure failed", "secret", c.secretName, "error", err)
				}
				continue // read what the refresher published
			}
		}
		e := c.newEntry(d, now)
		if rejected != "" && e.tok.AccessToken == rejected {
			e.rejected = true
		}
		if e.valid(now) {
			c.clearFailure()
			return c.settle(e, now, rejected), nil
		}
		// The published token has expired: the refresher is late, failing or stopped.
		if cur := c.newerCached(e, now, rejected); cur != nil {
			return cur, nil
		}
		err = fmt.Errorf("%w: %s expired at %s (generation %d)", ErrExpired,
			c.secretName, d.expiresAt.Format(time.RFC3339), d.Generation)
		if ensureErr != nil {
			err = fmt.Errorf("%w; ensure: %w", err, ensureErr)
		}
		c.setFailure(err, now)
		return nil, err
	}
}

func (c *Client) read(ctx context.Context) (*accessDoc, error) {
	ctx, cancel := context.WithTimeout(ctx, readTimeout)
	defer cancel()
	name, stage := c.secretName, "AWSCURRENT"
	out, err := c.sm.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: &name, VersionStage: &stage})
	if err != nil {
		return nil, err // SDK errors name the operation and request id, never the value
	}
	if out.SecretString == nil {
		return nil, fmt.Errorf("%w: %s has no SecretString", ErrMalformed, c.secretName)
	}
	d, err := parseAccessDoc(*out.SecretString)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c.secretName, err)
	}
	return d, nil
}

// readFailed keeps serving a still-valid cached token for RetryInterval, or
// remembers and returns the error.
func (c *Client) readFailed(ctx context.Context, old *entry, now time.Time, err error) (*entry, error) {
	err = fmt.Errorf("tokenclient: read %s: %w", c.secretName, err)
	if old != nil && old.valid(now) {
		c.log.WarnContext(ctx, "tokenclient: read failed, serving the cached token",
			"secret", c.secretName, "generation", old.generation,
			"expires_at", old.tok.Expiry, "error", err)
		ext := old.extended(now, c.retryInterval)
		c.cache.CompareAndSwap(old, ext)
		return ext, nil
	}
	c.setFailure(err, now)
	return nil, err
}

// newerCached returns the cached entry when it should be served instead of e: a newer,
// still-valid generation that was not just rejected (Secrets Manager reads are eventually
// consistent and may briefly return an older version), extended by RetryInterval if it is
// no longer fresh. It returns nil when e should be served.
func (c *Client) newerCached(e *entry, now time.Time, rejected string) *entry {
	win, _ := c.preferCached(e, now, rejected)
	return win
}

// settle caches e and returns it, unless newerCached has a better entry to serve.
func (c *Client) settle(e *entry, now time.Time, rejected string) *entry {
	for {
		win, cur := c.preferCached(e, now, rejected)
		if win != nil {
			return win
		}
		if c.cache.CompareAndSwap(cur, e) {
			return e
		}
	}
}

// preferCached is newerCached, also returning the cached entry it judged, which settle
// replaces only if it is still cached.
func (c *Client) preferCached(e *entry, now time.Time, rejected string) (win, cur *entry) {
	for {
		cur := c.cache.Load()
		if cur == nil || cur.generation <= e.generation || cur.rejected ||
			!cur.valid(now) || (rejected != "" && cur.tok.AccessToken == rejected) {
			return nil, cur
		}
		if now.Before(cur.freshUntil) {
			return cur, cur
		}
		if ext := cur.extended(now, c.retryInterval); c.cache.CompareAndSwap(cur, ext) {
			return ext, ext
		}
	}
}

func (c *Client) failure(now time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.failErr != nil && now.Before(c.failUntil) {
		return c.failErr
	}
	return nil
}

func (c *Client) setFailure(err error, now time.Time) {
	c.mu.Lock()
	c.failErr, c.failUntil = err, now.Add(c.retryInterval)
	c.mu.Unlock()
}

func (c *Client) clearFailure() {
	c.mu.Lock()
	c.failErr, c.failUntil = nil, time.Time{}
	c.mu.Unlock()
}
