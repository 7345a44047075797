package token_test

import (
	"encoding/json"
	"errors"
	"slices"
	"testing"

	"github.com/seed-502fa48b/token-refresher/pkg/token"
)

// A valid value of each kind, and one ParsePrivate must refuse.
var kindValues = map[token.Kind]struct{ good, bad any }{
	token.KindString:   {"text", map[string]any{}},
	token.KindSecret:   {"secret-value", []any{}},
	token.KindTime:     {"2027-01-20T00:00:00Z", "tomorrow"},
	token.KindDuration: {"60s", "sixty seconds"},
	token.KindInt:      {7, "7"},
	token.KindStrings:  {[]any{"a"}, "a"},
	token.KindObject:   {map[string]any{}, "x"},
}

func docWith(f token.Field, v any) map[string]any {
	doc := map[string]any{}
	if f.Section == token.SectionTop {
		doc[f.Name] = v
		return doc
	}
	doc[string(f.Section)] = map[string]any{f.Name: v}
	return doc
}

// The table and the parser agree: every field in the table is one ParsePrivate reads with
// the kind the table gives (a wrong value is refused, naming the field), and Marshal writes
// nothing the table lacks.
func TestFieldTable(t *testing.T) {
	full := map[string]any{"provider": map[string]any{}, "policy": map[string]any{}}
	for _, f := range token.Fields() {
		t.Run(f.Path(), func(t *testing.T) {
			vals, ok := kindValues[f.Kind]
			if !ok {
				t.Fatalf("kind %d: no test values", f.Kind)
			}
			raw, _ := json.Marshal(docWith(f, vals.bad))
			_, err := token.ParsePrivate(raw)
			var fe *token.FieldError
			if !errors.As(err, &fe) || fe.Field != f.Path() {
				t.Errorf("wrong kind of value: got %v, want an error naming %s (a field the parser does not know keeps any value)", err, f.Path())
			}
			raw, _ = json.Marshal(docWith(f, vals.good))
			if _, err := token.ParsePrivate(raw); err != nil {
				t.Errorf("right kind of value: got %v, want nil", err)
			}
		})
		if f.Kind != token.KindObject {
			if f.Section == token.SectionTop {
				full[f.Name] = kindValues[f.Kind].good
			} else {
				full[string(f.Section)].(map[string]any)[f.Name] = kindValues[f.Kind].good
			}
		}
	}
	raw, _ := json.Marshal(full)
	p := mustParse(t, raw)
	if got := p.Extra(); len(got) != 0 {
		t.Errorf("every known field set: Extra got %v, want none", got)
	}
	out, err := p.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	var written map[string]json.RawMessage
	if err := json.Unmarshal(out, &written); err != nil {
		t.Fatal(err)
	}
	for _, s := range token.Sections() {
		obj := written
		if s != token.SectionTop {
			obj = nil
			if err := json.Unmarshal(written[string(s)], &obj); err != nil {
				t.Fatalf("%s: %v", s, err)
			}
		}
		for k := range obj {
			if _, ok := token.LookupField(s, k); !ok {
				t.Errorf("Marshal writes %s.%s, which the field table lacks", s, k)
			}
		}
		for _, f := range token.FieldsIn(s) {
			if _, ok := obj[f.Name]; !ok {
				t.Errorf("Marshal drops %s", f.Path())
			}
		}
	}
}

func TestFieldUsedBy(t *testing.T) {
	tests := []struct {
		field, grant string
		want         bool
	}{
		{"authorize_url", token.GrantRefreshToken, true},
		{"authorize_url", token.GrantClientCredentials, false},
		{"client_secret", token.GrantClientCredentials, true},
		{"client_secret", token.GrantSahamatiEntity, false},
		{"entity_secret", token.GrantSahamatiEntity, true},
		{"reuse_grace", token.GrantClientCredentials, false},
		{"token_url", token.GrantSahamatiEntity, true},
	}
	for _, tt := range tests {
		t.Run(tt.field+"/"+tt.grant, func(t *testing.T) {
			f, ok := token.LookupField(token.SectionProvider, tt.field)
			if !ok {
				t.Fatalf("provider.%s: not in the table", tt.field)
			}
			if got := f.UsedBy(tt.grant); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
	// Fields hands out copies: changing one does not change the table.
	fs := token.Fields()
	for i := range fs {
		fs[i].Grants = append(fs[i].Grants[:0:0], "changed")
	}
	if f, _ := token.LookupField(token.SectionProvider, "token_url"); slices.Contains(f.Grants, "changed") {
		t.Error("Fields returned the table itself")
	}
}
