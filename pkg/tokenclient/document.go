package tokenclient

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Values of the access secret's "status" field.
const (
	statusActive      = "active"
	statusNeedsReauth = "needs_reauth"
)

// accessDoc is the access secret <prefix>access/<name> as the refresher publishes it.
// It is parsed here rather than through pkg/token so a consumer pulls in nothing of the
// refresher; unknown fields are ignored.
type accessDoc struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	// A string, not time.Time, so a bad value gets our message rather than the decoder's.
	// Absent or "" means no stated expiry (expiresAt stays zero).
	ExpiresAt  string `json:"expires_at"`
	Scope      string `json:"scope"`
	Generation int64  `json:"generation"`
	Status     string `json:"status"`
	Reason     string `json:"reason"`

	expiresAt time.Time
}

// parseAccessDoc decodes and checks the document. Error texts never quote the input:
// a decoder's syntax error can carry a character of the token.
func parseAccessDoc(raw string) (*accessDoc, error) {
	var d accessDoc
	if err := json.Unmarshal([]byte(raw), &d); err != nil {
		var syn *json.SyntaxError
		var typ *json.UnmarshalTypeError
		switch {
		case errors.As(err, &syn):
			return nil, fmt.Errorf("%w: not JSON (syntax error at byte %d)", ErrMalformed, syn.Offset)
		case errors.As(err, &typ):
			return nil, fmt.Errorf("%w: field %q has the wrong JSON type", ErrMalformed, typ.Field)
		default:
			return nil, fmt.Errorf("%w: not a JSON object", ErrMalformed)
		}
	}
	// An empty status is read as active so documents written by hand or by older tools work.
	switch d.Status {
	case "":
		d.Status = statusActive
	case statusActive, statusNeedsReauth:
	default:
		return nil, fmt.Errorf("%w: unknown status %q", ErrMalformed, d.Status)
	}
	if d.Status == statusNeedsReauth {
		return &d, nil // the token fields do not matter any more
	}
	if d.AccessToken == "" {
		return nil, fmt.Errorf("%w: access_token is missing", ErrMalformed)
	}
	if d.TokenType == "" {
		d.TokenType = "Bearer"
	}
	if d.ExpiresAt == "" {
		// Absent (or "" from older refreshers): no stated expiry. The token is used, re-read
		// every few minutes and after a 401 (Client.newEntry).
		return &d, nil
	}
	t, err := time.Parse(time.RFC3339Nano, d.ExpiresAt)
	if err != nil {
		return nil, fmt.Errorf("%w: expires_at %q is not an RFC 3339 time", ErrMalformed, d.ExpiresAt)
	}
	d.expiresAt = t
	return &d, nil
}
