package token

import "slices"

// Section is the object of the private document a field lives in.
type Section string

// The private document's sections: the top level and its two blocks.
const (
	SectionTop      Section = ""
	SectionProvider Section = "provider"
	SectionPolicy   Section = "policy"
)

// Sections lists the document's sections, the top level first.
func Sections() []Section { return []Section{SectionTop, SectionProvider, SectionPolicy} }

// Kind is the JSON type ParsePrivate reads a field as.
type Kind int

// The kinds of field.
const (
	KindString   Kind = iota + 1 // a JSON string
	KindSecret                   // a JSON string holding a credential
	KindTime                     // an RFC 3339 time in a JSON string
	KindDuration                 // a Go duration ("60s", "13h") in a JSON string
	KindInt                      // a whole JSON number
	KindStrings                  // a JSON array of strings
	KindObject                   // a JSON object (the provider and policy blocks)
)

// Field is one known field of the private document.
type Field struct {
	Section Section
	Name    string
	Kind    Kind
	// Grants are the grants that use a provider field; empty means every grant (and
	// every field outside the provider block).
	Grants []string
}

// Path is the field's dotted name as errors give it: "provider.client_id", "generation".
func (f Field) Path() string {
	if f.Section == SectionTop {
		return f.Name
	}
	return string(f.Section) + "." + f.Name
}

// UsedBy reports whether grant uses the field.
func (f Field) UsedBy(grant string) bool {
	return len(f.Grants) == 0 || slices.Contains(f.Grants, grant)
}

var (
	oauthGrants  = []string{GrantRefreshToken, GrantClientCredentials}
	refreshOnly  = []string{GrantRefreshToken}
	sahamatiOnly = []string{GrantSahamatiEntity}
	allGrants    []string // nil: used by every grant
)

// fieldTable is every field ParsePrivate knows, in document order. ParsePrivate keeps any
// other field as it is and writes it back (docs/design.md §2); tokenctl's strict mode uses
// this table to tell a typo from an operator's note. TestFieldTable keeps it and the parser
// in step.
var fieldTable = []Field{
	{SectionTop, "provider", KindObject, allGrants},
	{SectionTop, "policy", KindObject, allGrants},
	{SectionTop, "refresh_token", KindSecret, allGrants},
	{SectionTop, "refresh_expires_at", KindTime, allGrants},
	{SectionTop, "access_token", KindSecret, allGrants},
	{SectionTop, "token_type", KindString, allGrants},
	{SectionTop, "expires_at", KindTime, allGrants},
	{SectionTop, "scope", KindString, allGrants},
	{SectionTop, "generation", KindInt, allGrants},
	{SectionTop, "status", KindString, allGrants},
	{SectionTop, "status_reason", KindString, allGrants},
	{SectionTop, "version_id", KindString, allGrants},
	{SectionTop, "base_version_id", KindString, allGrants},
	{SectionTop, "seen_refresh_tokens", KindStrings, allGrants},
	{SectionTop, "authorized_at", KindTime, allGrants},

	{SectionProvider, "grant", KindString, allGrants},
	{SectionProvider, "body", KindString, oauthGrants},
	{SectionProvider, "token_url", KindString, allGrants},
	{SectionProvider, "authorize_url", KindString, refreshOnly},
	{SectionProvider, "client_id", KindString, oauthGrants},
	{SectionProvider, "client_secret", KindSecret, oauthGrants},
	{SectionProvider, "client_auth", KindString, oauthGrants},
	{SectionProvider, "scope", KindString, oauthGrants},
	{SectionProvider, "entity_id", KindString, sahamatiOnly},
	{SectionProvider, "entity_secret", KindSecret, sahamatiOnly},
	{SectionProvider, "credentials_expire_at", KindTime, sahamatiOnly},
	{SectionProvider, "reuse_grace", KindDuration, refreshOnly},
	{SectionProvider, "default_expires_in", KindDuration, allGrants},

	{SectionPolicy, "refresh_margin", KindDuration, allGrants},
	{SectionPolicy, "quota_key", KindString, allGrants},
	{SectionPolicy, "daily_limit", KindInt, allGrants},
	{SectionPolicy, "quota_timezone", KindString, allGrants},
	{SectionPolicy, "max_writes_per_day", KindInt, allGrants},
}

// Fields returns every known field of the private document, in document order.
func Fields() []Field {
	out := make([]Field, len(fieldTable))
	for i, f := range fieldTable {
		f.Grants = slices.Clone(f.Grants)
		out[i] = f
	}
	return out
}

// FieldsIn returns the known fields of one section, in document order.
func FieldsIn(s Section) []Field {
	var out []Field
	for _, f := range Fields() {
		if f.Section == s {
			out = append(out, f)
		}
	}
	return out
}

// LookupField finds a known field by section and name.
func LookupField(s Section, name string) (Field, bool) {
	for _, f := range Fields() {
		if f.Section == s && f.Name == name {
			return f, true
		}
	}
	return Field{}, false
}
