package providersim

import (
	"crypto/subtle"
	"encoding/json"
	"net/http"
	"sync"
	"time"

	"github.com/google/uuid"
)

// SahamatiPath is the Token Service's entity-token endpoint (circular 2025-07).
const SahamatiPath = "/iam/v1/entity/token/generate"

const (
	sahamatiVer   = "1.0.0"
	sahamatiScope = "email microprofile-jwt profile address phone offline_access"
	// sahamatiSecretLife is how long an entity secret is valid after a reset.
	sahamatiSecretLife = 60 * 24 * time.Hour
	msgBadSecret       = "Invalid entity id/secret or secret is expired"
	msgLimitExceeded   = "Limit Exceeded"
)

// SahamatiOptions configures NewSahamati.
type SahamatiOptions struct {
	EntityID string
	Secret   string
	// SecretExpiresAt: zero means 60 days after Now at construction, as after a reset.
	SecretExpiresAt time.Time
	// DailyLimit is the token requests allowed per entity per quota day; default 300.
	DailyLimit int
	// Location defines the quota day; default Asia/Kolkata.
	Location *time.Location
	// TokenTTL is the access token's lifetime; default 24h.
	TokenTTL time.Duration
	Now      func() time.Time
}

// Sahamati simulates the Sahamati Token Service's entity token endpoint:
// form id/secret in, a 24 h bearer token out, 401 for a wrong or expired
// secret, and 429 "Limit Exceeded" past the daily limit. Every request that
// reaches the endpoint counts against the quota of the id it names, failures
// and 429s included.
type Sahamati struct {
	server

	mu        sync.Mutex
	entityID  string
	secret    string
	secretExp time.Time
	limit     int
	loc       *time.Location
	ttl       time.Duration
	used      map[string]map[string]int // quota day → entity id → requests
	tokens    map[string]time.Time      // access token → expiry
}

// NewSahamati starts a Sahamati simulator; Close it when done.
func NewSahamati(o SahamatiOptions) *Sahamati {
	s := &Sahamati{
		entityID: o.EntityID,
		secret:   o.Secret,
		limit:    o.DailyLimit,
		loc:      o.Location,
		ttl:      o.TokenTTL,
		used:     make(map[string]map[string]int),
		tokens:   make(map[string]time.Time),
	}
	if s.limit <= 0 {
		s.limit = 300
	}
	if s.loc == nil {
		s.loc = kolkata()
	}
	if s.ttl <= 0 {
		s.ttl = 24 * time.Hour
	}
	now := nowFunc(o.Now)
	s.secretExp = o.SecretExpiresAt
	if s.secretExp.IsZero() {
		s.secretExp = now().Add(sahamatiSecretLife)
	}
	s.start(SahamatiPath, now, s.handle, s.errorFor)
	return s
}

// kolkata is Asia/Kolkata; India keeps no daylight saving, so a fixed +05:30
// zone is exact when the tz database is missing.
func kolkata() *time.Location {
	if loc, err := time.LoadLocation("Asia/Kolkata"); err == nil {
		return loc
	}
	return time.FixedZone("IST", 5*3600+30*60)
}

// SetSecret is an operator's secret reset: only secret works from now on, until
// expiresAt (zero: 60 days from now).
func (s *Sahamati) SetSecret(secret string, expiresAt time.Time) {
	if expiresAt.IsZero() {
		expiresAt = s.now().Add(sahamatiSecretLife)
	}
	s.mu.Lock()
	s.secret, s.secretExp = secret, expiresAt
	s.mu.Unlock()
}

// UsedToday returns the requests counted for the configured entity in the
// quota day that contains Now.
func (s *Sahamati) UsedToday() int {
	day := s.now().In(s.loc).Format(time.DateOnly)
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.used[day][s.entityID]
}

// Valid reports whether accessToken was issued here and is unexpired at Now.
func (s *Sahamati) Valid(accessToken string) bool {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	exp, ok := s.tokens[accessToken]
	return ok && now.Before(exp)
}

type sahamatiTokenBody struct {
	Ver              string `json:"ver"`
	Timestamp        string `json:"timestamp"`
	TxnID            string `json:"txnId"`
	AccessToken      string `json:"accessToken"`
	ExpiresIn        int64  `json:"expiresIn"`
	RefreshExpiresIn int64  `json:"refreshExpiresIn"`
	TokenType        string `json:"tokenType"`
	NotBeforePolicy  int    `json:"notBeforePolicy"`
	Scope            string `json:"scope"`
}

type sahamatiErrorBody struct {
	Ver       string `json:"ver"`
	Timestamp string `json:"timestamp"`
	TxnID     string `json:"txnId"`
	ErrorCode string `json:"errorCode"`
	ErrorMsg  string `json:"errorMsg"`
}

func (s *Sahamati) handle(r *http.Request) response {
	now := s.now()
	var id, secret, malformed string
	if mediaType(r) != "application/x-www-form-urlencoded" {
		malformed = "Content-Type must be application/x-www-form-urlencoded"
	} else if err := r.ParseForm(); err != nil {
		malformed = "Request body could not be parsed"
	} else {
		id, secret = r.PostForm.Get("id"), r.PostForm.Get("secret")
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	day := now.In(s.loc).Format(time.DateOnly)
	if s.used[day] == nil {
		s.used[day] = make(map[string]int)
	}
	s.used[day][id]++
	switch {
	case s.used[day][id] > s.limit:
		return s.errorBody(now, http.StatusTooManyRequests, msgLimitExceeded, msgLimitExceeded)
	case malformed != "":
		return s.errorBody(now, http.StatusBadRequest, "Bad Request", malformed)
	case id == "" || secret == "":
		return s.errorBody(now, http.StatusBadRequest, "Bad Request", "Entity Id/Secret is missing in the request")
	case id != s.entityID || subtle.ConstantTimeCompare([]byte(secret), []byte(s.secret)) != 1 || !now.Before(s.secretExp):
		return s.errorBody(now, http.StatusUnauthorized, "Unauthorized", msgBadSecret)
	}
	at := s.newToken("sah_at_")
	s.tokens[at] = now.Add(s.ttl)
	return jsonResponse(http.StatusOK, "application/json", sahamatiTokenBody{
		Ver:              sahamatiVer,
		Timestamp:        sahamatiTime(now),
		TxnID:            uuid.NewString(),
		AccessToken:      at,
		ExpiresIn:        int64(s.ttl / time.Second),
		RefreshExpiresIn: 0,
		TokenType:        "Bearer",
		NotBeforePolicy:  0,
		Scope:            sahamatiScope,
	})
}

func (s *Sahamati) errorFor(status int) response {
	if resp, ok := gatewayError(status); ok {
		return resp
	}
	code, msg := http.StatusText(status), http.StatusText(status)
	switch status {
	case http.StatusTooManyRequests:
		code, msg = msgLimitExceeded, msgLimitExceeded
	case http.StatusUnauthorized:
		msg = msgBadSecret
	case http.StatusNotFound:
		msg = "No resource found for the request path"
	case http.StatusMethodNotAllowed:
		msg = "Request method is not supported"
	}
	return s.errorBody(s.now(), status, code, msg)
}

func (s *Sahamati) errorBody(now time.Time, status int, code, msg string) response {
	return jsonResponse(status, "application/json", sahamatiErrorBody{
		Ver:       sahamatiVer,
		Timestamp: sahamatiTime(now),
		TxnID:     uuid.NewString(),
		ErrorCode: code,
		ErrorMsg:  msg,
	})
}

// sahamatiTime formats like the Token Service: UTC with nanoseconds.
func sahamatiTime(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

func jsonResponse(status int, contentType string, v any) response {
	b, err := json.Marshal(v)
	if err != nil {
		// Only simulator-defined structs are marshalled; this cannot happen.
		return response{status: http.StatusInternalServerError, header: http.Header{"Content-Type": {"text/plain"}}, body: []byte(err.Error())}
	}
	return response{status: status, header: http.Header{"Content-Type": {contentType}}, body: b}
}
