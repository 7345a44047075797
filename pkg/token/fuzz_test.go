package token_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/seed-502fa48b/token-refresher/pkg/token"
)

// errorVocabulary is every fixed word an error may legitimately contain: field names
// and message text. A value from the input that appears in an error is a leak unless
// it is part of this text (a fuzzed value may happen to equal "provider.token_url").
const errorVocabulary = `document provider policy provider.grant provider.body provider.token_url
provider.client_id provider.client_secret provider.client_auth provider.scope provider.entity_id
provider.entity_secret provider.credentials_expire_at provider.reuse_grace provider.default_expires_in
policy.refresh_margin policy.quota_key policy.daily_limit policy.quota_timezone refresh_token
refresh_expires_at access_token token_type expires_at scope generation status status_reason
want a JSON object; want a string, got a string an object an array a boolean a number nothing;
want a whole number, got; want an RFC 3339 time like 2027-01-20T00:00:00Z;
want a duration like "60s" or "13h"; required: "refresh_token", "client_credentials" or "sahamati_entity";
unknown grant; want "refresh_token", "client_credentials" or "sahamati_entity"; required; not an absolute URL;
must not carry credentials; must use https; "json" is only for grant "refresh_token"; want "form" or "json";
want "basic", "body" or "none"; required for grant "client_credentials"; required for grant "sahamati_entity";
required for grant "refresh_token"; "none" cannot authenticate grant "client_credentials";
required for client_auth "basic"; required for client_auth "body"; must not be negative; must be positive;
want "active" or "needs_reauth"; unknown time zone; required with policy.quota_key;
provider.authorize_url must be an absolute https URL (http only on a loopback host);
(use client_auth "none" for a public client)`

// stringValues returns every string that appears as a value (not as an object key)
// in raw, as far as raw is well-formed JSON.
func stringValues(raw []byte) []string {
	dec := json.NewDecoder(bytes.NewReader(raw))
	// expectKey[i] is true when the next string at depth i is an object key.
	var inObject, expectKey []bool
	var out []string
	for {
		tok, err := dec.Token()
		if err != nil {
			return out
		}
		switch v := tok.(type) {
		case json.Delim:
			switch v {
			case '{', '[':
				inObject = append(inObject, v == '{')
				expectKey = append(expectKey, v == '{')
				continue
			default:
				inObject, expectKey = inObject[:len(inObject)-1], expectKey[:len(expectKey)-1]
			}
		case string:
			if n := len(inObject); n > 0 && inObject[n-1] && expectKey[n-1] {
				expectKey[n-1] = false
				continue
			}
			out = append(out, v)
		}
		// A value ended: the next string in an object is a key again.
		if n := len(inObject); n > 0 && inObject[n-1] {
			expectKey[n-1] = true
		}
	}
}

// checkNoValues fails when msg holds a string value of the input longer than 8 bytes.
func checkNoValues(t *testing.T, what, msg string, values []string) {
	t.Helper()
	for _, v := range values {
		if len(v) > 8 && strings.Contains(msg, v) && !strings.Contains(errorVocabulary, v) {
			t.Fatalf("%s %q contains the input value %q", what, msg, v)
		}
	}
}

func FuzzParsePrivate(f *testing.F) {
	// testdata/fuzz/FuzzParsePrivate holds these documents and malformed variants too;
	// adding the profile files here keeps later edits to them under the fuzz checks.
	for _, name := range profileDocs {
		f.Add(readDoc(f, name))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		values := stringValues(data)
		p, err := token.ParsePrivate(data)
		if err != nil {
			if p != nil {
				t.Fatalf("ParsePrivate returned a document with error %v", err)
			}
			if !errors.Is(err, token.ErrInvalid) {
				t.Fatalf("ParsePrivate error %v is not ErrInvalid", err)
			}
			checkNoValues(t, "ParsePrivate error", err.Error(), values)
			return
		}
		verr := p.Validate()
		if verr != nil {
			if !errors.Is(verr, token.ErrInvalid) {
				t.Fatalf("Validate error %v is not ErrInvalid", verr)
			}
			checkNoValues(t, "Validate error", verr.Error(), values)
		}
		out1, err := p.Marshal()
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		p2, err := token.ParsePrivate(out1)
		if err != nil {
			t.Fatalf("ParsePrivate rejects its own Marshal output: %v\ninput:  %q\noutput: %q", err, data, out1)
		}
		out2, err := p2.Marshal()
		if err != nil {
			t.Fatalf("second Marshal: %v", err)
		}
		if !bytes.Equal(out1, out2) {
			t.Fatalf("Marshal→Parse→Marshal changed the document:\nfirst:  %q\nsecond: %q", out1, out2)
		}
		if v2 := p2.Validate(); errString(v2) != errString(verr) {
			t.Fatalf("Validate changed over a round trip: before %v, after %v", verr, v2)
		}
		if p2.Generation != p.Generation || p2.Status != p.Status || p2.RefreshToken != p.RefreshToken ||
			p2.Provider.ClientSecret != p.Provider.ClientSecret || !p2.ExpiresAt.Equal(p.ExpiresAt.Truncate(time.Second)) {
			t.Fatalf("round trip changed a value: generation %d→%d status %q→%q", p.Generation, p2.Generation, p.Status, p2.Status)
		}
	})
}

func TestStringValues(t *testing.T) {
	raw := []byte(`{"key1":"value1","o":{"k2":["v2",{"k3":"v3"}],"k4":1,"k5":"v5"},"k6":[["v6"]],"k7":"v7"`)
	got := stringValues(raw)
	want := []string{"value1", "v2", "v3", "v5", "v6", "v7"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("got %v, want %v", got, want)
	}
}
