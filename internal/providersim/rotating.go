package providersim

import (
	"net/http"
	"sync"
	"time"
)

// DefaultRotatingScope is Seed's scope when none is given: a refresh token
// (offline_access), one access specifier and one business.
const DefaultRotatingScope = "offline_access fund.read target:b/testbusiness"

// RotatingOptions configures NewRotating.
type RotatingOptions struct {
	// ClientID and ClientSecret are the registered client; an empty secret
	// makes it a public client that authenticates with client_id alone.
	ClientID     string
	ClientSecret string
	AccessTTL    time.Duration // default 15m
	RefreshTTL   time.Duration // default 30 days, counted from each refresh token's issue
	// ReuseGrace: presenting the refresh token that was just rotated, within this
	// long of its use, answers again with a new access token and the same
	// successor. 0 is strict single use.
	ReuseGrace time.Duration
	// The provider revokes the chain on reuse by default, unless ForgiveReuse is set.
	// ForgiveReuse turns reuse detection off: a used refresh token presented past
	// the grace is merely rejected and the family lives on. By default (false) it
	// revokes the whole family, as RFC 9700 §4.14.2 and real providers do, so a
	// re-spend cannot go unnoticed; a test that needs the forgiving mode says so.
	ForgiveReuse bool
	Now          func() time.Time
}

// Rotating simulates an OAuth 2.0 provider with single-use, rotating refresh
// tokens (RFC 6749 §6 and the rotating-refresh-token seed): 15 min access
// tokens, 30-day refresh tokens, one token family per business. Its /authorize
// endpoint auto-approves an authorization-code request with PKCE (S256) and
// the token endpoint redeems the code (AuthorizeURL).
type Rotating struct {
	server
	oauthClient

	mu         sync.Mutex
	accessTTL  time.Duration
	refreshTTL time.Duration
	grace      time.Duration
	detect     bool
	refresh    map[string]*rotRefresh
	access     map[string]*rotAccess
	codes      map[string]*rotCode
	families   int
	unknown    []Presentation // presentations of tokens never issued here
	tokens     []string       // every refresh token, in issue order (the audit)
}

type rotFamily struct {
	id        int
	scope     string // originally granted
	live      string
	revoked   bool
	revokedAt time.Time
}

type rotRefresh struct {
	family    *rotFamily
	issuedAt  time.Time
	expires   time.Time
	used      bool
	usedAt    time.Time
	successor string
	presented []Presentation
}

type rotAccess struct {
	family  *rotFamily
	expires time.Time
}

// NewRotating starts a rotating-refresh-token provider; Close it when done.
func NewRotating(o RotatingOptions) *Rotating {
	p := &Rotating{
		oauthClient: oauthClient{id: o.ClientID, secret: o.ClientSecret},
		accessTTL:   o.AccessTTL,
		refreshTTL:  o.RefreshTTL,
		grace:       max(o.ReuseGrace, 0),
		detect:      !o.ForgiveReuse,
		refresh:     make(map[string]*rotRefresh),
		access:      make(map[string]*rotAccess),
		codes:       make(map[string]*rotCode),
	}
	if p.accessTTL <= 0 {
		p.accessTTL = 15 * time.Minute
	}
	if p.refreshTTL <= 0 {
		p.refreshTTL = 30 * 24 * time.Hour
	}
	p.routes = map[string]http.HandlerFunc{AuthorizePath: p.authorize, MetadataPath: p.metadata}
	p.start(OAuthPath, o.Now, p.handle, oauthErrorFor)
	return p
}

// Seed returns an initial refresh token as if the authorisation-code flow had
// just granted scope (DefaultRotatingScope if empty): one new family, i.e. one
// business.
func (p *Rotating) Seed(scope string) string {
	if scope == "" {
		scope = DefaultRotatingScope
	}
	now := p.now()
	rt := p.newToken("rot_rt_")
	p.mu.Lock()
	defer p.mu.Unlock()
	p.families++
	f := &rotFamily{id: p.families, scope: scope, live: rt}
	p.addRefresh(rt, f, now)
	return rt
}

// Live returns the live refresh token of the family that rt (the seed or any
// later token) belongs to; "" if the family was revoked or rt is unknown.
func (p *Rotating) Live(rt string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	t := p.refresh[rt]
	if t == nil || t.family.revoked {
		return ""
	}
	return t.family.live
}

// Valid reports whether accessToken was issued here, is unexpired at Now and
// its family is not revoked.
func (p *Rotating) Valid(accessToken string) bool {
	now := p.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	a := p.access[accessToken]
	return a != nil && !a.family.revoked && now.Before(a.expires)
}

// Families returns how many families Seed and the authorization-code grant started.
func (p *Rotating) Families() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.families
}

type oauthTokenBody struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in"`
	RefreshToken string `json:"refresh_token,omitempty"`
	Scope        string `json:"scope,omitempty"`
}

func invalidGrant(desc string) *oauthError {
	return &oauthError{status: http.StatusBadRequest, code: "invalid_grant", description: desc}
}

func (p *Rotating) handle(r *http.Request) response {
	form, oerr := p.parseTokenRequest(r)
	if oerr != nil {
		return oerr.response()
	}
	switch gt := form.Get("grant_type"); gt {
	case "refresh_token":
	case "authorization_code":
		return p.exchange(form)
	case "":
		return (&oauthError{status: http.StatusBadRequest, code: "invalid_request", description: "Missing grant_type"}).response()
	default:
		return (&oauthError{status: http.StatusBadRequest, code: "unsupported_grant_type", description: "Unsupported grant_type: " + gt}).response()
	}
	presented := form.Get("refresh_token")
	if presented == "" {
		return (&oauthError{status: http.StatusBadRequest, code: "invalid_request", description: "Missing refresh_token"}).response()
	}

	now := p.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	t := p.refresh[presented]
	if t == nil {
		p.unknown = append(p.unknown, Presentation{At: now, Result: PresentUnknown})
		return invalidGrant("The refresh token is invalid").response()
	}
	// Every presentation is counted, whatever the answer, before anything changes.
	pr := Presentation{At: now, Spent: t.used}
	defer func() { t.presented = append(t.presented, pr) }()
	f := t.family
	if t.used {
		pr.InGrace = !f.revoked && p.grace > 0 && t.successor == f.live && !now.After(t.usedAt.Add(p.grace))
	}
	if f.revoked {
		pr.Result = PresentRevoked
		return invalidGrant("The refresh token has been revoked").response()
	}
	if t.used {
		if !pr.InGrace {
			pr.Result = PresentReused
			if p.detect {
				// RFC 9700 §4.14.2: the server cannot tell the legitimate client
				// from an attacker, so the whole family goes.
				f.revoked, f.revokedAt = true, now
				f.live = ""
			}
			return invalidGrant("The refresh token has already been used").response()
		}
		scope, oerr := grantScope(form.Get("scope"), f.scope)
		if oerr != nil {
			pr.Result = PresentRefused
			return oerr.response()
		}
		pr.Result = PresentGrace
		return p.issue(now, f, t.successor, scope)
	}
	if !now.Before(t.expires) {
		pr.Result = PresentExpired
		return invalidGrant("The refresh token has expired").response()
	}
	scope, oerr := grantScope(form.Get("scope"), f.scope)
	if oerr != nil {
		pr.Result = PresentRefused
		return oerr.response()
	}
	next := p.newToken("rot_rt_")
	// The successor keeps the original grant (RFC 6749 §6), whatever subset
	// this request asked for.
	p.addRefresh(next, f, now)
	t.used, t.usedAt, t.successor = true, now, next
	f.live = next
	pr.Result = PresentRotated
	return p.issue(now, f, next, scope)
}

// addRefresh records a new refresh token of family f; p.mu is held.
func (p *Rotating) addRefresh(rt string, f *rotFamily, now time.Time) {
	p.refresh[rt] = &rotRefresh{family: f, issuedAt: now, expires: now.Add(p.refreshTTL)}
	p.tokens = append(p.tokens, rt)
}

// issue answers with a new access token and refreshToken; p.mu is held.
func (p *Rotating) issue(now time.Time, f *rotFamily, refreshToken, scope string) response {
	at := p.newToken("rot_at_")
	p.access[at] = &rotAccess{family: f, expires: now.Add(p.accessTTL)}
	resp := jsonResponse(http.StatusOK, oauthContentType, oauthTokenBody{
		AccessToken:  at,
		TokenType:    "Bearer",
		ExpiresIn:    int64(p.accessTTL / time.Second),
		RefreshToken: refreshToken,
		Scope:        scope,
	})
	noStore(resp.header)
	return resp
}
