package tokenclient_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	smtypes "github.com/aws/aws-sdk-go-v2/service/secretsmanager/types"

	"github.com/seed-502fa48b/token-refresher/pkg/tokenclient"
)

func TestTokenCachedUntilExpiryMinusMargin(t *testing.T) {
	tests := []struct {
		name     string
		margin   time.Duration // Options.Margin; 0 = default
		lifetime time.Duration // expires_at minus the time of the first read
		reReadAt time.Duration // before expires_at: the first instant that reads again
	}{
		{"default margin on a 24h token", 0, 24 * time.Hour, 5 * time.Minute},
		{"custom margin", time.Hour, 24 * time.Hour, time.Hour},
		{"margin capped at half the lifetime left", 0, 6 * time.Minute, 3 * time.Minute},
		{"custom margin capped", time.Hour, 30 * time.Minute, 15 * time.Minute},
		{"short-lived token kept for the retry interval", 0, 6 * time.Second, time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			clk := newClock(t0)
			exp := t0.Add(tt.lifetime)
			tok1 := e.newToken()
			e.publish(tok1, exp, 1)
			c := tokenclient.New(e.count, e.secret, tokenclient.Options{Margin: tt.margin, Now: clk.Now, Logger: e.log})
			ctx := context.Background()

			got, err := c.Token(ctx)
			if err != nil {
				t.Fatalf("Token: %v", err)
			}
			if got.AccessToken != tok1 || !got.Expiry.Equal(exp) || got.TokenType != "Bearer" {
				t.Fatalf("got token (type %q, expiry %s, same value %v), want Bearer, %s, true",
					got.TokenType, got.Expiry, got.AccessToken == tok1, exp)
			}
			if g, ok := got.Extra("generation").(int64); !ok || g != 1 {
				t.Errorf("Extra(generation) = %v, want 1", got.Extra("generation"))
			}
			if s := got.Extra("scope"); s != "fund.read" {
				t.Errorf("Extra(scope) = %v, want fund.read", s)
			}

			// The refresher republishes; the cache must not notice until its own deadline.
			tok2 := e.newToken()
			e.publish(tok2, exp.Add(12*time.Hour), 2)
			clk.Set(exp.Add(-tt.reReadAt - time.Second))
			if got, _ := c.Token(ctx); got.AccessToken != tok1 {
				t.Errorf("1s before expires_at-%s: got the new token, want the cached one", tt.reReadAt)
			}
			if n := e.count.calls(); n != 1 {
				t.Errorf("GetSecretValue calls before the deadline = %d, want 1", n)
			}
			clk.Set(exp.Add(-tt.reReadAt))
			if got, _ := c.Token(ctx); got.AccessToken != tok2 {
				t.Errorf("at expires_at-%s: got the old token, want the republished one", tt.reReadAt)
			}
			if n := e.count.calls(); n != 2 {
				t.Errorf("GetSecretValue calls after the deadline = %d, want 2", n)
			}
		})
	}
}

func TestConcurrentCallersShareOneRead(t *testing.T) {
	const callers = 1000
	e := newEnv(t)
	clk := newClock(t0)
	exp := t0.Add(24 * time.Hour)
	e.publish(e.newToken(), exp, 1)
	c := tokenclient.New(e.count, e.secret, tokenclient.Options{Now: clk.Now, Logger: e.log})
	ctx := context.Background()
	if _, err := c.Token(ctx); err != nil {
		t.Fatalf("warm-up Token: %v", err)
	}

	// The cache has just expired and the refresher has published a new token.
	tok2 := e.newToken()
	e.publish(tok2, exp.Add(12*time.Hour), 2)
	clk.Set(exp.Add(-5 * time.Minute))
	e.count.n.Store(0)
	gate := make(chan struct{})
	e.count.gate = gate // the read waits until every caller has started

	var started atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	wrong := atomic.Int64{}
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if started.Add(1) == callers {
				close(gate)
			}
			got, err := c.Token(ctx)
			if err != nil {
				errs <- err
				return
			}
			if got.AccessToken != tok2 {
				wrong.Add(1)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("Token: %v", err)
	}
	if n := wrong.Load(); n != 0 {
		t.Errorf("%d callers got a token other than the republished one, want 0", n)
	}
	if n := e.count.calls(); n != 1 {
		t.Errorf("GetSecretValue calls for %d concurrent callers = %d, want 1", callers, n)
	}
}

// ttlCache is the naive consumer this package replaces: it re-reads every ttl.
type ttlCache struct {
	sm     *countingSM
	secret string
	ttl    time.Duration
	now    func() time.Time
	tok    string
	until  time.Time
}

func (c *ttlCache) Token(ctx context.Context) (string, error) {
	if now := c.now(); now.Before(c.until) {
		return c.tok, nil
	}
	out, err := c.sm.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: &c.secret})
	if err != nil {
		return "", err
	}
	var d accessDoc
	if err := json.Unmarshal([]byte(*out.SecretString), &d); err != nil {
		return "", err
	}
	c.tok, c.until = d.AccessToken, c.now().Add(c.ttl)
	return c.tok, nil
}

// A Sahamati token lives 24 h and the refresher republishes every 12 h. A consumer
// asking every minute for a day reads the secret at most 3 times; a 1 h TTL cache reads
// it 24 times.
func TestSahamatiDay(t *testing.T) {
	const (
		lifetime = 24 * time.Hour
		schedule = 12 * time.Hour
		day      = 24 * time.Hour
	)
	e := newEnv(t)
	clk := newClock(t0)
	ctx := context.Background()

	gen := int64(0)
	refresh := func() {
		gen++
		e.publish(e.newToken(), clk.Now().Add(lifetime), gen)
	}
	refresh()
	c := tokenclient.New(e.count, e.secret, tokenclient.Options{Now: clk.Now, Logger: e.log})
	ttlCount := &countingSM{sm: e.sm}
	naive := &ttlCache{sm: ttlCount, secret: e.secret, ttl: time.Hour, now: clk.Now}

	calls := 0
	for m := time.Duration(0); m < day; m += time.Minute {
		clk.Set(t0.Add(m))
		if m > 0 && m%schedule == 0 {
			refresh()
		}
		got, err := c.Token(ctx)
		if err != nil {
			t.Fatalf("at +%s: Token: %v", m, err)
		}
		if !got.Expiry.After(clk.Now()) {
			t.Fatalf("at +%s: got a token that expired at %s", m, got.Expiry)
		}
		if _, err := naive.Token(ctx); err != nil {
			t.Fatalf("at +%s: TTL cache: %v", m, err)
		}
		calls++
	}
	if calls != 24*60 {
		t.Fatalf("consumer calls = %d, want %d", calls, 24*60)
	}
	if n := e.count.calls(); n > 3 || n < 1 {
		t.Errorf("GetSecretValue calls over a day = %d, want 1..3", n)
	}
	if n := ttlCount.calls(); n != 24 {
		t.Errorf("GetSecretValue calls of a 1 h TTL cache over a day = %d, want 24", n)
	}
	t.Logf("one day, one call a minute: tokenclient %d GetSecretValue calls, 1 h TTL cache %d",
		e.count.calls(), ttlCount.calls())
}

func TestNeedsReauth(t *testing.T) {
	e := newEnv(t)
	clk := newClock(t0)
	const reason = "refresh token rejected by the provider (invalid_grant)"
	e.publishDoc(accessDoc{
		AccessToken: e.newToken(), TokenType: "Bearer", ExpiresAt: t0.Add(time.Hour).Format(time.RFC3339),
		Generation: 4, Status: "needs_reauth", Reason: reason,
	})
	c := tokenclient.New(e.count, e.secret, tokenclient.Options{Now: clk.Now, Logger: e.log})
	ctx := context.Background()

	got, err := c.Token(ctx)
	if got != nil || err == nil {
		t.Fatalf("Token = (%v, %v), want (nil, needs reauth)", got != nil, err)
	}
	e.noLeak(err)
	if !errors.Is(err, tokenclient.ErrNeedsReauth) {
		t.Errorf("errors.Is(err, ErrNeedsReauth) = false for %v", err)
	}
	var nr *tokenclient.NeedsReauthError
	if !errors.As(err, &nr) {
		t.Fatalf("errors.As(*NeedsReauthError) = false for %v", err)
	}
	if nr.Secret != e.secret || nr.Reason != reason {
		t.Errorf("NeedsReauthError = {%q, %q}, want {%q, %q}", nr.Secret, nr.Reason, e.secret, reason)
	}

	// Asked again at once: the answer is remembered, Secrets Manager is not hammered.
	if _, err := c.Token(ctx); !errors.Is(err, tokenclient.ErrNeedsReauth) {
		t.Errorf("second Token err = %v, want ErrNeedsReauth", err)
	}
	if n := e.count.calls(); n != 1 {
		t.Errorf("GetSecretValue calls = %d, want 1", n)
	}

	// An operator re-seeds; the refresher publishes an active token.
	tok := e.newToken()
	e.publish(tok, t0.Add(24*time.Hour), 5)
	clk.Advance(tokenclient.DefaultRetryInterval)
	got, err = c.Token(ctx)
	if err != nil || got.AccessToken != tok {
		t.Errorf("after re-seed: Token err = %v (new token: %v), want the new token", err, got != nil && got.AccessToken == tok)
	}
}

func TestReadErrorServesValidCachedToken(t *testing.T) {
	e := newEnv(t)
	clk := newClock(t0)
	exp := t0.Add(time.Hour)
	tok := e.newToken()
	e.publish(tok, exp, 3)
	c := tokenclient.New(e.count, e.secret, tokenclient.Options{Now: clk.Now, Logger: e.log})
	ctx := context.Background()
	if _, err := c.Token(ctx); err != nil {
		t.Fatalf("Token: %v", err)
	}

	// Secrets Manager now fails (the secret is gone) while the cached token is due
	// for a re-read but still valid.
	e.deleteSecret()
	clk.Set(exp.Add(-2 * time.Minute))
	got, err := c.Token(ctx)
	if err != nil || got.AccessToken != tok {
		t.Fatalf("Token after read error = (same token %v, %v), want the cached token, nil", got != nil && got.AccessToken == tok, err)
	}
	if n := e.count.calls(); n != 2 {
		t.Errorf("GetSecretValue calls = %d, want 2 (the failed read happened)", n)
	}
	// The failed read is not repeated on every call.
	clk.Advance(tokenclient.DefaultRetryInterval - time.Second)
	if got, err := c.Token(ctx); err != nil || got.AccessToken != tok {
		t.Errorf("Token within the retry interval = %v, want the cached token", err)
	}
	if n := e.count.calls(); n != 2 {
		t.Errorf("GetSecretValue calls within the retry interval = %d, want 2", n)
	}

	// Once the cached token has expired there is nothing valid left: the read error.
	clk.Set(exp)
	got, err = c.Token(ctx)
	if got != nil || err == nil {
		t.Fatalf("Token after expiry with read error = (%v, %v), want an error", got != nil, err)
	}
	e.noLeak(err)
	var nf *smtypes.ResourceNotFoundException
	if !errors.As(err, &nf) {
		t.Errorf("err = %v, want it to wrap ResourceNotFoundException", err)
	}
}

func TestExpiredWithoutInvoker(t *testing.T) {
	e := newEnv(t)
	clk := newClock(t0)
	e.publish(e.newToken(), t0.Add(-time.Minute), 9)
	c := tokenclient.New(e.count, e.secret, tokenclient.Options{Now: clk.Now, Logger: e.log})
	got, err := c.Token(context.Background())
	if got != nil || !errors.Is(err, tokenclient.ErrExpired) {
		t.Fatalf("Token = (%v, %v), want (nil, ErrExpired)", got != nil, err)
	}
	e.noLeak(err)
}

func TestMalformedSecret(t *testing.T) {
	tests := []struct {
		name string
		doc  func(tok string) string
	}{
		{"not JSON", func(tok string) string { return `{"access_token":"` + tok + `" x}` }},
		{"bad expires_at", func(tok string) string { return `{"access_token":"` + tok + `","expires_at":"tomorrow"}` }},
		{"missing access_token", func(string) string { return `{"expires_at":"2026-11-22T12:00:00Z","status":"active"}` }},
		{"unknown status", func(tok string) string {
			return `{"access_token":"` + tok + `","expires_at":"2026-11-22T12:00:00Z","status":"paused"}`
		}},
		{"wrong type", func(string) string { return `{"access_token":42,"expires_at":"2026-11-22T12:00:00Z"}` }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			e.publishRaw(tt.doc(e.newToken()))
			c := tokenclient.New(e.count, e.secret, tokenclient.Options{Now: newClock(t0).Now, Logger: e.log})
			_, err := c.Token(context.Background())
			if !errors.Is(err, tokenclient.ErrMalformed) {
				t.Errorf("err = %v, want ErrMalformed", err)
			}
			e.noLeak(err)
		})
	}
}

func TestUnknownFieldsIgnored(t *testing.T) {
	e := newEnv(t)
	tok := e.newToken()
	e.publishRaw(`{"access_token":"` + tok + `","token_type":"bearer","expires_at":"2026-11-22T12:00:00Z",` +
		`"scope":"a b","generation":7,"status":"active","published_by":"v2","extra":{"x":[1,2]}}`)
	c := tokenclient.New(e.count, e.secret, tokenclient.Options{Now: newClock(t0).Now, Logger: e.log})
	got, err := c.Token(context.Background())
	if err != nil {
		t.Fatalf("Token: %v", err)
	}
	if got.AccessToken != tok || got.Type() != "Bearer" {
		t.Errorf("got (same token %v, type %q), want (true, Bearer)", got.AccessToken == tok, got.Type())
	}
}

func TestInvalidate(t *testing.T) {
	e := newEnv(t)
	clk := newClock(t0)
	e.publish(e.newToken(), t0.Add(24*time.Hour), 1)
	c := tokenclient.New(e.count, e.secret, tokenclient.Options{Now: clk.Now, Logger: e.log})
	ctx := context.Background()
	if _, err := c.Token(ctx); err != nil {
		t.Fatal(err)
	}
	tok2 := e.newToken()
	e.publish(tok2, t0.Add(25*time.Hour), 2)
	c.Invalidate()
	got, err := c.Token(ctx)
	if err != nil || got.AccessToken != tok2 {
		t.Errorf("Token after Invalidate: err %v, new token %v; want the new token", err, got != nil && got.AccessToken == tok2)
	}
	if n := e.count.calls(); n != 2 {
		t.Errorf("GetSecretValue calls = %d, want 2", n)
	}
}

func TestReturnedTokenIsACopy(t *testing.T) {
	e := newEnv(t)
	tok := e.newToken()
	e.publish(tok, t0.Add(time.Hour), 1)
	c := tokenclient.New(e.count, e.secret, tokenclient.Options{Now: newClock(t0).Now, Logger: e.log})
	a, err := c.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	a.AccessToken = "mutated"
	b, _ := c.Token(context.Background())
	if b.AccessToken != tok {
		t.Errorf("a caller's change to its token reached the cache")
	}
}

func TestCallerContextCancelled(t *testing.T) {
	e := newEnv(t)
	e.publish(e.newToken(), t0.Add(time.Hour), 1)
	gate, entered := make(chan struct{}), make(chan struct{}, 1)
	e.count.gate, e.count.entered = gate, entered
	c := tokenclient.New(e.count, e.secret, tokenclient.Options{Now: newClock(t0).Now, Logger: e.log})

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := c.Token(ctx)
		done <- err
	}()
	// Wait for the read to be in flight, then give up on it.
	select {
	case <-entered:
	case err := <-done:
		t.Fatalf("Token returned before its read started: %v", err)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
	// The shared read was not cancelled with the caller: it completes for the next one.
	close(gate)
	if _, err := c.Token(context.Background()); err != nil {
		t.Errorf("next Token: %v", err)
	}
	if n := e.count.calls(); n != 1 {
		t.Errorf("GetSecretValue calls = %d, want 1 (the next caller gets the read the first one started)", n)
	}
}

// TestNoStatedExpiry: expires_at is an RFC 3339 time or absent (docs/design.md §6). A token
// without one is used, re-read every few minutes and after a 401; a needs_reauth document
// without one is reported as such.
func TestNoStatedExpiry(t *testing.T) {
	for _, tt := range []struct{ name, field string }{
		{"absent", ""},
		{"empty string from older refreshers", `"expires_at":"",`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			clk := newClock(t0)
			tok := e.newToken()
			e.publishRaw(`{"access_token":"` + tok + `",` + tt.field + `"generation":4,"status":"active"}`)
			c := tokenclient.New(e.count, e.secret, tokenclient.Options{Now: clk.Now, Logger: e.log})
			ctx := context.Background()
			got, err := c.Token(ctx)
			if err != nil || got.AccessToken != tok || !got.Expiry.IsZero() || got.Type() != "Bearer" {
				t.Fatalf("Token: err %v; want the token, Bearer, with no expiry", err)
			}
			clk.Advance(4 * time.Minute)
			if _, err := c.Token(ctx); err != nil {
				t.Fatal(err)
			}
			if n := e.count.calls(); n != 1 {
				t.Errorf("GetSecretValue calls within 5 min: got %d, want 1", n)
			}
			clk.Advance(time.Minute)
			if _, err := c.Token(ctx); err != nil {
				t.Fatal(err)
			}
			if n := e.count.calls(); n != 2 {
				t.Errorf("GetSecretValue calls after 5 min: got %d, want 2", n)
			}

			e.publishRaw(`{"access_token":"",` + tt.field + `"generation":5,"status":"needs_reauth","reason":"provider rejected the refresh: 400 invalid_grant"}`)
			c.Invalidate()
			_, err = c.Token(ctx)
			var nr *tokenclient.NeedsReauthError
			if !errors.As(err, &nr) || !errors.Is(err, tokenclient.ErrNeedsReauth) || !strings.Contains(nr.Reason, "invalid_grant") {
				t.Errorf("needs_reauth without expires_at: got %v, want a NeedsReauthError with the reason", err)
			}
		})
	}
}
