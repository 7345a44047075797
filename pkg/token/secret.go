package token

import (
	"fmt"
	"log/slog"
)

// Secret holds a credential: an access token, refresh token, client or entity secret.
// Every formatting path prints "[redacted]" so a value can't reach a log line, an
// error string, a report or a panic by accident; Reveal is the one way out.
type Secret string

const redacted = "[redacted]"

// Reveal returns the raw value, for the one place that must send or store it.
func (s Secret) Reveal() string { return string(s) }

// IsZero reports whether no value is set.
func (s Secret) IsZero() bool { return s == "" }

func (s Secret) String() string   { return redacted }
func (s Secret) GoString() string { return redacted }

// Format covers %v, %+v, %#v, %s, %q, %x and friends.
func (s Secret) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(redacted)) }

// LogValue keeps slog from printing the value.
func (s Secret) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalJSON redacts, so a report or a debug dump never carries the value;
// the documents marshal the raw value explicitly with Reveal.
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }

// MarshalText redacts for encoders that prefer it (encoding/xml, slog text keys).
func (s Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }
