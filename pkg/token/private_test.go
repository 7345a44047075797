package token_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/seed-502fa48b/token-refresher/pkg/token"
)

// profileDocs are the private documents under testdata/private: the docs/design.md §2
// example (its "…" filled in) and one per provider profile.
var profileDocs = []string{"design-example", "rotating", "vault-ist", "client-credentials", "sahamati"}

func readDoc(t testing.TB, name string) []byte {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", "private", name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func mustParse(t testing.TB, raw []byte) *token.Private {
	t.Helper()
	p, err := token.ParsePrivate(raw)
	if err != nil {
		t.Fatalf("ParsePrivate: %v", err)
	}
	return p
}

func mustTime(t testing.TB, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// edit decodes a JSON document, lets fn change it and encodes it again.
func edit(t testing.TB, raw []byte, fn func(doc map[string]any)) []byte {
	t.Helper()
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	fn(doc)
	out, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func sub(doc map[string]any, key string) map[string]any {
	m, ok := doc[key].(map[string]any)
	if !ok {
		m = map[string]any{}
		doc[key] = m
	}
	return m
}

func TestParsePrivateDesignExample(t *testing.T) {
	p := mustParse(t, readDoc(t, "design-example"))
	v := p.Provider
	checks := []struct {
		field string
		got   any
		want  any
	}{
		{"provider.grant", v.Grant, token.GrantRefreshToken},
		{"provider.body", v.Body, token.BodyForm},
		{"provider.token_url", v.TokenURL, "https://auth.example.com/oauth2/token"},
		{"provider.client_id", v.ClientID, "acme-client-id"},
		{"provider.client_secret", v.ClientSecret.Reveal(), "cs-7f3a9b2c1d4e5f60"},
		{"provider.client_auth", v.ClientAuth, token.AuthBasic},
		{"provider.scope", v.Scope, "offline_access fund.read target:b/acme"},
		{"provider.entity_id", v.EntityID, "ACME-FIU-001"},
		{"provider.entity_secret", v.EntitySecret.Reveal(), "es-0a1b2c3d4e5f6071"},
		{"provider.credentials_expire_at", v.CredentialsExpireAt, mustTime(t, "2027-01-20T00:00:00Z")},
		{"provider.reuse_grace", v.ReuseGrace, 60 * time.Second},
		{"provider.default_expires_in", v.DefaultExpiresIn, time.Hour},
		{"policy.refresh_margin", p.Policy.RefreshMargin, 13 * time.Hour},
		{"policy.quota_key", p.Policy.QuotaKey, "sahamati-prod"},
		{"policy.daily_limit", p.Policy.DailyLimit, 300},
		{"policy.quota_timezone", p.Policy.QuotaTimezone, "Asia/Kolkata"},
		{"refresh_token", p.RefreshToken.Reveal(), "rt-9e8d7c6b5a493827"},
		{"refresh_expires_at", p.RefreshExpiresAt, mustTime(t, "2026-12-20T00:00:00Z")},
		{"access_token", p.AccessToken.Reveal(), "at-1122334455667788"},
		{"token_type", p.TokenType, "Bearer"},
		{"expires_at", p.ExpiresAt, mustTime(t, "2026-11-22T12:00:00Z")},
		{"scope", p.Scope, "offline_access fund.read target:b/acme"},
		{"generation", p.Generation, int64(7)},
		{"status", p.Status, token.StatusActive},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s: got %v, want %v", c.field, c.got, c.want)
		}
	}
	if extra := p.Extra(); len(extra) != 0 {
		t.Errorf("Extra: got %v, want none", extra)
	}
	if err := p.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
}

func TestParsePrivateVariants(t *testing.T) {
	base := readDoc(t, "design-example")
	tests := []struct {
		name  string
		raw   []byte
		check func(t *testing.T, p *token.Private)
	}{
		{
			name: "status omitted means active",
			raw:  edit(t, base, func(d map[string]any) { delete(d, "status") }),
			check: func(t *testing.T, p *token.Private) {
				if p.Status != token.StatusActive {
					t.Errorf("Status: got %q, want %q", p.Status, token.StatusActive)
				}
			},
		},
		{
			name: "null fields read as absent",
			raw: edit(t, base, func(d map[string]any) {
				d["access_token"] = nil
				d["expires_at"] = nil
				d["generation"] = nil
				d["policy"] = nil
				sub(d, "provider")["reuse_grace"] = nil
			}),
			check: func(t *testing.T, p *token.Private) {
				if !p.AccessToken.IsZero() || !p.ExpiresAt.IsZero() || p.Generation != 0 || p.Policy.QuotaKey != "" || p.Provider.ReuseGrace != 0 {
					t.Errorf("got access_token set=%v expires_at=%v generation=%d quota_key=%q reuse_grace=%v, want all zero",
						!p.AccessToken.IsZero(), p.ExpiresAt, p.Generation, p.Policy.QuotaKey, p.Provider.ReuseGrace)
				}
			},
		},
		{
			name: "time with an offset",
			raw:  edit(t, base, func(d map[string]any) { d["expires_at"] = "2026-11-22T17:30:00+05:30" }),
			check: func(t *testing.T, p *token.Private) {
				if want := mustTime(t, "2026-11-22T12:00:00Z"); !p.ExpiresAt.Equal(want) {
					t.Errorf("ExpiresAt: got %v, want %v", p.ExpiresAt, want)
				}
			},
		},
		{
			name: "minimal document",
			raw:  []byte(`{"provider":{"grant":"client_credentials"}}`),
			check: func(t *testing.T, p *token.Private) {
				if p.Provider.Grant != token.GrantClientCredentials || p.Generation != 0 || p.Status != token.StatusActive {
					t.Errorf("got grant %q generation %d status %q", p.Provider.Grant, p.Generation, p.Status)
				}
			},
		},
		{
			name: "no provider block parses; Validate names it",
			raw:  []byte(`{"refresh_token":"x"}`),
			check: func(t *testing.T, p *token.Private) {
				err := p.Validate()
				var fe *token.FieldError
				if !errors.As(err, &fe) || fe.Field != "provider.grant" {
					t.Errorf("Validate: got %v, want a provider.grant error", err)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.check(t, mustParse(t, tt.raw))
		})
	}
}

func TestParsePrivateTypeErrors(t *testing.T) {
	tests := []struct {
		name    string
		raw     string
		want    string // the whole message
		secrets []string
	}{
		{"not JSON", `{"provider":`, "document: want a JSON object", nil},
		{"empty", ``, "document: want a JSON object", nil},
		{"array", `["sk-live-array-value"]`, "document: want a JSON object", []string{"sk-live-array-value"}},
		{"string", `"sk-live-string-value"`, "document: want a JSON object", []string{"sk-live-string-value"}},
		{"null", `null`, "document: want a JSON object", nil},
		{"generation string", `{"generation":"7"}`, "generation: want a whole number, got a string", nil},
		{"generation fraction", `{"generation":7.5}`, "generation: want a whole number, got a number", []string{"7.5"}},
		{"generation too large", `{"generation":123456789012345678901234}`, "generation: want a whole number, got a number", []string{"123456789012345678901234"}},
		{"provider array", `{"provider":[]}`, "provider: want a JSON object", nil},
		{"provider string", `{"provider":"https://auth.example.com"}`, "provider: want a JSON object", []string{"auth.example.com"}},
		{"policy number", `{"policy":300}`, "policy: want a JSON object", nil},
		{"provider.grant number", `{"provider":{"grant":42}}`, "provider.grant: want a string, got a number", nil},
		{"provider.client_secret object", `{"provider":{"client_secret":{"v":"cs-hidden-object-value"}}}`, "provider.client_secret: want a string, got an object", []string{"cs-hidden-object-value"}},
		{"provider.entity_secret array", `{"provider":{"entity_secret":["es-hidden-array-value"]}}`, "provider.entity_secret: want a string, got an array", []string{"es-hidden-array-value"}},
		{"provider.reuse_grace bad duration", `{"provider":{"reuse_grace":"sixty-seconds-please"}}`, `provider.reuse_grace: want a duration like "60s" or "13h"`, []string{"sixty-seconds-please"}},
		{"provider.reuse_grace number", `{"provider":{"reuse_grace":60}}`, "provider.reuse_grace: want a string, got a number", nil},
		{"provider.default_expires_in bad", `{"provider":{"default_expires_in":"1 hour long"}}`, `provider.default_expires_in: want a duration like "60s" or "13h"`, []string{"1 hour long"}},
		{"provider.credentials_expire_at bad time", `{"provider":{"credentials_expire_at":"2027-01-20 00:00:00"}}`, "provider.credentials_expire_at: want an RFC 3339 time like 2027-01-20T00:00:00Z", []string{"2027-01-20 00:00:00"}},
		{"policy.refresh_margin bad", `{"policy":{"refresh_margin":"thirteen-hours"}}`, `policy.refresh_margin: want a duration like "60s" or "13h"`, []string{"thirteen-hours"}},
		{"policy.daily_limit string", `{"policy":{"daily_limit":"300"}}`, "policy.daily_limit: want a whole number, got a string", nil},
		{"policy.daily_limit bool", `{"policy":{"daily_limit":true}}`, "policy.daily_limit: want a whole number, got a boolean", nil},
		{"policy.quota_timezone number", `{"policy":{"quota_timezone":5.5}}`, "policy.quota_timezone: want a string, got a number", nil},
		{"refresh_token number", `{"refresh_token":1234567890123}`, "refresh_token: want a string, got a number", []string{"1234567890123"}},
		{"access_token bool", `{"access_token":true}`, "access_token: want a string, got a boolean", nil},
		{"expires_at bad time", `{"expires_at":"tomorrow-at-noon"}`, "expires_at: want an RFC 3339 time like 2027-01-20T00:00:00Z", []string{"tomorrow-at-noon"}},
		{"refresh_expires_at no zone", `{"refresh_expires_at":"2026-12-20T00:00:00"}`, "refresh_expires_at: want an RFC 3339 time like 2027-01-20T00:00:00Z", []string{"2026-12-20T00:00:00"}},
		{"status number", `{"status":1}`, "status: want a string, got a number", nil},
		{"scope array", `{"scope":["fund.read-scope-value"]}`, "scope: want a string, got an array", []string{"fund.read-scope-value"}},
		{"authorized_at number", `{"authorized_at":1764975600}`, "authorized_at: want a string, got a number", []string{"1764975600"}},
		{"authorized_at object", `{"authorized_at":{"at":"2026-12-05T00:00:00Z"}}`, "authorized_at: want a string, got an object", nil},
		{"authorized_at bad time", `{"authorized_at":"yesterday-afternoon"}`, "authorized_at: want an RFC 3339 time like 2027-01-20T00:00:00Z", []string{"yesterday-afternoon"}},
		{"authorized_at no zone", `{"authorized_at":"2026-12-05T10:00:00"}`, "authorized_at: want an RFC 3339 time like 2027-01-20T00:00:00Z", []string{"2026-12-05T10:00:00"}},
		// Secrets elsewhere in the document never reach the message either.
		{"secrets beside the bad field", `{"refresh_token":"rt-beside-the-error-1","provider":{"client_secret":"cs-beside-the-error-2"},"generation":"x"}`,
			"generation: want a whole number, got a string", []string{"rt-beside-the-error-1", "cs-beside-the-error-2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := token.ParsePrivate([]byte(tt.raw))
			if err == nil {
				t.Fatalf("got %+v, nil error; want %q", p, tt.want)
			}
			if p != nil {
				t.Errorf("got a document with the error, want nil")
			}
			if err.Error() != tt.want {
				t.Errorf("error: got %q, want %q", err, tt.want)
			}
			if !errors.Is(err, token.ErrInvalid) {
				t.Errorf("errors.Is(%v, ErrInvalid) = false, want true", err)
			}
			var fe *token.FieldError
			if !errors.As(err, &fe) || !strings.HasPrefix(tt.want, fe.Field+": ") {
				t.Errorf("errors.As FieldError: got %#v, want Field naming %q", fe, tt.want)
			}
			for _, s := range tt.secrets {
				if strings.Contains(err.Error(), s) {
					t.Errorf("error %q contains the value %q", err, s)
				}
			}
		})
	}
}

// The document that carries unknown fields at every level must come back with them,
// each one the same JSON value, through any number of rewrites.
func TestUnknownFieldsSurviveRewrite(t *testing.T) {
	raw := []byte(`{
	  "provider": {"grant":"refresh_token","token_url":"https://auth.example.com/t",
	               "audience": "https://api.example.com/", "x_mtls": {"cert_arn": "arn:aws:acm:x", "pins": [1, 2.50, "three"]}},
	  "policy": {"daily_limit": 10, "burst": 3, "windows": [{"from":"09:00","to":"17:00"}]},
	  "refresh_token": "rt-unknown-fields-test",
	  "generation": 2,
	  "x_note": "seeded by   hand <ops@example.com>",
	  "x_flags": {"a": null, "b": [true, false], "c": {"d": 1e3}},
	  "x_big": 123456789012345678901234567890
	}`)
	collect := func(dst map[string]string, obj map[string]json.RawMessage, known ...string) {
		skip := map[string]bool{}
		for _, k := range known {
			skip[k] = true
		}
		for k, v := range obj {
			if skip[k] {
				continue
			}
			// Compare compact, HTML-escaped forms: Marshal (encoding/json) writes
			// "<" as "\u003c", the same JSON value.
			var b, esc bytes.Buffer
			if err := json.Compact(&b, v); err != nil {
				t.Fatal(err)
			}
			json.HTMLEscape(&esc, b.Bytes())
			dst[k] = esc.String()
		}
	}
	split := func(doc []byte) map[string]map[string]string {
		var top map[string]json.RawMessage
		if err := json.Unmarshal(doc, &top); err != nil {
			t.Fatalf("not JSON: %v\n%s", err, doc)
		}
		var prov, pol map[string]json.RawMessage
		if err := json.Unmarshal(top["provider"], &prov); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(top["policy"], &pol); err != nil {
			t.Fatal(err)
		}
		out := map[string]map[string]string{"": {}, "provider": {}, "policy": {}}
		collect(out[""], top, "provider", "policy", "refresh_token", "generation", "status")
		collect(out["provider"], prov, "grant", "token_url")
		collect(out["policy"], pol, "daily_limit")
		return out
	}
	want := split(raw)
	if len(want[""]) != 3 || len(want["provider"]) != 2 || len(want["policy"]) != 2 {
		t.Fatalf("test document: got unknown fields %v", want)
	}

	p := mustParse(t, raw)
	if got, wantNames := p.Extra(), []string{"x_big", "x_flags", "x_note"}; !reflect.DeepEqual(got, wantNames) {
		t.Errorf("Extra: got %v, want %v", got, wantNames)
	}
	doc := raw
	for round := 1; round <= 3; round++ {
		out, err := p.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if got := split(out); !reflect.DeepEqual(got, want) {
			t.Errorf("round %d: unknown fields\n got %v\nwant %v", round, got, want)
		}
		if round > 1 && !bytes.Equal(out, doc) {
			t.Errorf("round %d: rewrite changed the document\n got %s\nwant %s", round, out, doc)
		}
		doc = out
		p = mustParse(t, out)
	}
	// A rewrite keeps unknown fields through an edit of known ones, and a clone is independent.
	c := p.Clone()
	c.Generation = 99
	c.RefreshToken = "rt-rotated"
	out, err := c.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if got := split(out); !reflect.DeepEqual(got, want) {
		t.Errorf("after edit: unknown fields\n got %v\nwant %v", got, want)
	}
	if p.Generation != 2 || p.RefreshToken.Reveal() != "rt-unknown-fields-test" {
		t.Errorf("Clone: editing the clone changed the original (generation %d)", p.Generation)
	}
}

func TestMarshalRoundTripProfiles(t *testing.T) {
	for _, name := range profileDocs {
		t.Run(name, func(t *testing.T) {
			p1 := mustParse(t, readDoc(t, name))
			out1, err := p1.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			p2 := mustParse(t, out1)
			out2, err := p2.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out1, out2) {
				t.Errorf("Marshal not stable:\n first %s\nsecond %s", out1, out2)
			}
			// Every exported value survives (times compared as instants).
			if !sameDoc(p1, p2) {
				t.Errorf("round trip changed the document:\n got %+v\nwant %+v", p2, p1)
			}
			if (p1.Validate() == nil) != (p2.Validate() == nil) {
				t.Errorf("Validate: before %v, after %v", p1.Validate(), p2.Validate())
			}
		})
	}
}

func sameDoc(a, b *token.Private) bool {
	norm := func(p *token.Private) *token.Private {
		c := p.Clone()
		c.ExpiresAt, c.RefreshExpiresAt = c.ExpiresAt.UTC(), c.RefreshExpiresAt.UTC()
		c.Provider.CredentialsExpireAt = c.Provider.CredentialsExpireAt.UTC()
		return c
	}
	x, y := norm(a), norm(b)
	return x.Provider.Grant == y.Provider.Grant &&
		x.Provider.ClientSecret == y.Provider.ClientSecret && x.Provider.EntitySecret == y.Provider.EntitySecret &&
		x.Provider.TokenURL == y.Provider.TokenURL && x.Provider.Body == y.Provider.Body &&
		x.Provider.ClientID == y.Provider.ClientID && x.Provider.ClientAuth == y.Provider.ClientAuth &&
		x.Provider.Scope == y.Provider.Scope && x.Provider.EntityID == y.Provider.EntityID &&
		x.Provider.CredentialsExpireAt.Equal(y.Provider.CredentialsExpireAt) &&
		x.Provider.ReuseGrace == y.Provider.ReuseGrace && x.Provider.DefaultExpiresIn == y.Provider.DefaultExpiresIn &&
		x.Policy.RefreshMargin == y.Policy.RefreshMargin && x.Policy.QuotaKey == y.Policy.QuotaKey &&
		x.Policy.DailyLimit == y.Policy.DailyLimit && x.Policy.QuotaTimezone == y.Policy.QuotaTimezone &&
		x.RefreshToken == y.RefreshToken && x.RefreshExpiresAt.Equal(y.RefreshExpiresAt) &&
		x.AccessToken == y.AccessToken && x.TokenType == y.TokenType && x.ExpiresAt.Equal(y.ExpiresAt) &&
		x.Scope == y.Scope && x.Generation == y.Generation && x.Status == y.Status && x.StatusReason == y.StatusReason &&
		x.AuthorizedAt.Equal(y.AuthorizedAt) &&
		reflect.DeepEqual(x.Extra(), y.Extra())
}

// A time ParsePrivate accepts must be one Marshal can write back in a form ParsePrivate
// accepts: otherwise the refresher writes a private version it can never read again.
func TestMarshalTimesParseBack(t *testing.T) {
	tests := []string{
		"2026-11-22T12:00:00Z",
		"2026-11-22T17:30:00+05:30",
		"2026-11-22T12:00:00.123456789Z",
		"9999-12-31T23:00:00-01:00", // UTC is year 10000
		"0000-01-01T00:30:00+01:00", // UTC is year -1
	}
	for _, ts := range tests {
		t.Run(ts, func(t *testing.T) {
			raw := []byte(`{"provider":{"grant":"client_credentials"},"expires_at":"` + ts + `"}`)
			p, err := token.ParsePrivate(raw)
			if err != nil {
				// Rejecting such a time up front is a fine answer too.
				if !errors.Is(err, token.ErrInvalid) {
					t.Fatalf("got %v, want ErrInvalid", err)
				}
				return
			}
			out, err := p.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			p2, err := token.ParsePrivate(out)
			if err != nil {
				t.Fatalf("ParsePrivate accepted %s but rejects its own Marshal output %s: %v", ts, out, err)
			}
			if !p2.ExpiresAt.Equal(p.ExpiresAt.Truncate(time.Second)) {
				t.Errorf("expires_at: got %v, want %v", p2.ExpiresAt, p.ExpiresAt.Truncate(time.Second))
			}
		})
	}
}

func TestMarshalHoldsRawValues(t *testing.T) {
	p := mustParse(t, readDoc(t, "design-example"))
	out, err := p.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []token.Secret{p.Provider.ClientSecret, p.Provider.EntitySecret, p.RefreshToken, p.AccessToken} {
		if !bytes.Contains(out, []byte(`"`+s.Reveal()+`"`)) {
			t.Errorf("Marshal output lacks a raw secret value (the stored form must hold it): %s", out)
		}
	}
	if bytes.Contains(out, []byte("[redacted]")) {
		t.Errorf("Marshal output holds [redacted]: %s", out)
	}
}
