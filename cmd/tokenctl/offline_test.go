package main

import (
	"encoding/json"
	"flag"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/seed-502fa48b/token-refresher/pkg/secretname"
	"github.com/seed-502fa48b/token-refresher/pkg/token"
)

// fill replaces every placeholder value the way an operator would, choosing a value that
// suits the field.
func fill(t *testing.T, doc string) (string, int) {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(doc), &m); err != nil {
		t.Fatalf("template is not JSON: %v\n%s", err, doc)
	}
	n := 0
	var walk func(obj map[string]any)
	walk = func(obj map[string]any) {
		for k, v := range obj {
			switch v := v.(type) {
			case map[string]any:
				walk(v)
			case string:
				if !strings.Contains(v, placeholder) {
					continue
				}
				n++
				switch {
				case k == "token_url":
					obj[k] = "https://auth.example.com/oauth2/token"
				case strings.HasSuffix(k, "_at"):
					obj[k] = "2027-01-20T00:00:00Z"
				case k == "scope":
					obj[k] = "offline_access fund.read target:b/acme"
				default:
					obj[k] = "filled-" + k + "-value"
				}
			}
		}
	}
	walk(m)
	out, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(out), n
}

func TestTemplates(t *testing.T) {
	wantGrant := map[string][2]string{ // template → grant, body
		"refresh_token":      {token.GrantRefreshToken, token.BodyForm},
		"refresh_token-json": {token.GrantRefreshToken, token.BodyJSON},
		"client_credentials": {token.GrantClientCredentials, ""},
		"sahamati_entity":    {token.GrantSahamatiEntity, ""},
	}
	if got := templateNames(); len(got) != len(wantGrant) {
		t.Fatalf("templates: got %v, want %d", got, len(wantGrant))
	}
	for name, want := range wantGrant {
		t.Run(name, func(t *testing.T) {
			c := newCLI(t, nil, nil)
			c.mustRun("template", name)
			doc := c.out.String()
			if !strings.Contains(c.err.String(), placeholder) {
				t.Errorf("stderr hint does not say what to replace: %q", c.err.String())
			}
			// As printed, the template must not pass: it still holds placeholders.
			if _, _, err := checkDocument([]byte(doc), c.now); err == nil || !strings.Contains(err.Error(), "placeholder") {
				t.Errorf("checkDocument(template): got %v, want a placeholder error", err)
			}
			filled, n := fill(t, doc)
			if n == 0 {
				t.Fatal("template has no placeholder to fill")
			}
			p, _, err := checkDocument([]byte(filled), c.now)
			if err != nil {
				t.Fatalf("filled template: %v\n%s", err, filled)
			}
			if p.Provider.Grant != want[0] || p.Provider.Body != want[1] {
				t.Errorf("got grant %q body %q, want %q %q", p.Provider.Grant, p.Provider.Body, want[0], want[1])
			}
			// And through the command, from a file and from stdin.
			c.mustRun("validate", "--file", writeFile(t, "doc.json", filled))
			if !strings.HasPrefix(c.out.String(), "valid: grant "+want[0]) {
				t.Errorf("validate output: got %q", c.out.String())
			}
			c.stdin = filled
			c.mustRun("validate", "--file", "-")
			assertNoSecrets(t, []string{"filled-client_secret-value", "filled-entity_secret-value", "filled-refresh_token-value"}, c.out.String(), c.err.String())
		})
	}
}

func TestTemplateUnknown(t *testing.T) {
	c := newCLI(t, nil, nil)
	if code := c.run("template", "password"); code != exitUsage {
		t.Errorf("exit: got %d, want %d", code, exitUsage)
	}
	if !strings.Contains(c.err.String(), "sahamati_entity") || c.out.Len() != 0 {
		t.Errorf("got stdout %q stderr %q, want the choices on stderr only", c.out.String(), c.err.String())
	}
}

func TestValidateErrors(t *testing.T) {
	const secret = "cs-validate-should-never-print-1"
	const rt = `,"refresh_token":"` + secret + `"`
	form := func(provider string) string {
		return `{"provider":{"grant":"refresh_token","token_url":"https://a.example/t",` + provider + `}` + rt + `}`
	}
	tests := []struct {
		name, doc, want string
	}{
		{"http token url", `{"provider":{"grant":"client_credentials","token_url":"http://auth.example.com/t","client_id":"c","client_secret":"` + secret + `"}}`,
			"provider.token_url: must use https"},
		{"type error", `{"provider":{"grant":"client_credentials","client_secret":"` + secret + `"},"generation":"7"}`,
			"generation: want a whole number, got a string"},
		{"truncated JSON", `{"provider":{"client_secret":"` + secret + `"`, "document: line 1, column 63: the JSON ends too early"},
		{"syntax error with position", "{\n  \"provider\": {\n    \"grant\": \"refresh_token\",\n    \"client_secret\" \"" + secret + "\"\n  }\n}",
			"document: line 4, column 21: invalid JSON: want : after a field name"},
		{"trailing data", `{"provider":{}} {"x":"` + secret + `"}`, "document: line 1, column 17: something follows the document's closing }"},
		{"not an object", `["` + secret + `"]`, "document: want a JSON object, got array"},
		{"field given twice", "{\"provider\": {\"grant\": \"client_credentials\", \"token_url\": \"https://a.example/t\",\n  \"client_id\": \"c\", \"client_secret\": \"" + secret + "\",\n  \"client_secret\": \"x\"}}",
			"provider.client_secret: given twice (again on line 3)"},
		{"placeholder", `{"provider":{"grant":"client_credentials","token_url":"https://a.example/t","client_id":"REPLACE_ME","client_secret":"` + secret + `"}}`,
			"provider.client_id: still holds the template placeholder"},
		{"missing refresh token", `{"provider":{"grant":"refresh_token","token_url":"https://a.example/t","client_auth":"none"}}`,
			`refresh_token: required for grant "refresh_token"`},
		{"misspelt provider field", form(`"client_id":"c","client_auth":"basic","clientsecret":"` + secret + `"`),
			"provider.clientsecret: unknown field; did you mean provider.client_secret?"},
		{"misspelt refresh token", `{"provider":{"grant":"refresh_token","token_url":"https://a.example/t","client_auth":"none"},"refresh_tokn":"` + secret + `"}`,
			"refresh_tokn: unknown field; did you mean refresh_token?"},
		{"misspelt top-level field", `{"provider":{"grant":"client_credentials","token_url":"https://a.example/t","client_id":"c","client_secret":"x"},"polcy":{"daily_limit":5}}`,
			"polcy: unknown field; did you mean policy?"},
		{"provider field at the top level", `{"provider":{"grant":"refresh_token","token_url":"https://a.example/t","client_id":"c"},"client_secret":"` + secret + `"` + rt + `}`,
			"client_secret: unknown field; did you mean provider.client_secret?"},
		{"basic auth without secret", form(`"client_id":"c","client_auth":"basic"`),
			`provider.client_secret: required for client_auth "basic"`},
		{"body auth without secret", form(`"client_id":"c","client_auth":"body"`),
			`provider.client_secret: required for client_auth "body"`},
		{"credentials expired", `{"provider":{"grant":"sahamati_entity","token_url":"https://api.sahamati.org.in/iam/v1/entity/token/generate","entity_id":"e","entity_secret":"` + secret + `","credentials_expire_at":"2026-11-21T00:00:00Z"}}`,
			"provider.credentials_expire_at: in the past"},
		{"write budget too large", `{"provider":{"grant":"client_credentials","token_url":"https://a.example/t","client_id":"c","client_secret":"` + secret + `"},"policy":{"max_writes_per_day":500}}`,
			"policy.max_writes_per_day: want"},
		{"authorized_at not a time", `{"provider":{"grant":"client_credentials","token_url":"https://a.example/t","client_id":"c","client_secret":"` + secret + `"},"authorized_at":"now"}`,
			"authorized_at: want an RFC 3339 time"},
		{"misspelt authorized_at", `{"provider":{"grant":"client_credentials","token_url":"https://a.example/t","client_id":"c","client_secret":"` + secret + `"},"authorised_at":"2026-11-22T00:00:00Z"}`,
			"authorised_at: unknown field; did you mean authorized_at?"},
		{"authorize url not https", form(`"client_auth":"none","authorize_url":"http://auth.example.com/authorize"`),
			"provider.authorize_url: must be an absolute https URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCLI(t, nil, nil)
			if code := c.run("validate", "--file", writeFile(t, "doc.json", tt.doc)); code != exitInvalid {
				t.Errorf("exit: got %d, want %d", code, exitInvalid)
			}
			if !strings.Contains(c.err.String(), tt.want) {
				t.Errorf("stderr: got %q, want it to contain %q", c.err.String(), tt.want)
			}
			assertNoSecrets(t, []string{secret, "ecret\""}, c.out.String(), c.err.String())
		})
	}
	c := newCLI(t, nil, nil)
	if code := c.run("validate"); code != exitFail || !strings.Contains(c.err.String(), "--file is required") {
		t.Errorf("validate without --file: exit %d, stderr %q", code, c.err.String())
	}
	c.stdin = strings.Repeat(" ", maxDocument+1)
	if code := c.run("validate", "--file", "-"); code != exitFail || !strings.Contains(c.err.String(), "larger than") {
		t.Errorf("oversized document: exit %d, stderr %q", code, c.err.String())
	}
}

// Valid documents pass with notes on stderr: explanations and warnings, never values.
func TestValidateNotes(t *testing.T) {
	const secret = "es-validate-notes-never-print-2"
	tests := []struct {
		name, doc string
		want      []string
		not       []string
	}{
		{"reuse grace explained, extensions silent", `{"provider":{"grant":"refresh_token","token_url":"https://a.example/t","client_id":"c","client_secret":"` + secret + `",
			"client_auth":"basic","reuse_grace":"60s","x_team":"payments"},"refresh_token":"` + secret + `","x_note":"hi"}`,
			[]string{"provider.reuse_grace is informational", "changes neither when nor how often"}, []string{"x_team", "x_note"}},
		{"unknown field kept with a warning", `{"provider":{"grant":"client_credentials","token_url":"https://a.example/t","client_id":"c","client_secret":"` + secret + `"},"owner_team":"payments","status_note":"x"}`,
			[]string{"warning: owner_team: unknown field, kept as it is and used by nothing", "warning: status_note: unknown field"}, nil},
		{"credentials expire soon, unused field", `{"provider":{"grant":"sahamati_entity","token_url":"https://api.sahamati.org.in/iam/v1/entity/token/generate","entity_id":"e","entity_secret":"` + secret + `",
			"credentials_expire_at":"2026-11-25T00:00:00Z","client_id":"c"}}`,
			[]string{"warning: provider.credentials_expire_at: the entity secret expires in 72h", `warning: provider.client_id: not used by grant "sahamati_entity"`}, nil},
		{"a live copy: the refresher's own fields are known", `{"provider":{"grant":"client_credentials","token_url":"https://a.example/t","client_id":"c","client_secret":"` + secret + `"},
			"generation":3,"status":"active","version_id":"v3","base_version_id":"v2","seen_refresh_tokens":["0123456789abcdef"]}`,
			nil, []string{"unknown field", "seen_refresh_tokens"}},
		{"authorized_at is known; one in the future is warned of", `{"provider":{"grant":"client_credentials","token_url":"https://a.example/t","client_id":"c","client_secret":"` + secret + `"},
			"authorized_at":"2026-11-23T00:00:00Z"}`,
			[]string{"warning: authorized_at: in the future"}, []string{"unknown field"}},
		{"authorized_at now: no warning", `{"provider":{"grant":"client_credentials","token_url":"https://a.example/t","client_id":"c","client_secret":"` + secret + `"},
			"authorized_at":"2026-11-22T00:04:00Z"}`,
			nil, []string{"authorized_at", "unknown field"}},
		{"no credential expiry", `{"provider":{"grant":"sahamati_entity","token_url":"https://api.sahamati.org.in/iam/v1/entity/token/generate","entity_id":"e","entity_secret":"` + secret + `"}}`,
			[]string{"warning: provider.credentials_expire_at: absent"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCLI(t, nil, nil)
			c.mustRun("validate", "--file", writeFile(t, "doc.json", tt.doc))
			for _, w := range tt.want {
				if !strings.Contains(c.err.String(), w) {
					t.Errorf("stderr: got %q, want it to contain %q", c.err.String(), w)
				}
			}
			for _, n := range tt.not {
				if strings.Contains(c.err.String(), n) {
					t.Errorf("stderr: got %q, want no mention of %q", c.err.String(), n)
				}
			}
			assertNoSecrets(t, []string{secret}, c.out.String(), c.err.String())
		})
	}
}

func TestPosition(t *testing.T) {
	tests := []struct {
		raw          string
		offset       int64
		line, column int
	}{
		{"{x", 2, 1, 2},
		{"{\n  x", 6, 2, 3},
		{"ab\ncd\nef", 7, 3, 1},
		{"", 0, 1, 1},
	}
	for _, tt := range tests {
		if line, col := position([]byte(tt.raw), tt.offset); line != tt.line || col != tt.column {
			t.Errorf("position(%q, %d): got %d:%d, want %d:%d", tt.raw, tt.offset, line, col, tt.line, tt.column)
		}
	}
}

func TestUsage(t *testing.T) {
	tests := []struct {
		args []string
		code int
	}{
		{nil, exitUsage},
		{[]string{"frobnicate"}, exitUsage},
		{[]string{"help"}, exitOK},
		{[]string{"-h"}, exitOK},
		{[]string{"--bogus", "status"}, exitUsage},
		{[]string{"seed"}, exitUsage},
		{[]string{"seed", "a", "b", "--file", "x"}, exitUsage},
		{[]string{"seed", "../escape", "--file", "x"}, exitUsage},
		{[]string{"show"}, exitUsage},
		{[]string{"refresh"}, exitUsage},
		{[]string{"refresh", "acme"}, exitUsage}, // no function configured
		{[]string{"status"}, exitUsage},          // no table configured
		{[]string{"validate", "extra"}, exitUsage},
		{[]string{"template"}, exitUsage},
		{[]string{"policy"}, exitUsage},
		{[]string{"policy", "public"}, exitUsage},
		{[]string{"grant"}, exitUsage},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			c := newCLI(t, nil, nil)
			if code := c.run(tt.args...); code != tt.code {
				t.Errorf("exit: got %d, want %d (stderr %q)", code, tt.code, c.err.String())
			}
		})
	}
}

func TestParseInterspersed(t *testing.T) {
	tests := []struct {
		args     []string
		wantPos  []string
		wantFile string
		wantJSON bool
	}{
		{[]string{"acme", "--file", "doc.json"}, []string{"acme"}, "doc.json", false},
		{[]string{"--file=doc.json", "acme"}, []string{"acme"}, "doc.json", false},
		{[]string{"a", "--json", "b", "-file", "d"}, []string{"a", "b"}, "d", true},
		{[]string{"a", "--", "--json", "b"}, []string{"a", "--json", "b"}, "", false},
		{nil, nil, "", false},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			file := fs.String("file", "", "")
			asJSON := fs.Bool("json", false, "")
			pos, _, ok := parse(fs, tt.args, "t")
			if !ok {
				t.Fatal("parse failed")
			}
			if !reflect.DeepEqual(pos, tt.wantPos) || *file != tt.wantFile || *asJSON != tt.wantJSON {
				t.Errorf("got pos %q file %q json %v, want %q %q %v", pos, *file, *asJSON, tt.wantPos, tt.wantFile, tt.wantJSON)
			}
		})
	}
}

func TestSettingsFromEnvAndFlags(t *testing.T) {
	env := map[string]string{"SECRET_PREFIX": "env-prefix/", "STATE_TABLE": "env-table", "REFRESHER_FUNCTION": "env-fn",
		"TR_REFRESHER_ROLE_ARN": "arn:aws:iam::111122223333:role/r", "TR_ADMIN_ROLE_ARN": "arn:aws:iam::111122223333:role/a"}
	const r, adm = "arn:aws:iam::111122223333:role/r", "arn:aws:iam::111122223333:role/a"
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want settings
	}{
		{"defaults", nil, nil, settings{prefix: secretname.DefaultPrefix}},
		{"environment", env, nil, settings{"env-prefix/", "env-table", "env-fn", r, adm}},
		{"global flags win", env, []string{"--prefix", "p/", "--table", "t"}, settings{"p/", "t", "env-fn", r, adm}},
		{"command flags win", env, []string{"--table", "t", "X", "--function", "f", "--admin-role-arn", "arn:x"}, settings{"env-prefix/", "t", "f", r, "arn:x"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := &app{stdout: io.Discard, stderr: io.Discard, getenv: func(k string) string { return tt.env[k] }}
			a.opts = a.envSettings()
			g := a.flagSet("g")
			if err := g.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			if rest := g.Args(); len(rest) > 0 {
				if _, _, ok := parse(a.flagSet("x"), rest[1:], "x"); !ok {
					t.Fatal("parse failed")
				}
			}
			if a.opts != tt.want {
				t.Errorf("got %+v, want %+v", a.opts, tt.want)
			}
		})
	}
}

func TestOneLine(t *testing.T) {
	if got := oneLine("a\tb\n  c", 0); got != "a b c" {
		t.Errorf("got %q", got)
	}
	if got := oneLine("ééééé", 3); got != "éé…" {
		t.Errorf("got %q, want a rune-safe cut", got)
	}
}

func TestSortVersions(t *testing.T) {
	t0 := time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)
	vs := []versionView{
		{ID: "a", Stages: []string{"AWSPREVIOUS"}, Created: t0},
		{ID: "b", Stages: []string{}, Created: t0.Add(-time.Hour)},
		{ID: "c", Stages: []string{"AWSCURRENT"}, Created: t0},
		{ID: "d", Stages: []string{"TR_PENDING"}, Created: t0},
		{ID: "e", Stages: []string{}, Created: t0.Add(time.Hour)},
	}
	sortVersions(vs)
	var got []string
	for _, v := range vs {
		got = append(got, v.ID)
	}
	if want := "e,c,d,a,b"; strings.Join(got, ",") != want {
		t.Errorf("got %v, want %s", got, want)
	}
}
