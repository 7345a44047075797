package token

import (
	"errors"
	"fmt"
	"time"
)

// ErrInvalid marks every validation and parse error, so callers can branch on "bad config".
var ErrInvalid = errors.New("invalid document")

// FieldError names the offending field; it never carries the field's value.
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

// Is makes errors.Is(err, ErrInvalid) true for every FieldError.
func (e *FieldError) Is(target error) bool { return target == ErrInvalid }

func fieldErr(field, format string, a ...any) error {
	return &FieldError{Field: field, Msg: fmt.Sprintf(format, a...)}
}

// Validate checks meaning: a known grant with what it needs, an https token URL (plain
// http only to a loopback host, for tests), sane durations and policy.
func (p *Private) Validate() error {
	if err := p.Provider.Validate(); err != nil {
		return err
	}
	if p.Provider.Grant == GrantRefreshToken && p.RefreshToken.IsZero() {
		return fieldErr("refresh_token", "required for grant %q", GrantRefreshToken)
	}
	switch p.Status {
	case StatusActive, StatusNeedsReauth:
	default:
		return fieldErr("status", "want %q or %q", StatusActive, StatusNeedsReauth)
	}
	if p.Generation < 0 {
		return fieldErr("generation", "must not be negative")
	}
	return p.Policy.validate(p.Provider)
}

// ValidateForStore is Validate plus the rules for a document a person is about to store
// (tokenctl seed, validate, authorize), which the refresher does not apply to what is
// already stored: the entity credentials have not expired by now, and a
// policy.max_writes_per_day written out is a usable number (ParsePrivate reads 0 and null
// as "absent", which written out is a mistake).
func (p *Private) ValidateForStore(now time.Time) error {
	if err := p.Validate(); err != nil {
		return err
	}
	if exp := p.Provider.CredentialsExpireAt; p.Provider.Grant == GrantSahamatiEntity && !exp.IsZero() && !exp.After(now) {
		return fieldErr("provider.credentials_expire_at", "in the past: the entity secret has expired; reset it at Sahamati and store the new one with its new expiry")
	}
	if p.Policy.maxWritesGiven && p.Policy.MaxWritesPerDay == 0 {
		return fieldErr("policy.max_writes_per_day", "want a whole number from 1 to %d (Secrets Manager keeps about 100 versions a day)", MaxWritesPerDayLimit)
	}
	return nil
}
