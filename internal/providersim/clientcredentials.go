package providersim

import (
	"net/http"
	"sync"
	"time"
)

// ClientCredentialsOptions configures NewClientCredentials.
type ClientCredentialsOptions struct {
	ClientID     string
	ClientSecret string
	// Scope is what the client may ask for; a request without scope gets all of it.
	Scope string
	TTL   time.Duration // access token lifetime; default 1h
	Now   func() time.Time
}

// ClientCredentials simulates an RFC 6749 §4.4 client_credentials token
// endpoint: a confidential client authenticates (basic or body) and gets an
// access token and no refresh token.
type ClientCredentials struct {
	server
	oauthClient

	mu     sync.Mutex
	scope  string
	ttl    time.Duration
	access map[string]time.Time
}

// NewClientCredentials starts a client_credentials provider; Close it when done.
func NewClientCredentials(o ClientCredentialsOptions) *ClientCredentials {
	c := &ClientCredentials{
		oauthClient: oauthClient{id: o.ClientID, secret: o.ClientSecret},
		scope:       o.Scope,
		ttl:         o.TTL,
		access:      make(map[string]time.Time),
	}
	if c.ttl <= 0 {
		c.ttl = time.Hour
	}
	c.start(OAuthPath, o.Now, c.handle, oauthErrorFor)
	return c
}

// Valid reports whether accessToken was issued here and is unexpired at Now.
func (c *ClientCredentials) Valid(accessToken string) bool {
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	exp, ok := c.access[accessToken]
	return ok && now.Before(exp)
}

func (c *ClientCredentials) handle(r *http.Request) response {
	form, oerr := c.parseTokenRequest(r)
	if oerr != nil {
		return oerr.response()
	}
	switch gt := form.Get("grant_type"); gt {
	case "client_credentials":
	case "":
		return (&oauthError{status: http.StatusBadRequest, code: "invalid_request", description: "Missing grant_type"}).response()
	default:
		return (&oauthError{status: http.StatusBadRequest, code: "unsupported_grant_type", description: "Unsupported grant_type: " + gt}).response()
	}
	scope, oerr := grantScope(form.Get("scope"), c.scope)
	if oerr != nil {
		return oerr.response()
	}
	now := c.now()
	at := c.newToken("cc_at_")
	c.mu.Lock()
	c.access[at] = now.Add(c.ttl)
	c.mu.Unlock()
	resp := jsonResponse(http.StatusOK, oauthContentType, oauthTokenBody{
		AccessToken: at,
		TokenType:   "Bearer",
		ExpiresIn:   int64(c.ttl / time.Second),
		Scope:       scope,
	})
	noStore(resp.header)
	return resp
}
