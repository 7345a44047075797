package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/seed-502fa48b/token-refresher/pkg/token"
)

// The fields of a private document, per object. pkg/token keeps unknown fields (DESIGN §2),
// so it cannot tell a typo from an operator's note; tokenctl can, before anything is stored.
// provider.authorize_url is unknown to pkg/token: only tokenctl authorize reads it.
var knownFields = map[string][]string{
	"": {"provider", "policy", "refresh_token", "refresh_expires_at", "access_token", "token_type", "expires_at",
		"scope", "generation", "status", "status_reason", "version_id", "base_version_id", "seen_refresh_tokens"},
	"provider": {"grant", "body", "token_url", "authorize_url", "client_id", "client_secret", "client_auth", "scope",
		"entity_id", "entity_secret", "credentials_expire_at", "reuse_grace", "default_expires_in"},
	"policy": {"refresh_margin", "quota_key", "daily_limit", "quota_timezone", "max_writes_per_day"},
}

// grantFields are the provider fields each grant uses; others are reported as unused.
var grantFields = map[string][]string{
	token.GrantRefreshToken:      {"grant", "body", "token_url", "authorize_url", "client_id", "client_secret", "client_auth", "scope", "reuse_grace", "default_expires_in"},
	token.GrantClientCredentials: {"grant", "body", "token_url", "client_id", "client_secret", "client_auth", "scope", "default_expires_in"},
	token.GrantSahamatiEntity:    {"grant", "token_url", "entity_id", "entity_secret", "credentials_expire_at", "default_expires_in"},
}

// extensionPrefix marks a field an operator added on purpose; it is kept and never warned about.
const extensionPrefix = "x_"

// credentialWarning is how close to expiry entity credentials draw a warning.
const credentialWarning = 7 * 24 * time.Hour

// checkDocument is everything tokenctl checks before a document may be stored: JSON syntax
// (with line and column), no template placeholder, no misspelt field, JSON types
// (token.ParsePrivate), meaning (Validate), and the profile rules below. It returns notes
// for stderr (warnings and explanations). Messages name fields, never values.
func checkDocument(raw []byte, now time.Time) (*token.Private, []string, error) {
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil, nil, syntaxError(raw, err)
	}
	if doc == nil {
		return nil, nil, &token.FieldError{Field: "document", Msg: "want a JSON object, got null"}
	}
	if err := duplicateField(raw); err != nil {
		return nil, nil, err
	}
	if field := findPlaceholder(doc); field != "" {
		return nil, nil, fmt.Errorf("%s: still holds the template placeholder %s", field, placeholder)
	}
	notes, err := checkFields(doc)
	if err != nil {
		return nil, nil, err
	}
	p, err := token.ParsePrivate(raw)
	if err != nil {
		return nil, nil, err
	}
	if err := p.Validate(); err != nil {
		return nil, nil, err
	}
	more, err := checkProfile(p, doc, now)
	if err != nil {
		return nil, nil, err
	}
	return p, append(notes, more...), nil
}

// syntaxError says where the JSON breaks, without quoting it: a syntax error's message
// can hold a character of a secret.
func syntaxError(raw []byte, err error) error {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		line, col := position(raw, se.Offset)
		what := "invalid JSON"
		if strings.Contains(se.Error(), "unexpected end") {
			what = "the JSON ends too early (a missing }, ] or closing quote)"
		} else if strings.Contains(se.Error(), "after top-level value") {
			what = "something follows the document's closing }"
		} else if strings.Contains(se.Error(), "after object key") {
			what = "invalid JSON: want : after a field name"
		} else if strings.Contains(se.Error(), "after object key:value pair") {
			what = "invalid JSON: want , or } after a value"
		}
		return &token.FieldError{Field: "document", Msg: fmt.Sprintf("line %d, column %d: %s", line, col, what)}
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return &token.FieldError{Field: "document", Msg: "want a JSON object, got " + te.Value}
	}
	return &token.FieldError{Field: "document", Msg: "want a JSON object"}
}

// duplicateField finds a field given twice in one object: JSON parsers keep one of the two
// silently (Go the last), so an edit that added a field instead of changing it would be lost.
// raw is valid JSON.
func duplicateField(raw []byte) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	var walk func(path string) error
	walk = func(path string) error {
		tok, err := dec.Token()
		if err != nil {
			return nil // not reached for valid JSON; the parser reports it
		}
		d, ok := tok.(json.Delim)
		if !ok {
			return nil
		}
		switch d {
		case '{':
			seen := map[string]bool{}
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return nil
				}
				k, _ := kt.(string)
				field := dotted(path, k)
				if seen[k] {
					line, _ := position(raw, dec.InputOffset())
					return &token.FieldError{Field: field, Msg: fmt.Sprintf("given twice (again on line %d); JSON keeps only one of them", line)}
				}
				seen[k] = true
				if err := walk(field); err != nil {
					return err
				}
			}
		case '[':
			for i := 0; dec.More(); i++ {
				if err := walk(fmt.Sprintf("%s[%d]", path, i)); err != nil {
					return err
				}
			}
		}
		_, _ = dec.Token() // the closing delimiter
		return nil
	}
	return walk("")
}

// position turns a byte offset (the one after the error, as encoding/json reports it)
// into a 1-based line and column.
func position(raw []byte, offset int64) (line, col int) {
	if offset > int64(len(raw)) {
		offset = int64(len(raw))
	}
	if offset > 0 {
		offset-- // json reports the offset after the offending byte
	}
	before := raw[:offset]
	line = bytes.Count(before, []byte("\n")) + 1
	col = int(offset) - (bytes.LastIndexByte(before, '\n') + 1) + 1
	return line, col
}

// checkFields fails on a field that looks like a misspelling of a known one, and notes
// other unknown fields (kept as they are, used by nothing).
func checkFields(doc map[string]any) ([]string, error) {
	var notes []string
	for _, obj := range []string{"", "provider", "policy"} {
		m := doc
		if obj != "" {
			child, ok := doc[obj].(map[string]any)
			if !ok {
				continue // absent or the wrong type: ParsePrivate names it
			}
			m = child
		}
		for _, k := range slices.Sorted(maps.Keys(m)) {
			if slices.Contains(knownFields[obj], k) || strings.HasPrefix(k, extensionPrefix) {
				continue
			}
			path := dotted(obj, k)
			if guess := closest(k, obj); guess != nil {
				return notes, &token.FieldError{Field: path, Msg: fmt.Sprintf("unknown field; did you mean %s?", dotted(guess.obj, guess.name))}
			}
			notes = append(notes, fmt.Sprintf("warning: %s: unknown field, kept as it is and used by nothing (name it %s… to silence this)", path, extensionPrefix))
		}
	}
	return notes, nil
}

func dotted(obj, k string) string {
	if obj == "" {
		return k
	}
	return obj + "." + k
}

type fieldRef struct{ obj, name string }

// closest finds the known field k most likely stands for: the same letters without case
// and separators, or a small edit away; in its own object first, then in the others
// (client_secret written at the top level belongs in provider).
func closest(k, obj string) *fieldRef {
	norm := func(s string) string {
		return strings.NewReplacer("_", "", "-", "", " ", "").Replace(strings.ToLower(s))
	}
	order := []string{obj}
	for _, o := range []string{"", "provider", "policy"} {
		if o != obj {
			order = append(order, o)
		}
	}
	for _, o := range order {
		best, bestD := "", 3
		for _, f := range knownFields[o] {
			if norm(f) == norm(k) {
				return &fieldRef{o, f}
			}
			if o != obj {
				continue // elsewhere only exact matches: every short name is near some other
			}
			// At most two edits, and fewer for short names: "status_note" is not "status_reason".
			if d := editDistance(norm(k), norm(f)); d < bestD && d <= min(2, len(f)/4) {
				best, bestD = f, d
			}
		}
		if best != "" {
			return &fieldRef{o, best}
		}
	}
	return nil
}

// editDistance is the Levenshtein distance.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// checkProfile applies what each grant needs beyond pkg/token's Validate.
func checkProfile(p *token.Private, doc map[string]any, now time.Time) ([]string, error) {
	v := p.Provider
	var notes []string
	prov, _ := doc["provider"].(map[string]any)
	for _, k := range slices.Sorted(maps.Keys(prov)) {
		if slices.Contains(knownFields["provider"], k) && !slices.Contains(grantFields[v.Grant], k) {
			notes = append(notes, fmt.Sprintf("warning: provider.%s: not used by grant %q", k, v.Grant))
		}
	}
	// client_credentials: Provider.Validate already requires client_secret and refuses "none".
	if v.Grant == token.GrantRefreshToken {
		if (v.ClientAuth == token.AuthBasic || v.ClientAuth == token.AuthBody) && v.ClientSecret.IsZero() {
			return notes, &token.FieldError{Field: "provider.client_secret", Msg: fmt.Sprintf("required for client_auth %q (use client_auth \"none\" for a public client)", v.ClientAuth)}
		}
		if v.ClientAuth == token.AuthNone && !v.ClientSecret.IsZero() {
			notes = append(notes, "warning: provider.client_secret: set, but client_auth \"none\" never sends it: remove it or choose basic or body")
		}
	}
	if v.Grant == token.GrantSahamatiEntity {
		switch exp := v.CredentialsExpireAt; {
		case exp.IsZero():
			notes = append(notes, "warning: provider.credentials_expire_at: absent, so nothing warns before the entity secret expires (60 days after its reset)")
		case !exp.After(now):
			return notes, &token.FieldError{Field: "provider.credentials_expire_at", Msg: "in the past: the entity secret has expired; reset it at Sahamati and store the new one with its new expiry"}
		case exp.Sub(now) < credentialWarning:
			notes = append(notes, fmt.Sprintf("warning: provider.credentials_expire_at: the entity secret expires in %s; reset it soon", exp.Sub(now).Round(time.Hour)))
		}
	}
	if _, ok := prov["reuse_grace"]; ok {
		notes = append(notes, "note: provider.reuse_grace is informational: how long the provider still accepts a refresh token after its use. "+
			"The refresher uses it only to judge whether an interrupted refresh can be retried; it changes neither when nor how often tokens are refreshed")
	}
	if !p.RefreshExpiresAt.IsZero() && !p.RefreshExpiresAt.After(now) {
		notes = append(notes, "warning: refresh_expires_at: in the past: the provider will refuse this refresh token; authorise again (tokenctl authorize)")
	}
	if raw, ok := prov["authorize_url"]; ok {
		s, isStr := raw.(string)
		if !isStr {
			return notes, &token.FieldError{Field: "provider.authorize_url", Msg: "want a string"}
		}
		if err := token.ValidateTokenURL(s); err != nil {
			return notes, &token.FieldError{Field: "provider.authorize_url", Msg: "must be an absolute https URL (http only on a loopback host)"}
		}
	}
	// ParsePrivate and Validate have refused every other wrong value; they read 0 and null as
	// "absent", which written out is a mistake.
	if pol, ok := doc["policy"].(map[string]any); ok {
		if _, ok := pol["max_writes_per_day"]; ok && p.Policy.MaxWritesPerDay == 0 {
			return notes, &token.FieldError{Field: "policy.max_writes_per_day", Msg: fmt.Sprintf("want a whole number from 1 to %d (Secrets Manager keeps about 100 versions a day)", token.MaxWritesPerDayLimit)}
		}
	}
	return notes, nil
}
