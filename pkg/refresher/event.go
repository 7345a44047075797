package refresher

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/seed-502fa48b/token-refresher/pkg/invocation"
)

// ParseRequest accepts an EventBridge scheduled event (rule or Scheduler) or an empty object
// (a reconcile), {"sweep":true}, {"ensure":[…]} or {"tokens":[…],"force":bool} (docs/design.md §5).
// Anything else is an error that names the field, never the payload itself.
func ParseRequest(raw []byte) (Request, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return Request{}, nil
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return Request{}, errors.New("refresher: event: want a JSON object")
	}
	if len(fields) == 0 {
		return Request{}, nil
	}
	if dt, ok := fields["detail-type"]; ok {
		var detailType, source string
		_ = json.Unmarshal(dt, &detailType)
		_ = json.Unmarshal(fields["source"], &source)
		if detailType == "Scheduled Event" && (source == "aws.events" || source == "aws.scheduler") {
			return Request{}, nil
		}
		return Request{}, fmt.Errorf("refresher: event: unknown event (detail-type %q, source %q); want a scheduled event, {\"sweep\":true}, {\"ensure\":[…]} or {\"tokens\":[…]}", clip(detailType), clip(source))
	}
	var req Request
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return Request{}, fmt.Errorf("refresher: event: unknown event shape (%s); want {\"sweep\":true}, {\"ensure\":[\"name\"]} or {\"tokens\":[\"name\"],\"force\":true}", describeDecodeError(err))
	}
	_, hasTokens := fields["tokens"]
	_, hasEnsure := fields["ensure"]
	_, hasSweep := fields["sweep"]
	kinds := 0
	for _, b := range []bool{hasTokens, hasEnsure, hasSweep} {
		if b {
			kinds++
		}
	}
	switch {
	case kinds == 0:
		return Request{}, errors.New("refresher: event: tokens: required in a direct invoke")
	case kinds > 1:
		return Request{}, errors.New("refresher: event: give only one of tokens, ensure or sweep")
	case hasSweep && !req.Sweep:
		return Request{}, errors.New("refresher: event: sweep: want true")
	case req.Force && !hasTokens:
		return Request{}, errors.New("refresher: event: force: only with tokens (an operator's invoke)")
	case hasSweep:
		return req, nil
	case hasEnsure:
		return req, checkNames("ensure", req.Ensure)
	}
	return req, checkNames("tokens", req.Tokens)
}

func checkNames(field string, names []string) error {
	if len(names) == 0 {
		return fmt.Errorf("refresher: event: %s: want at least one name", field)
	}
	seen := map[string]bool{}
	for i, name := range names {
		if !invocation.ValidName(name) {
			return fmt.Errorf("refresher: event: %s[%d]: not a valid token name", field, i)
		}
		if seen[name] {
			return fmt.Errorf("refresher: event: %s[%d]: %q named twice", field, i, name)
		}
		seen[name] = true
	}
	return nil
}

// describeDecodeError names the field without echoing values.
func describeDecodeError(err error) string {
	var typeErr *json.UnmarshalTypeError
	if errors.As(err, &typeErr) {
		return fmt.Sprintf("%s: want %s", typeErr.Field, typeErr.Type)
	}
	// encoding/json says `json: unknown field "name"`.
	if _, rest, ok := strings.Cut(err.Error(), `unknown field "`); ok {
		if name, _, ok := strings.Cut(rest, `"`); ok && len(name) <= 64 {
			return "unknown field " + name
		}
	}
	return "not the expected JSON"
}

func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
