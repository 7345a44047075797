// Package invocation is the refresher's invoke contract, shared by the function, tokenctl and
// the consumer library: the request a caller sends, the report it gets back, the outcomes and
// the token-name rule. It has no dependencies so consumers can import it cheaply.
package invocation

import (
	"fmt"
	"sort"
	"strings"
	"unicode/utf8"
)

// Outcomes, one per token per invocation.
const (
	OutcomeRefreshed      = "refreshed"
	OutcomeNotDue         = "not_due"
	OutcomeLeaseHeld      = "lease_held"
	OutcomeQuotaExhausted = "quota_exhausted"
	OutcomeThrottled      = "throttled"
	OutcomeNeedsReauth    = "needs_reauth"
	OutcomeInvalidConfig  = "invalid_config"
	OutcomeFailed         = "failed"
	// OutcomeDeferred: due, but the invocation's deadline came before a refresh could
	// start. Not an error: the token stays due and the next run takes it.
	OutcomeDeferred = "deferred"
)

// Request is a direct invoke. Exactly one of Tokens (operator, with Force), Ensure
// (consumer) or Sweep is set; an EventBridge scheduled event or {} is a reconcile.
type Request struct {
	Tokens []string `json:"tokens,omitempty"`
	Force  bool     `json:"force,omitempty"`
	Ensure []string `json:"ensure,omitempty"`
	Sweep  bool     `json:"sweep,omitempty"`
}

// Row is one token's line in the report. It never holds a secret.
type Row struct {
	Name       string `json:"name"`
	Outcome    string `json:"outcome"`
	ExpiresAt  string `json:"expires_at,omitempty"`
	Generation int64  `json:"generation,omitempty"`
	Error      string `json:"error,omitempty"`
}

// FunctionError is the payload Lambda returns instead of a Report when the function
// returned an error, panicked or exited. The refresher never puts a secret in it.
type FunctionError struct {
	Message string `json:"errorMessage"`
	Type    string `json:"errorType"`
}

func (e *FunctionError) Error() string { return e.Type + ": " + e.Message }

// Report is what an invocation returns.
type Report struct {
	RequestID string         `json:"request_id,omitempty"`
	Tokens    []Row          `json:"tokens"`
	Summary   map[string]int `json:"summary"`
}

// Failed lists the rows whose outcome is failed.
func (r *Report) Failed() []Row {
	var out []Row
	for _, row := range r.Tokens {
		if row.Outcome == OutcomeFailed {
			out = append(out, row)
		}
	}
	return out
}

// Error caps (FailureMessage): whatever the number of failed tokens, the error an
// invocation returns stays small enough for every Lambda runtime API.
const (
	MaxErrorNames = 5   // failed tokens named in the error
	maxErrorCause = 200 // bytes of each named token's cause
	MaxErrorBytes = 2048
)

// FailureMessage is the invocation's error message when rows failed, "" when none did:
// counts by outcome and the first MaxErrorNames failed names with their causes cut short,
// at most MaxErrorBytes whatever the number of rows. The full report stays in the
// response and the log.
func (r *Report) FailureMessage() string {
	failed := r.Failed()
	if len(failed) == 0 {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d of %d tokens failed", len(failed), len(r.Tokens))
	outcomes := make([]string, 0, len(r.Summary))
	for o := range r.Summary {
		outcomes = append(outcomes, o)
	}
	sort.Strings(outcomes)
	b.WriteString(" (")
	for i, o := range outcomes {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s %d", o, r.Summary[o])
	}
	b.WriteString("): ")
	for i, f := range failed {
		if i == MaxErrorNames {
			fmt.Fprintf(&b, "; and %d more (see the report)", len(failed)-i)
			break
		}
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(clip(f.Name, 80) + ": " + clip(f.Error, maxErrorCause))
	}
	return clip(b.String(), MaxErrorBytes)
}

// clip cuts s to at most n bytes, on a rune boundary, marking the cut.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const mark = "…"
	cut := n - len(mark)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + mark
}

// MaxNameLen is the longest token name accepted.
const MaxNameLen = 201

// ValidName reports whether name is a token name: 1–201 characters, starting with a letter
// or digit, then letters, digits and . _ @ + = / -. Written out rather than as a regexp so
// that no package pays for compiling one at init.
func ValidName(name string) bool {
	if len(name) == 0 || len(name) > MaxNameLen {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case i > 0 && (c == '.' || c == '_' || c == '@' || c == '+' || c == '=' || c == '/' || c == '-'):
		default:
			return false
		}
	}
	return true
}
