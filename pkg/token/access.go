package token

import (
	"encoding/json"
	"time"
)

// Access is the consumers' document `<prefix>access/<name>`, the public contract.
type Access struct {
	AccessToken Secret
	TokenType   string
	ExpiresAt   time.Time
	Scope       string
	Generation  int64
	Status      string
	Reason      string // only when Status is not active
}

// Access derives the consumers' document.
func (p *Private) Access() Access {
	a := Access{
		AccessToken: p.AccessToken,
		TokenType:   p.TokenType,
		ExpiresAt:   p.ExpiresAt,
		Scope:       p.Scope,
		Generation:  p.Generation,
		Status:      p.Status,
	}
	if p.Status != StatusActive {
		a.Reason = p.StatusReason
	}
	return a
}

// accessWire is the access document's exact shape (docs/design.md §2).
type accessWire struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresAt   string `json:"expires_at,omitempty"` // RFC 3339 or absent, never ""
	Scope       string `json:"scope"`
	Generation  int64  `json:"generation"`
	Status      string `json:"status"`
	Reason      string `json:"reason,omitempty"`
}

// Marshal writes the access document with the raw token, for Secrets Manager only.
func (a Access) Marshal() ([]byte, error) {
	w := accessWire{
		AccessToken: a.AccessToken.Reveal(),
		TokenType:   a.TokenType,
		Scope:       a.Scope,
		Generation:  a.Generation,
		Status:      a.Status,
		Reason:      a.Reason,
	}
	if !a.ExpiresAt.IsZero() {
		w.ExpiresAt = a.ExpiresAt.UTC().Format(time.RFC3339)
	}
	return json.Marshal(w)
}

// ParseAccess reads an access document.
func ParseAccess(raw []byte) (Access, error) {
	var w accessWire
	if err := json.Unmarshal(raw, &w); err != nil {
		return Access{}, fieldErr("access", "not the access document")
	}
	a := Access{AccessToken: Secret(w.AccessToken), TokenType: w.TokenType, Scope: w.Scope, Generation: w.Generation, Status: w.Status, Reason: w.Reason}
	if w.ExpiresAt != "" {
		t, err := time.Parse(time.RFC3339, w.ExpiresAt)
		if err != nil {
			return Access{}, fieldErr("expires_at", "want an RFC 3339 time")
		}
		a.ExpiresAt = t
	}
	return a, nil
}
