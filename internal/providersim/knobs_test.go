package providersim

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
)

// knobs is the common surface every simulator offers.
type knobs interface {
	URL() string
	Requests() int
	Count(int) int
	FailNext(int, int)
}

type simCase struct {
	sim knobs
	ok  func() *http.Request // a request that succeeds against sim
}

// simulators returns one of each simulator.
func simulators(t *testing.T) map[string]simCase {
	t.Helper()
	clock := NewClock(t0)
	s := newTestSahamati(t, clock, nil)
	v := newTestVault(t, clock)
	p := newTestRotating(t, clock, nil)
	c := newTestClientCredentials(t, clock)
	v.Seed()
	pseed := p.Seed(acmeScope)
	return map[string]simCase{
		"sahamati": {s, func() *http.Request {
			return newPost(t, s.URL(), formType, sahamatiCreds("FIU-1", "s3cret").Encode())
		}},
		"vault": {v, func() *http.Request {
			return newPost(t, v.URL(), "application/json", `{"grant_type":"refresh_token","refresh_token":"`+v.Live()+`"}`)
		}},
		"rotating": {p, func() *http.Request { return refreshReq(t, p.URL(), p.Live(pseed), "") }},
		"client_credentials": {c, func() *http.Request {
			req := newPost(t, c.URL(), formType, "grant_type=client_credentials")
			req.SetBasicAuth(url.QueryEscape(testClientID), url.QueryEscape(testClientSecret))
			return req
		}},
	}
}

func TestWrongPathAndMethod(t *testing.T) {
	for name, e := range simulators(t) {
		t.Run(name, func(t *testing.T) {
			base := strings.TrimSuffix(e.sim.URL(), mustPath(t, e.sim.URL()))
			r := send(t, newPost(t, base+"/not/the/token/path", formType, "x=y"))
			wantStatus(t, r, http.StatusNotFound)
			if r.body == nil {
				t.Errorf("404 body: got %q, want the simulator's JSON error shape", r.raw)
			}
			req, _ := http.NewRequest(http.MethodGet, e.sim.URL(), nil)
			r = send(t, req)
			wantStatus(t, r, http.StatusMethodNotAllowed)
			if r.header.Get("Allow") != http.MethodPost {
				t.Errorf("Allow: got %q, want POST", r.header.Get("Allow"))
			}
			wantStatus(t, send(t, e.ok()), http.StatusOK)
			if e.sim.Requests() != 3 || e.sim.Count(404) != 1 || e.sim.Count(405) != 1 || e.sim.Count(200) != 1 {
				t.Errorf("audit: got %d requests, %d×404, %d×405, %d×200; want 3, 1, 1, 1",
					e.sim.Requests(), e.sim.Count(404), e.sim.Count(405), e.sim.Count(200))
			}
		})
	}
}

func mustPath(t *testing.T, u string) string {
	t.Helper()
	parsed, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	return parsed.Path
}

func TestFailNextEverySimulator(t *testing.T) {
	for name, e := range simulators(t) {
		t.Run(name, func(t *testing.T) {
			e.sim.FailNext(2, http.StatusServiceUnavailable)
			e.sim.FailNext(1, http.StatusBadGateway)
			for range 2 {
				r := send(t, e.ok())
				wantStatus(t, r, http.StatusServiceUnavailable)
				if r.body == nil || !strings.HasPrefix(r.header.Get("Content-Type"), "application/json") {
					t.Errorf("503 body: got %q (%s), want JSON", r.raw, r.header.Get("Content-Type"))
				}
			}
			r := send(t, e.ok())
			wantStatus(t, r, http.StatusBadGateway)
			wantContentType(t, r, "text/html")
			// The same credentials still work: nothing was consumed.
			wantStatus(t, send(t, e.ok()), http.StatusOK)
		})
	}
}

func TestFailNextChangesNoState(t *testing.T) {
	clock := NewClock(t0)
	p := newTestRotating(t, clock, nil)
	seed := p.Seed(acmeScope)
	p.FailNext(2, http.StatusInternalServerError)
	for range 2 {
		r := refreshRotating(t, p, seed)
		wantOAuthError(t, r, http.StatusInternalServerError, "server_error")
	}
	if p.Live(seed) != seed {
		t.Fatalf("Live after injected failures: the seed must still be live")
	}
	wantOAuthSuccess(t, refreshRotating(t, p, seed), 900)
	if p.Requests() != 3 || p.Count(500) != 2 || p.Count(200) != 1 {
		t.Errorf("audit: got %d requests, %d×500, %d×200", p.Requests(), p.Count(500), p.Count(200))
	}

	s := newTestSahamati(t, clock, nil)
	s.FailNext(1, http.StatusTooManyRequests)
	r := postForm(t, s.URL(), sahamatiCreds("FIU-1", "s3cret"))
	wantStatus(t, r, http.StatusTooManyRequests)
	if r.str("errorMsg") != "Limit Exceeded" {
		t.Errorf("injected 429: got %s", r.raw)
	}
	if s.UsedToday() != 0 {
		t.Errorf("UsedToday after an injected failure: got %d, want 0", s.UsedToday())
	}
}

func TestRespondNext(t *testing.T) {
	p := newTestRotating(t, NewClock(t0), nil)
	seed := p.Seed(acmeScope)
	p.RespondNext(http.StatusOK, http.Header{"Content-Type": {"text/plain"}}, []byte("not json"))
	r := refreshRotating(t, p, seed)
	wantStatus(t, r, http.StatusOK)
	if string(r.raw) != "not json" || r.header.Get("Content-Type") != "text/plain" {
		t.Errorf("got %q (%s), want the injected body", r.raw, r.header.Get("Content-Type"))
	}
	if p.Live(seed) != seed {
		t.Errorf("Live: RespondNext must not consume the token")
	}
}

func TestDropNextResponseCommitsWork(t *testing.T) {
	for _, tc := range []struct {
		name  string
		grace time.Duration
	}{{"strict", 0}, {"grace", time.Minute}} {
		t.Run(tc.name, func(t *testing.T) {
			p := newTestRotating(t, NewClock(t0), func(o *RotatingOptions) { o.ReuseGrace = tc.grace })
			seed := p.Seed(acmeScope)
			p.DropNextResponse()
			_, err := try(refreshReq(t, p.URL(), seed, ""))
			if err == nil {
				t.Fatalf("dropped response: got no error, want a connection error")
			}
			live := p.Live(seed)
			if live == seed || live == "" {
				t.Fatalf("Live after a dropped response: the rotation must be committed")
			}
			if !slices.Contains(p.Issued(), live) {
				t.Errorf("Issued: missing the successor of the dropped response")
			}
			if p.Count(0) != 1 || p.Requests() != 1 {
				t.Errorf("audit: got Count(0)=%d Requests=%d, want 1, 1", p.Count(0), p.Requests())
			}
			// The retry with the same token: lost without a grace, recovered inside one.
			r := refreshRotating(t, p, seed)
			if tc.grace == 0 {
				wantOAuthError(t, r, http.StatusBadRequest, "invalid_grant")
				return
			}
			wantOAuthSuccess(t, r, 900)
			if r.str("refresh_token") != live {
				t.Errorf("retry in grace: got another refresh token, want the committed successor")
			}
		})
	}

	t.Run("sahamati quota counted", func(t *testing.T) {
		s := newTestSahamati(t, NewClock(t0), nil)
		s.DropNextResponse()
		if _, err := try(newPost(t, s.URL(), formType, sahamatiCreds("FIU-1", "s3cret").Encode())); err == nil {
			t.Fatalf("dropped response: got no error")
		}
		if s.UsedToday() != 1 || len(s.Issued()) != 1 {
			t.Errorf("after drop: UsedToday %d, issued %d; want 1, 1", s.UsedToday(), len(s.Issued()))
		}
		wantStatus(t, postForm(t, s.URL(), sahamatiCreds("FIU-1", "s3cret")), http.StatusOK)
	})
}

func TestLatencyCancelledByClient(t *testing.T) {
	p := NewRotating(RotatingOptions{ClientID: testClientID, ClientSecret: testClientSecret, Now: NewClock(t0).Now})
	t.Cleanup(p.Close)
	seed := p.Seed(acmeScope)
	p.SetLatency(time.Hour)
	arrived := make(chan struct{}, 1)
	p.OnRequest(func() { arrived <- struct{}{} })

	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-arrived
		cancel()
	}()
	_, err := try(refreshReq(t, p.URL(), seed, "").WithContext(ctx))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error: got %v, want context.Canceled", err)
	}
	p.Close() // waits for the handler, which must notice the cancel, not sleep an hour
	if p.Live(seed) != seed {
		t.Errorf("Live: a request abandoned during latency must change nothing")
	}
	if p.Count(0) != 1 || p.Requests() != 1 {
		t.Errorf("audit: got Count(0)=%d Requests=%d, want 1, 1", p.Count(0), p.Requests())
	}
}

func TestLatencyCloseDoesNotHang(t *testing.T) {
	s := NewSahamati(SahamatiOptions{EntityID: "FIU-1", Secret: "s3cret", Now: NewClock(t0).Now})
	t.Cleanup(s.Close)
	s.SetLatency(time.Hour)
	arrived := make(chan struct{}, 1)
	s.OnRequest(func() { arrived <- struct{}{} })
	done := make(chan error, 1)
	go func() {
		_, err := try(newPost(t, s.URL(), formType, sahamatiCreds("FIU-1", "s3cret").Encode()))
		done <- err
	}()
	<-arrived
	s.Close()
	s.Close() // twice is fine
	if err := <-done; err == nil {
		t.Errorf("request pending at Close: got a response, want a connection error")
	}
	if s.UsedToday() != 0 {
		t.Errorf("UsedToday: got %d, want 0 (abandoned before work)", s.UsedToday())
	}
}

func TestLatencyDelaysResponse(t *testing.T) {
	v := newTestVault(t, NewClock(t0))
	rt := v.Seed()
	const d = 50 * time.Millisecond
	v.SetLatency(d)
	start := time.Now()
	wantStatus(t, refreshVault(t, v, rt), http.StatusOK)
	// A lower bound only: it cannot flake on a slow machine.
	if elapsed := time.Since(start); elapsed < d {
		t.Errorf("elapsed: got %v, want at least %v", elapsed, d)
	}
	v.SetLatency(0)
	wantStatus(t, refreshVault(t, v, v.Live()), http.StatusOK)
}

func TestOnRequestRunsBeforeWork(t *testing.T) {
	p := newTestRotating(t, NewClock(t0), nil)
	seed := p.Seed(acmeScope)
	var liveAtArrival string
	p.OnRequest(func() { liveAtArrival = p.Live(seed) })
	r := refreshRotating(t, p, seed)
	wantOAuthSuccess(t, r, 900)
	if liveAtArrival != seed {
		t.Errorf("hook saw Live %q, want the seed (before rotation)", liveAtArrival)
	}
	p.OnRequest(nil)
	wantOAuthSuccess(t, refreshRotating(t, p, r.str("refresh_token")), 900)
}

func TestIssuedCoversEveryTokenWithDistinctPrefixes(t *testing.T) {
	clock := NewClock(t0)
	p := newTestRotating(t, clock, nil)
	seed := p.Seed(acmeScope)
	r := refreshRotating(t, p, seed)
	wantOAuthSuccess(t, r, 900)
	want := []string{seed, r.str("refresh_token"), r.str("access_token")}
	got := p.Issued()
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("Issued: got %d tokens, want seed, successor and access token", len(got))
	}
	for _, tok := range got {
		if len(tok) < 30 || strings.ContainsAny(tok, "+/= ") {
			t.Errorf("token %q is not a long URL-safe value", tok[:7])
		}
	}
}
