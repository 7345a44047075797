package token

import (
	"encoding/json"
	"strings"
	"time"
)

// object reads one JSON object and hands out its fields by name with typed getters that
// name the field on error; what is not taken stays in rest.
type object struct {
	path string
	rest map[string]json.RawMessage
	err  error
}

func newObject(path string, raw []byte) (*object, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil || m == nil {
		name := path
		if name == "" {
			name = "document"
		}
		return nil, fieldErr(name, "want a JSON object")
	}
	return &object{path: path, rest: m}, nil
}

func (o *object) name(key string) string {
	if o.path == "" {
		return key
	}
	return o.path + "." + key
}

func (o *object) take(key string) (json.RawMessage, bool) {
	raw, ok := o.rest[key]
	if !ok {
		return nil, false
	}
	delete(o.rest, key)
	if string(raw) == "null" {
		return nil, false
	}
	return raw, true
}

func (o *object) fail(err error) {
	if o.err == nil {
		o.err = err
	}
}

func (o *object) str(key string) string {
	raw, ok := o.take(key)
	if !ok {
		return ""
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		o.fail(fieldErr(o.name(key), "want a string, got %s", kind(raw)))
	}
	return s
}

func (o *object) secret(key string) Secret { return Secret(o.str(key)) }

func (o *object) strings(key string) []string {
	raw, ok := o.take(key)
	if !ok {
		return nil
	}
	var out []string
	if err := json.Unmarshal(raw, &out); err != nil {
		o.fail(fieldErr(o.name(key), "want a list of strings"))
		return nil
	}
	return out
}

func (o *object) int64(key string) int64 {
	raw, ok := o.take(key)
	if !ok {
		return 0
	}
	var n int64
	if err := json.Unmarshal(raw, &n); err != nil {
		o.fail(fieldErr(o.name(key), "want a whole number, got %s", kind(raw)))
	}
	return n
}

func (o *object) time(key string) time.Time {
	s := o.str(key)
	if s == "" {
		return time.Time{}
	}
	t, err := time.Parse(time.RFC3339, s)
	// Years outside 0000–9999 in UTC would be written back in a form RFC 3339 rejects.
	if y := t.UTC().Year(); err != nil || y < 1 || y > 9999 {
		o.fail(fieldErr(o.name(key), "want an RFC 3339 time like 2027-01-20T00:00:00Z"))
	}
	return t
}

func (o *object) duration(key string) time.Duration {
	s := o.str(key)
	if s == "" {
		return 0
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		o.fail(fieldErr(o.name(key), "want a duration like \"60s\" or \"13h\""))
	}
	return d
}

func (o *object) child(key string) *object {
	raw, ok := o.take(key)
	if !ok {
		return &object{path: o.name(key), rest: map[string]json.RawMessage{}}
	}
	c, err := newObject(o.name(key), raw)
	if err != nil {
		o.fail(err)
		return &object{path: o.name(key), rest: map[string]json.RawMessage{}}
	}
	return c
}

// kind names a JSON value's type for error messages without quoting the value.
func kind(raw json.RawMessage) string {
	s := strings.TrimSpace(string(raw))
	switch {
	case s == "":
		return "nothing"
	case s[0] == '"':
		return "a string"
	case s[0] == '{':
		return "an object"
	case s[0] == '[':
		return "an array"
	case s == "true" || s == "false":
		return "a boolean"
	default:
		return "a number"
	}
}

// fields collects a JSON object: known fields set when non-zero, unknown ones kept.
type fields map[string]any

func (f fields) str(k, v string) {
	if v != "" {
		f[k] = v
	}
}

func (f fields) time(k string, t time.Time) {
	if !t.IsZero() {
		f[k] = t.UTC().Format(time.RFC3339)
	}
}

func (f fields) timeNano(k string, t time.Time) {
	if !t.IsZero() {
		f[k] = t.UTC().Format(time.RFC3339Nano)
	}
}

func (f fields) duration(k string, d time.Duration) {
	if d != 0 {
		f[k] = d.String()
	}
}

func withExtra(f fields, extra map[string]json.RawMessage) fields {
	for k, v := range extra {
		if _, known := f[k]; !known {
			f[k] = v
		}
	}
	return f
}
