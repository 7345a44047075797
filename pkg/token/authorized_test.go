package token_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/seed-502fa48b/token-refresher/pkg/token"
)

// authorized_at is read, written back at full precision (two authorisations within one
// second stay ordered), omitted when zero and kept by Clone.
func TestAuthorizedAtRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		in   any // the JSON value of authorized_at; nil: absent
		want time.Time
		out  string // what Marshal writes; "": omitted
	}{
		{"absent", nil, time.Time{}, ""},
		{"null", json.RawMessage("null"), time.Time{}, ""},
		{"seconds", "2026-12-05T10:00:00Z", mustTime(t, "2026-12-05T10:00:00Z"), "2026-12-05T10:00:00Z"},
		{"offset written in UTC", "2026-12-05T15:30:00+05:30", mustTime(t, "2026-12-05T10:00:00Z"), "2026-12-05T10:00:00Z"},
		{"nanoseconds kept", "2026-12-05T10:00:00.123456789Z", mustTime(t, "2026-12-05T10:00:00.123456789Z"), "2026-12-05T10:00:00.123456789Z"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := map[string]any{"provider": map[string]any{"grant": "client_credentials"}}
			if tt.in != nil {
				doc["authorized_at"] = tt.in
			}
			raw, err := json.Marshal(doc)
			if err != nil {
				t.Fatal(err)
			}
			p := mustParse(t, raw)
			if !p.AuthorizedAt.Equal(tt.want) {
				t.Errorf("AuthorizedAt: got %v, want %v", p.AuthorizedAt, tt.want)
			}
			if got := p.Extra(); len(got) != 0 {
				t.Errorf("Extra: got %v, want none (authorized_at is a known field)", got)
			}
			out, err := p.Clone().Marshal()
			if err != nil {
				t.Fatal(err)
			}
			var written map[string]json.RawMessage
			if err := json.Unmarshal(out, &written); err != nil {
				t.Fatal(err)
			}
			got, present := written["authorized_at"]
			switch {
			case tt.out == "" && present:
				t.Errorf("Marshal: got authorized_at %s, want it omitted", got)
			case tt.out != "" && string(got) != `"`+tt.out+`"`:
				t.Errorf("Marshal: got authorized_at %s, want %q", got, tt.out)
			}
			if back := mustParse(t, out); !back.AuthorizedAt.Equal(tt.want) {
				t.Errorf("parsed back: got %v, want %v", back.AuthorizedAt, tt.want)
			}
		})
	}
}

// A rewrite that changes other fields (as every refresh does) keeps authorized_at, and a
// change to a clone's authorized_at leaves the original alone.
func TestAuthorizedAtKeptByClone(t *testing.T) {
	at := mustTime(t, "2026-12-05T10:00:00.5Z")
	p := mustParse(t, []byte(`{"provider":{"grant":"refresh_token","token_url":"https://auth.example.com/t"},"refresh_token":"rt-1","authorized_at":"2026-12-05T10:00:00.5Z"}`))
	c := p.Clone()
	c.RefreshToken, c.Generation = "rt-2", 1
	out, err := c.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if got := mustParse(t, out).AuthorizedAt; !got.Equal(at) {
		t.Errorf("after a rotation: got authorized_at %v, want %v", got, at)
	}
	c.AuthorizedAt = at.Add(time.Hour)
	if !p.AuthorizedAt.Equal(at) {
		t.Errorf("changing the clone changed the original: got %v, want %v", p.AuthorizedAt, at)
	}
}

func TestNewAuthorizationOver(t *testing.T) {
	t0 := mustTime(t, "2026-12-05T10:00:00Z")
	doc := func(at time.Time) *token.Private { return &token.Private{AuthorizedAt: at} }
	tests := []struct {
		name      string
		doc       *token.Private
		committed *token.Private
		want      bool
	}{
		{"nothing committed", doc(time.Time{}), nil, true},
		{"nothing committed, marked", doc(t0), nil, true},
		{"neither marked (an old copy of an unmarked chain)", doc(time.Time{}), doc(time.Time{}), false},
		{"marked over unmarked", doc(t0), doc(time.Time{}), true},
		{"unmarked over marked (a copy from before marking)", doc(time.Time{}), doc(t0), false},
		{"same time (a copy of any of our versions)", doc(t0), doc(t0), false},
		{"earlier (a replayed onboarding file)", doc(t0.Add(-48 * time.Hour)), doc(t0), false},
		{"one nanosecond later", doc(t0.Add(time.Nanosecond)), doc(t0), true},
		{"later (a new authorisation)", doc(t0.Add(time.Minute)), doc(t0), true},
		{"same instant in another zone", doc(t0.In(time.FixedZone("IST", 5*3600+1800))), doc(t0), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.doc.NewAuthorizationOver(tt.committed); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}
