package refresher

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
)

// Request is what one invocation asks for: every due token (scheduled) or the named ones.
type Request struct {
	Tokens    []string `json:"tokens,omitempty"`
	Force     bool     `json:"force,omitempty"`
	Scheduled bool     `json:"-"`
}

var tokenName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@+=/-]{0,200}$`)

// ParseRequest accepts an EventBridge scheduled event (rule or Scheduler), an empty object
// (Scheduler's default input), or a direct invoke {"tokens":[…],"force":bool}. Anything
// else is an error that says what it saw, never the payload itself.
func ParseRequest(raw []byte) (Request, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return Request{Scheduled: true}, nil
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return Request{}, fmt.Errorf("refresher: event: want a JSON object")
	}
	if len(fields) == 0 {
		return Request{Scheduled: true}, nil
	}
	if dt, ok := fields["detail-type"]; ok {
		var detailType, source string
		_ = json.Unmarshal(dt, &detailType)
		_ = json.Unmarshal(fields["source"], &source)
		if detailType == "Scheduled Event" && (source == "aws.events" || source == "aws.scheduler") {
			return Request{Scheduled: true}, nil
		}
		return Request{}, fmt.Errorf("refresher: event: unknown event (detail-type %q, source %q); want a scheduled event or {\"tokens\":[…]}", clip(detailType), clip(source))
	}
	var req Request
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return Request{}, fmt.Errorf("refresher: event: unknown event shape (%s); want a scheduled event or {\"tokens\":[\"name\"],\"force\":true}", describeDecodeError(err))
	}
	if _, ok := fields["tokens"]; !ok {
		return Request{}, fmt.Errorf("refresher: event: tokens: required in a direct invoke")
	}
	if len(req.Tokens) == 0 {
		return Request{}, fmt.Errorf("refresher: event: tokens: want at least one name")
	}
	seen := map[string]bool{}
	for i, name := range req.Tokens {
		if !tokenName.MatchString(name) {
			return Request{}, fmt.Errorf("refresher: event: tokens[%d]: not a valid token name", i)
		}
		if seen[name] {
			return Request{}, fmt.Errorf("refresher: event: tokens[%d]: %q named twice", i, name)
		}
		seen[name] = true
	}
	return req, nil
}

// describeDecodeError names the field without echoing values.
func describeDecodeError(err error) string {
	var typeErr *json.UnmarshalTypeError
	if e, ok := err.(*json.UnmarshalTypeError); ok {
		typeErr = e
		return fmt.Sprintf("%s: want %s", typeErr.Field, typeErr.Type)
	}
	msg := err.Error()
	if m := regexp.MustCompile(`unknown field "([^"]{0,64})"`).FindStringSubmatch(msg); m != nil {
		return "unknown field " + m[1]
	}
	return "not the expected JSON"
}

func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
