package tokenclient

import (
	"context"
	"io"
	"net/http"

	"golang.org/x/oauth2"
)

// Transport returns an http.RoundTripper that sets "Authorization: <type> <token>" on
// every request. On a 401 it re-reads the secret once, bypassing the cache (shared
// with concurrent 401s), and, when the token changed and the request body can be
// replayed (no body, or GetBody set — http.NewRequest sets it for in-memory bodies),
// sends the request once more. Otherwise the 401 is returned as it came. base nil
// means http.DefaultTransport.
func (c *Client) Transport(base http.RoundTripper) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return &transport{c: c, base: base}
}

type transport struct {
	c    *Client
	base http.RoundTripper
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	tok, err := t.c.Token(ctx)
	if err != nil {
		if req.Body != nil {
			_ = req.Body.Close() // RoundTrip must close the body, even on error
		}
		return nil, err
	}
	resp, err := t.base.RoundTrip(authorized(req, tok))
	if err != nil || resp.StatusCode != http.StatusUnauthorized || !replayable(req) {
		return resp, err
	}
	e, err := t.c.share(ctx, "reread", func(ctx context.Context) (*entry, error) {
		return t.c.reread(ctx, tok.AccessToken)
	})
	if err != nil {
		t.c.log.WarnContext(ctx, "tokenclient: re-read after 401 failed",
			"secret", t.c.secretName, "error", err)
		return resp, nil
	}
	if e.tok.AccessToken == tok.AccessToken {
		return resp, nil // the published token is the one just rejected: a retry can't help
	}
	retry := authorized(req, e.token())
	if req.GetBody != nil && req.Body != nil && req.Body != http.NoBody {
		body, err := req.GetBody()
		if err != nil {
			return resp, nil
		}
		retry.Body = body
	}
	// Let the connection be reused; a 401 body is small or not worth reading.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	_ = resp.Body.Close()
	return t.base.RoundTrip(retry)
}

// authorized returns a copy of req with the token set: a RoundTripper must not modify
// the request it is given.
func authorized(req *http.Request, tok *oauth2.Token) *http.Request {
	r := req.Clone(req.Context())
	tok.SetAuthHeader(r)
	return r
}

func replayable(req *http.Request) bool {
	return req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
}
