package providersim

import (
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
)

// VaultPath is vault.ist's token endpoint.
const VaultPath = "/v2.0/reference/gettoken"

const (
	vaultScope   = "accounts:create accounts:read transactions:read transfers:create withdraw_other_account:show"
	vaultTraceID = "TraceId unavailable"
	// vaultExpiryLayout is the seed's "2025-01-01T00:00:00.000Z".
	vaultExpiryLayout = "2006-01-02T15:04:05.000Z"
)

// VaultOptions configures NewVault.
type VaultOptions struct {
	AccessTTL  time.Duration // default 24h
	RefreshTTL time.Duration // default 30 days, counted from each refresh token's issue
	Now        func() time.Time
}

// Vault simulates vault.ist's refresh_token grant: a JSON body in, a new access
// token and a new refresh token in every 200, the presented refresh token
// unusable afterwards, and 401 {"status":"UNAUTHORIZED",…} for an expired,
// used or unknown refresh token.
type Vault struct {
	server

	mu         sync.Mutex
	accessTTL  time.Duration
	refreshTTL time.Duration
	refresh    map[string]*vaultRefresh
	access     map[string]time.Time // access token → expiry
	latest     *vaultFamily
}

type vaultFamily struct {
	userID string
	live   string
}

type vaultRefresh struct {
	family  *vaultFamily
	expires time.Time
	used    bool
}

// NewVault starts a vault.ist simulator; Close it when done.
func NewVault(o VaultOptions) *Vault {
	v := &Vault{
		accessTTL:  o.AccessTTL,
		refreshTTL: o.RefreshTTL,
		refresh:    make(map[string]*vaultRefresh),
		access:     make(map[string]time.Time),
	}
	if v.accessTTL <= 0 {
		v.accessTTL = 24 * time.Hour
	}
	if v.refreshTTL <= 0 {
		v.refreshTTL = 30 * 24 * time.Hour
	}
	v.start(VaultPath, o.Now, v.handle, v.errorFor)
	return v
}

// Seed returns a refresh token as if a user had just authenticated, starting a
// new token family (a user) that becomes the latest one.
func (v *Vault) Seed() string {
	now := v.now()
	rt := v.newToken("vlt_rt_")
	v.mu.Lock()
	defer v.mu.Unlock()
	f := &vaultFamily{userID: "usr:" + uuid.NewString(), live: rt}
	v.refresh[rt] = &vaultRefresh{family: f, expires: now.Add(v.refreshTTL)}
	v.latest = f
	return rt
}

// Live returns the current live refresh token of the latest seeded family, ""
// before any Seed.
func (v *Vault) Live() string {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.latest == nil {
		return ""
	}
	return v.latest.live
}

// Valid reports whether accessToken was issued here and is unexpired at Now.
func (v *Vault) Valid(accessToken string) bool {
	now := v.now()
	v.mu.Lock()
	defer v.mu.Unlock()
	exp, ok := v.access[accessToken]
	return ok && now.Before(exp)
}

// ExpireRefresh makes rt expire now, so presenting it gives the seed's
// "The Token has expired on …" 401. Unknown tokens are ignored.
func (v *Vault) ExpireRefresh(rt string) {
	now := v.now()
	v.mu.Lock()
	defer v.mu.Unlock()
	if t := v.refresh[rt]; t != nil && now.Before(t.expires) {
		t.expires = now
	}
}

type vaultRequest struct {
	GrantType    *string `json:"grant_type"`
	RefreshToken *string `json:"refresh_token"`
}

type vaultTokenBody struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	RefreshToken string `json:"refresh_token"`
	Scope        string `json:"scope"`
	ExpiresIn    int64  `json:"expires_in"`
	UserID       string `json:"user_id"`
}

type vaultFieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

type vaultErrorBody struct {
	Status  string            `json:"status"`
	Message string            `json:"message"`
	TraceID string            `json:"traceId"`
	Errors  []vaultFieldError `json:"errors"`
}

func (v *Vault) handle(r *http.Request) response {
	if ct := mediaType(r); ct != "application/json" {
		return vaultError(http.StatusBadRequest, "Content-Type '"+r.Header.Get("Content-Type")+"' is not supported, use 'application/json'")
	}
	var req vaultRequest
	dec := json.NewDecoder(r.Body)
	if err := dec.Decode(&req); err != nil || dec.More() {
		return vaultError(http.StatusBadRequest, "Malformed JSON request")
	}
	var missing []vaultFieldError
	if req.GrantType == nil || *req.GrantType == "" {
		missing = append(missing, vaultFieldError{Field: "grant_type", Message: "must not be blank"})
	}
	if req.RefreshToken == nil || *req.RefreshToken == "" {
		missing = append(missing, vaultFieldError{Field: "refresh_token", Message: "must not be blank"})
	}
	if len(missing) > 0 {
		return jsonResponse(http.StatusBadRequest, "application/json", vaultErrorBody{
			Status: "BAD_REQUEST", Message: "Validation failed", TraceID: vaultTraceID, Errors: missing,
		})
	}
	if *req.GrantType != "refresh_token" {
		return vaultError(http.StatusBadRequest, "Unsupported grant type: "+*req.GrantType)
	}

	now := v.now()
	v.mu.Lock()
	defer v.mu.Unlock()
	t := v.refresh[*req.RefreshToken]
	switch {
	case t == nil:
		return vaultError(http.StatusUnauthorized, "The Token is invalid")
	case !now.Before(t.expires):
		return vaultError(http.StatusUnauthorized, "The Token has expired on "+t.expires.UTC().Format(vaultExpiryLayout))
	case t.used:
		return vaultError(http.StatusUnauthorized, "The Token has been revoked")
	}
	at, rt := v.newToken("vlt_at_"), v.newToken("vlt_rt_")
	t.used = true
	f := t.family
	f.live = rt
	v.refresh[rt] = &vaultRefresh{family: f, expires: now.Add(v.refreshTTL)}
	v.access[at] = now.Add(v.accessTTL)
	return jsonResponse(http.StatusOK, "application/json", vaultTokenBody{
		AccessToken:  at,
		TokenType:    "Bearer",
		RefreshToken: rt,
		Scope:        vaultScope,
		ExpiresIn:    int64(v.accessTTL / time.Second),
		UserID:       f.userID,
	})
}

func (v *Vault) errorFor(status int) response {
	if resp, ok := gatewayError(status); ok {
		return resp
	}
	msg := http.StatusText(status)
	switch status {
	case http.StatusUnauthorized:
		msg = "The Token is invalid"
	case http.StatusNotFound:
		msg = "No endpoint found for the request path"
	case http.StatusMethodNotAllowed:
		msg = "Request method is not supported, use 'POST'"
	}
	return vaultError(status, msg)
}

// vaultError builds vault.ist's error body; status is Spring's HttpStatus name.
func vaultError(status int, msg string) response {
	name := strings.ToUpper(strings.ReplaceAll(http.StatusText(status), " ", "_"))
	return jsonResponse(status, "application/json", vaultErrorBody{
		Status:  name,
		Message: msg,
		TraceID: vaultTraceID,
		Errors:  []vaultFieldError{},
	})
}
