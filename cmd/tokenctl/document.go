package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/seed-502fa48b/token-refresher/pkg/token"
)

// placeholder marks what an operator must fill in a template.
const placeholder = "REPLACE_ME"

// findPlaceholder returns the first field (sorted, dotted path) of the parsed document
// whose string value holds the placeholder, or "" when none does.
func findPlaceholder(doc map[string]any) string {
	var found []string
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch v := v.(type) {
		case string:
			if strings.Contains(v, placeholder) {
				found = append(found, path)
			}
		case map[string]any:
			for k, child := range v {
				if path != "" {
					k = path + "." + k
				}
				walk(k, child)
			}
		case []any:
			for i, child := range v {
				walk(fmt.Sprintf("%s[%d]", path, i), child)
			}
		}
	}
	walk("", doc)
	if len(found) == 0 {
		return ""
	}
	sort.Strings(found)
	return found[0]
}

// compact is the stored form of what the operator wrote: same fields and values, no
// layout.
func compact(raw []byte) ([]byte, error) {
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// summary describes a valid document in one line, without secrets.
func summary(p *token.Private) string {
	v := p.Provider
	parts := []string{"grant " + v.Grant}
	if v.Grant == token.GrantRefreshToken {
		body := v.Body
		if body == "" {
			body = token.BodyForm
		}
		parts = append(parts, "body "+body)
	}
	if v.ClientAuth != "" {
		parts = append(parts, "client_auth "+v.ClientAuth)
	}
	parts = append(parts, "token_url "+v.TokenURL)
	if q, ok := p.Quota(); ok {
		parts = append(parts, fmt.Sprintf("quota %s %d/day (%s)", q.Key, q.Limit, q.Location))
	} else {
		parts = append(parts, "no quota")
	}
	parts = append(parts, "status "+p.Status)
	return strings.Join(parts, ", ")
}

// templates are the starter documents `tokenctl template GRANT` prints, with hints for
// stderr so that `tokenctl template X > doc.json` leaves clean JSON.
var templates = map[string]struct{ doc, hint string }{
	"refresh_token": {
		doc: `{
  "provider": {
    "grant": "refresh_token",
    "body": "form",
    "token_url": "https://REPLACE_ME/oauth2/token",
    "client_id": "REPLACE_ME",
    "client_secret": "REPLACE_ME",
    "client_auth": "basic",
    "scope": "offline_access REPLACE_ME",
    "reuse_grace": "60s",
    "default_expires_in": "15m"
  },
  "refresh_token": "REPLACE_ME"
}
`,
		hint: `RFC 6749 refresh with rotating single-use refresh tokens (form body).
client_auth: basic (HTTP Basic), body (client_id/client_secret in the form) or none (delete client_secret).
scope: what the refresh token was authorised for, e.g. "offline_access fund.read target:b/<business>"; delete it to send none.
reuse_grace: how long the provider still accepts a refresh token after use, if it documents one (informational).
To get the first refresh token, leave refresh_token as it is and run: tokenctl authorize NAME --file DOC --business CODE
(add "authorize_url" to provider if the provider publishes no OAuth metadata).`,
	},
	"refresh_token-json": {
		doc: `{
  "provider": {
    "grant": "refresh_token",
    "body": "json",
    "token_url": "https://api.vault.ist/v2.0/reference/gettoken",
    "client_auth": "none",
    "default_expires_in": "24h"
  },
  "refresh_token": "REPLACE_ME"
}
`,
		hint: `vault.ist: {"grant_type":"refresh_token","refresh_token":…} as a JSON body; 24 h access tokens.
Check token_url against your vault.ist environment.`,
	},
	"client_credentials": {
		doc: `{
  "provider": {
    "grant": "client_credentials",
    "token_url": "https://REPLACE_ME/oauth2/token",
    "client_id": "REPLACE_ME",
    "client_secret": "REPLACE_ME",
    "client_auth": "basic",
    "scope": "REPLACE_ME",
    "default_expires_in": "1h"
  }
}
`,
		hint: `RFC 6749 §4.4 client credentials. client_auth: basic or body. Delete scope if the provider needs none.
To cap requests a day add "policy": {"daily_limit": N, "quota_timezone": "UTC"}.`,
	},
	"sahamati_entity": {
		doc: `{
  "provider": {
    "grant": "sahamati_entity",
    "token_url": "https://api.sahamati.org.in/iam/v1/entity/token/generate",
    "entity_id": "REPLACE_ME",
    "entity_secret": "REPLACE_ME",
    "credentials_expire_at": "REPLACE_ME",
    "default_expires_in": "24h"
  }
}
`,
		hint: `Sahamati Token Service (production URL; UAT is https://api.uat.sahamati.org.in/iam/v1/entity/token/generate).
credentials_expire_at: when the entity secret expires (60 days after its reset), RFC 3339, e.g. 2027-01-20T00:00:00Z.
Quota: 300 requests a day per entity id, counted in Asia/Kolkata days, shared by every token of the entity.`,
	},
}

func templateNames() []string {
	names := make([]string, 0, len(templates))
	for n := range templates {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func (a *app) template(args []string) int {
	fs := a.flagSet("template")
	pos, code, ok := parse(fs, args, "template GRANT")
	if !ok {
		return code
	}
	if len(pos) != 1 {
		a.errorf("template", "want one GRANT: %s", strings.Join(templateNames(), ", "))
		return exitUsage
	}
	t, found := templates[pos[0]]
	if !found {
		a.errorf("template", "unknown grant %q; want one of %s", pos[0], strings.Join(templateNames(), ", "))
		return exitUsage
	}
	fmt.Fprint(a.stdout, t.doc)
	fmt.Fprintf(a.stderr, "%s\nReplace every %s, then: tokenctl validate --file DOC && tokenctl seed NAME --file DOC\n", t.hint, placeholder)
	return exitOK
}

// printNotes writes checkDocument's warnings and explanations to stderr.
func (a *app) printNotes(cmd string, notes []string) {
	for _, n := range notes {
		fmt.Fprintf(a.stderr, "tokenctl %s: %s\n", cmd, n)
	}
}

func (a *app) validate(args []string) int {
	fs := a.flagSet("validate")
	file := fs.String("file", "", "the private document (- for stdin)")
	pos, code, ok := parse(fs, args, "validate --file DOC.json")
	if !ok {
		return code
	}
	if len(pos) != 0 {
		a.errorf("validate", "unexpected arguments %q", pos)
		return exitUsage
	}
	raw, err := a.readDocument(*file)
	if err != nil {
		a.errorf("validate", "%v", err)
		return exitFail
	}
	p, notes, err := checkDocument(raw, a.now())
	if err != nil {
		a.errorf("validate", "invalid document: %v", err)
		return exitInvalid
	}
	a.printNotes("validate", notes)
	fmt.Fprintf(a.stdout, "valid: %s\n", summary(p))
	return exitOK
}
