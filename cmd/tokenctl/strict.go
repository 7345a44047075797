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

// extensionPrefix marks a field an operator added on purpose; it is kept and never warned about.
const extensionPrefix = "x_"

// authorizedAtSkew is how far in the future an authorized_at may be (clocks differ)
// before it draws a warning.
const authorizedAtSkew = 5 * time.Minute

// credentialWarning is how close to expiry entity credentials draw a warning.
const credentialWarning = 7 * 24 * time.Hour

// checkDocument is everything tokenctl checks before a document may be stored: JSON syntax
// (with line and column), no field given twice, no template placeholder, no misspelt
// field (against token's field table), then pkg/token's rules (ParsePrivate for JSON types,
// ValidateForStore for meaning). It returns notes for stderr (warnings and explanations).
// Messages name fields, never values.
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
	if err := p.ValidateForStore(now); err != nil {
		return nil, nil, err
	}
	return p, append(notes, profileNotes(p, doc, now)...), nil
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
	for _, obj := range token.Sections() {
		m := doc
		if obj != token.SectionTop {
			child, ok := doc[string(obj)].(map[string]any)
			if !ok {
				continue // absent or the wrong type: ParsePrivate names it
			}
			m = child
		}
		for _, k := range slices.Sorted(maps.Keys(m)) {
			if _, known := token.LookupField(obj, k); known || strings.HasPrefix(k, extensionPrefix) {
				continue
			}
			path := dotted(obj, k)
			if guess, ok := closest(k, obj); ok {
				return notes, &token.FieldError{Field: path, Msg: fmt.Sprintf("unknown field; did you mean %s?", guess.Path())}
			}
			notes = append(notes, fmt.Sprintf("warning: %s: unknown field, kept as it is and used by nothing (name it %s… to silence this)", path, extensionPrefix))
		}
	}
	return notes, nil
}

func dotted[S ~string](obj S, k string) string {
	if obj == "" {
		return k
	}
	return string(obj) + "." + k
}

// closest finds the known field k most likely stands for: the same letters without case
// and separators, or a small edit away; in its own object first, then in the others
// (client_secret written at the top level belongs in provider).
func closest(k string, obj token.Section) (token.Field, bool) {
	norm := func(s string) string {
		return strings.NewReplacer("_", "", "-", "", " ", "").Replace(strings.ToLower(s))
	}
	order := []token.Section{obj}
	for _, o := range token.Sections() {
		if o != obj {
			order = append(order, o)
		}
	}
	for _, o := range order {
		var best token.Field
		bestD := 3
		for _, f := range token.FieldsIn(o) {
			if norm(f.Name) == norm(k) {
				return f, true
			}
			if o != obj {
				continue // elsewhere only exact matches: every short name is near some other
			}
			// At most two edits, and fewer for short names: "status_note" is not "status_reason".
			if d := editDistance(norm(k), norm(f.Name)); d < bestD && d <= min(2, len(f.Name)/4) {
				best, bestD = f, d
			}
		}
		if best.Name != "" {
			return best, true
		}
	}
	return token.Field{}, false
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

// profileNotes are the warnings and explanations for a valid document: fields its grant
// does not use, a client secret that is never sent, credentials and refresh tokens near
// or past expiry, and what reuse_grace means. Every rule that refuses a document is
// pkg/token's.
func profileNotes(p *token.Private, doc map[string]any, now time.Time) []string {
	v := p.Provider
	var notes []string
	prov, _ := doc["provider"].(map[string]any)
	for _, k := range slices.Sorted(maps.Keys(prov)) {
		if f, known := token.LookupField(token.SectionProvider, k); known && !f.UsedBy(v.Grant) {
			notes = append(notes, fmt.Sprintf("warning: provider.%s: not used by grant %q", k, v.Grant))
		}
	}
	if v.Grant == token.GrantRefreshToken && v.ClientAuth == token.AuthNone && !v.ClientSecret.IsZero() {
		notes = append(notes, "warning: provider.client_secret: set, but client_auth \"none\" never sends it: remove it or choose basic or body")
	}
	if v.Grant == token.GrantSahamatiEntity {
		// ValidateForStore has refused credentials that have already expired.
		switch exp := v.CredentialsExpireAt; {
		case exp.IsZero():
			notes = append(notes, "warning: provider.credentials_expire_at: absent, so nothing warns before the entity secret expires (60 days after its reset)")
		case exp.Sub(now) < credentialWarning:
			notes = append(notes, fmt.Sprintf("warning: provider.credentials_expire_at: the entity secret expires in %s; reset it soon", exp.Sub(now).Round(time.Hour)))
		}
	}
	if _, ok := prov["reuse_grace"]; ok {
		notes = append(notes, "note: provider.reuse_grace is informational: how long the provider still accepts a refresh token after its use. "+
			"The refresher uses it only to judge whether an interrupted refresh can be retried; it changes neither when nor how often tokens are refreshed")
	}
	if p.AuthorizedAt.Sub(now) > authorizedAtSkew {
		notes = append(notes, "warning: authorized_at: in the future: until then no authorisation marked with the current time counts as new "+
			"(tokenctl authorize and seed --replace-refresh-token mark theirs just after it)")
	}
	if !p.RefreshExpiresAt.IsZero() && !p.RefreshExpiresAt.After(now) {
		notes = append(notes, "warning: refresh_expires_at: in the past: the provider will refuse this refresh token; authorise again (tokenctl authorize)")
	}
	return notes
}
