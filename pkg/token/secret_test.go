package token_test

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/seed-502fa48b/token-refresher/pkg/token"
)

const rawSecret = "sk-live-0123456789abcdefRAW"

// leaks reports whether out carries the raw value in any of the spellings a formatter
// could produce (plain, hex either case, the underlying bytes as numbers).
func leaks(out string) bool {
	bs := []byte(rawSecret)
	return strings.Contains(out, rawSecret) ||
		strings.Contains(strings.ToLower(out), hex.EncodeToString(bs)) ||
		strings.Contains(out, fmt.Sprint(bs)) ||
		strings.Contains(out, "0123456789abcdef")
}

type holder struct {
	Name   string
	Token  token.Secret
	Nested struct{ Refresh token.Secret }
	Ptr    *token.Secret
	List   []token.Secret
	ByName map[string]token.Secret
}

func newHolder() holder {
	s := token.Secret(rawSecret)
	h := holder{Name: "acme", Token: s, Ptr: &s, List: []token.Secret{s}, ByName: map[string]token.Secret{"rt": s}}
	h.Nested.Refresh = s
	return h
}

func TestSecretFmt(t *testing.T) {
	s := token.Secret(rawSecret)
	h := newHolder()
	tests := []struct {
		name string
		out  string
	}{
		{"%v", fmt.Sprintf("%v", s)},
		{"%+v", fmt.Sprintf("%+v", s)},
		{"%#v", fmt.Sprintf("%#v", s)},
		{"%s", fmt.Sprintf("%s", s)},
		{"%q", fmt.Sprintf("%q", s)},
		{"%x", fmt.Sprintf("%x", s)},
		{"%X", fmt.Sprintf("%X", s)},
		{"% x", fmt.Sprintf("% x", s)},
		{"%d", fmt.Sprintf("%d", s)},
		{"%10.3s", fmt.Sprintf("%10.3s", s)},
		{"Sprint", fmt.Sprint(s)},
		{"Sprintln", fmt.Sprintln("token", s)},
		{"String", s.String()},
		{"GoString", s.GoString()},
		{"pointer %v", fmt.Sprintf("%v", &s)},
		{"pointer %s", fmt.Sprintf("%s", &s)},
		{"struct %v", fmt.Sprintf("%v", h)},
		{"struct %+v", fmt.Sprintf("%+v", h)},
		{"struct %#v", fmt.Sprintf("%#v", h)},
		{"struct %s", fmt.Sprintf("%s", h)},
		{"struct %x", fmt.Sprintf("%x", h)},
		{"struct pointer %+v", fmt.Sprintf("%+v", &h)},
		{"slice %q", fmt.Sprintf("%q", []token.Secret{s, s})},
		{"map %v", fmt.Sprintf("%v", map[token.Secret]string{s: "k"})},
		{"any slice %v", fmt.Sprintf("%v", []any{s, h})},
		{"errors.New(Sprintf)", errors.New(fmt.Sprintf("refresh failed for %s: %v", "acme", s)).Error()},
		{"fmt.Errorf %w chain", fmt.Errorf("outer: %w", fmt.Errorf("inner %v %+v", s, h)).Error()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if leaks(tt.out) {
				t.Errorf("output leaks the secret: %s", tt.out)
			}
			if !strings.Contains(tt.out, "[redacted]") {
				t.Errorf("output %q lacks [redacted]", tt.out)
			}
		})
	}
}

func TestSecretRecoveredPanic(t *testing.T) {
	out := func() (out string) {
		defer func() { out = fmt.Sprint(recover()) }()
		panic(token.Secret(rawSecret))
	}()
	if leaks(out) || out != "[redacted]" {
		t.Errorf("recovered panic value printed %q, want [redacted]", out)
	}
}

func TestSecretJSON(t *testing.T) {
	h := newHolder()
	tests := []struct {
		name string
		v    any
	}{
		{"value", token.Secret(rawSecret)},
		{"struct", h},
		{"struct pointer", &h},
		// Not covered: a Secret as a map KEY — encoding/json writes string-kinded keys
		// directly, before MarshalText — and a Secret in an UNEXPORTED struct field, which
		// fmt prints by reflection without calling Format. Neither is used anywhere.
		{"private document", mustParse(t, []byte(`{"provider":{"grant":"client_credentials","client_secret":"`+rawSecret+`"},"refresh_token":"`+rawSecret+`","access_token":"`+rawSecret+`"}`))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := json.Marshal(tt.v)
			if err != nil {
				t.Fatal(err)
			}
			if leaks(string(out)) || !bytes.Contains(out, []byte(`"[redacted]"`)) {
				t.Errorf("json.Marshal: got %s, want the value as \"[redacted]\"", out)
			}
			if !json.Valid(out) {
				t.Errorf("json.Marshal: invalid JSON %s", out)
			}
		})
	}
}

func TestSecretSlog(t *testing.T) {
	s := token.Secret(rawSecret)
	h := newHolder()
	handlers := map[string]func(*bytes.Buffer) slog.Handler{
		"json": func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) },
		"text": func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) },
	}
	calls := map[string]func(*slog.Logger){
		"attribute":      func(l *slog.Logger) { l.Info("refresh", "token", s) },
		"slog.Any":       func(l *slog.Logger) { l.Info("refresh", slog.Any("token", s)) },
		"group":          func(l *slog.Logger) { l.Info("refresh", slog.Group("provider", slog.Any("client_secret", s))) },
		"With":           func(l *slog.Logger) { l.With("token", s).WithGroup("g").Info("refresh", "inner", s) },
		"struct":         func(l *slog.Logger) { l.Info("refresh", "holder", h) },
		"struct pointer": func(l *slog.Logger) { l.Info("refresh", "holder", &h) },
		"private document": func(l *slog.Logger) {
			l.Info("refresh", "doc", mustParse(t, []byte(`{"refresh_token":"`+rawSecret+`"}`)))
		},
		"message":         func(l *slog.Logger) { l.Info(fmt.Sprintf("refresh %v", s)) },
		"error attribute": func(l *slog.Logger) { l.Error("refresh", "error", fmt.Errorf("provider said no to %v", s)) },
	}
	for hname, mk := range handlers {
		for cname, call := range calls {
			t.Run(hname+"/"+cname, func(t *testing.T) {
				var buf bytes.Buffer
				call(slog.New(mk(&buf)))
				if buf.Len() == 0 {
					t.Fatal("nothing logged")
				}
				if leaks(buf.String()) {
					t.Errorf("log line leaks the secret: %s", buf.String())
				}
				if !strings.Contains(buf.String(), "[redacted]") {
					t.Errorf("log line lacks [redacted]: %s", buf.String())
				}
			})
		}
	}
}

func TestSecretReveal(t *testing.T) {
	s := token.Secret(rawSecret)
	if got := s.Reveal(); got != rawSecret {
		t.Errorf("Reveal: got %q, want the raw value", got)
	}
	if s.IsZero() {
		t.Error("IsZero: got true for a set value")
	}
	if !token.Secret("").IsZero() {
		t.Error("IsZero: got false for the empty value")
	}
	text, err := s.MarshalText()
	if err != nil || string(text) != "[redacted]" {
		t.Errorf("MarshalText: got %q, %v", text, err)
	}
	if got := s.LogValue().String(); got != "[redacted]" {
		t.Errorf("LogValue: got %q", got)
	}
}
