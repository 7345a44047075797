package tokenclient_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/seed-502fa48b/token-refresher/pkg/tokenclient"
)

// api is a provider API that accepts exactly one access token at a time.
type api struct {
	mu     sync.Mutex
	accept string
	seen   []string // Authorization headers, in order
	bodies []string
}

func (a *api) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	a.mu.Lock()
	defer a.mu.Unlock()
	h := r.Header.Get("Authorization")
	a.seen = append(a.seen, h)
	a.bodies = append(a.bodies, string(body))
	if h != "Bearer "+a.accept {
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		http.Error(w, `{"error":"invalid_token"}`, http.StatusUnauthorized)
		return
	}
	_, _ = io.WriteString(w, "ok")
}

func (a *api) setAccept(tok string) {
	a.mu.Lock()
	a.accept = tok
	a.mu.Unlock()
}

func (a *api) log() (seen, bodies []string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.seen...), append([]string(nil), a.bodies...)
}

func TestTransport401(t *testing.T) {
	const payload = `{"query":"balance"}`
	tests := []struct {
		name        string
		rotate      bool // the refresher has published a new token the API now wants
		newRequest  func(url string) (*http.Request, error)
		wantStatus  int
		wantHits    int   // requests the API saw
		wantReads   int64 // GetSecretValue calls in all, including the warm-up read
		wantNewAuth bool  // the last request carried the new token
		wantBody    string
	}{
		{
			name: "GET retried with the republished token", rotate: true,
			newRequest: func(u string) (*http.Request, error) { return http.NewRequest(http.MethodGet, u, nil) },
			wantStatus: 200, wantHits: 2, wantReads: 2, wantNewAuth: true,
		},
		{
			name: "POST with a replayable body retried", rotate: true,
			newRequest: func(u string) (*http.Request, error) {
				return http.NewRequest(http.MethodPost, u, bytes.NewReader([]byte(payload)))
			},
			wantStatus: 200, wantHits: 2, wantReads: 2, wantNewAuth: true, wantBody: payload,
		},
		{
			name: "POST with a body that cannot be replayed is not retried", rotate: true,
			newRequest: func(u string) (*http.Request, error) {
				// io.MultiReader hides the type http.NewRequest knows how to rewind.
				return http.NewRequest(http.MethodPost, u, io.MultiReader(strings.NewReader(payload)))
			},
			wantStatus: 401, wantHits: 1, wantReads: 1, wantBody: payload,
		},
		{
			name: "re-read finds the same token: the 401 is returned without a retry", rotate: false,
			newRequest: func(u string) (*http.Request, error) { return http.NewRequest(http.MethodGet, u, nil) },
			wantStatus: 401, wantHits: 1, wantReads: 2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			clk := newClock(t0)
			oldTok, newTok := e.newToken(), e.newToken()
			e.publish(oldTok, t0.Add(24*time.Hour), 1)
			a := &api{accept: oldTok}
			srv := httptest.NewServer(a)
			defer srv.Close()
			c := tokenclient.New(e.count, e.secret, tokenclient.Options{Now: clk.Now, Logger: e.log})
			hc := &http.Client{Transport: c.Transport(srv.Client().Transport)}
			if _, err := c.Token(context.Background()); err != nil {
				t.Fatal(err)
			}

			// The provider revokes the cached token.
			a.setAccept(newTok)
			if tt.rotate {
				e.publish(newTok, t0.Add(36*time.Hour), 2)
			}
			req, err := tt.newRequest(srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatalf("Do: %v", err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()

			if resp.StatusCode != tt.wantStatus {
				t.Errorf("status = %d, want %d", resp.StatusCode, tt.wantStatus)
			}
			seen, bodies := a.log()
			if len(seen) != tt.wantHits {
				t.Fatalf("API saw %d requests, want %d", len(seen), tt.wantHits)
			}
			if seen[0] != "Bearer "+oldTok {
				t.Errorf("first request did not carry the cached token")
			}
			if got := seen[len(seen)-1] == "Bearer "+newTok; got != tt.wantNewAuth {
				t.Errorf("last request carried the new token = %v, want %v", got, tt.wantNewAuth)
			}
			for i, b := range bodies {
				if b != tt.wantBody {
					t.Errorf("request %d body = %q, want %q", i, b, tt.wantBody)
				}
			}
			if n := e.count.calls(); n != tt.wantReads {
				t.Errorf("GetSecretValue calls = %d, want %d", n, tt.wantReads)
			}
		})
	}
}

// A token the API keeps rejecting costs one re-read per retry interval, not one per request.
func TestTransport401NotHammering(t *testing.T) {
	e := newEnv(t)
	clk := newClock(t0)
	e.publish(e.newToken(), t0.Add(24*time.Hour), 1)
	a := &api{accept: "something else"}
	srv := httptest.NewServer(a)
	defer srv.Close()
	c := tokenclient.New(e.count, e.secret, tokenclient.Options{Now: clk.Now, Logger: e.log})
	hc := &http.Client{Transport: c.Transport(srv.Client().Transport)}
	get := func() int {
		t.Helper()
		resp, err := hc.Get(srv.URL)
		if err != nil {
			t.Fatalf("Get: %v", err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for i := range 5 {
		if s := get(); s != 401 {
			t.Fatalf("request %d: status %d, want 401", i, s)
		}
	}
	if n := e.count.calls(); n != 2 {
		t.Errorf("GetSecretValue calls after 5 rejected requests = %d, want 2 (first read + one re-read)", n)
	}
	clk.Advance(tokenclient.DefaultRetryInterval)
	get()
	if n := e.count.calls(); n != 3 {
		t.Errorf("GetSecretValue calls after the retry interval = %d, want 3", n)
	}
}

func TestTransportTokenErrorClosesBody(t *testing.T) {
	e := newEnv(t)
	e.publish(e.newToken(), t0.Add(-time.Hour), 1) // expired, no Invoker
	c := tokenclient.New(e.count, e.secret, tokenclient.Options{Now: newClock(t0).Now, Logger: e.log})
	body := &closeRecorder{Reader: strings.NewReader("x")}
	req, _ := http.NewRequest(http.MethodPost, "http://127.0.0.1:1/", body)
	resp, err := c.Transport(nil).RoundTrip(req)
	if resp != nil || err == nil {
		t.Fatalf("RoundTrip = (%v, %v), want (nil, error)", resp, err)
	}
	e.noLeak(err)
	if !body.closed {
		t.Error("request body not closed on error")
	}
}

type closeRecorder struct {
	io.Reader
	closed bool
}

func (c *closeRecorder) Close() error { c.closed = true; return nil }

func TestOAuth2NewClient(t *testing.T) {
	e := newEnv(t)
	tok := e.newToken()
	// Real time: oauth2's own reuse layer checks expiry against the wall clock.
	e.publish(tok, time.Now().Add(time.Hour), 1)
	a := &api{accept: tok}
	srv := httptest.NewServer(a)
	defer srv.Close()
	c := tokenclient.New(e.count, e.secret, tokenclient.Options{Logger: e.log})

	ctx := context.WithValue(context.Background(), oauth2.HTTPClient, srv.Client())
	hc := oauth2.NewClient(ctx, c.TokenSource(ctx))
	for i := range 3 {
		resp, err := hc.Get(srv.URL)
		if err != nil {
			t.Fatalf("Get %d: %v", i, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "ok" {
			t.Errorf("Get %d: status %d body %q, want 200 ok", i, resp.StatusCode, b)
		}
	}
	if n := e.count.calls(); n != 1 {
		t.Errorf("GetSecretValue calls for 3 requests = %d, want 1", n)
	}
}
