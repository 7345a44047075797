package deploy

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// repoRoot is the directory holding go.mod, found upwards from the test's directory.
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatalf("getwd: %v", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatalf("no go.mod above the test directory")
		}
		dir = parent
	}
}

// loadTemplate returns template.yaml as CloudFormation reads it (short-form tags such as
// !Sub mapped to their long forms), before the SAM transform; loadTransformed (cfn_test.go)
// returns it after. One python3 run produces both (cfn-lint's start-up is slow).
func loadTemplate(t *testing.T) map[string]any {
	t.Helper()
	return loadTemplates(t).decoded
}

// obj walks nested maps by key and fails the test when a step is missing or not a map.
func obj(t *testing.T, v any, path ...string) map[string]any {
	t.Helper()
	cur, ok := v.(map[string]any)
	if !ok {
		t.Fatalf("value at root is %T, want a map", v)
	}
	for i, key := range path {
		next, ok := cur[key].(map[string]any)
		if !ok {
			t.Fatalf("%s: got %T, want a map", strings.Join(path[:i+1], "."), cur[key])
		}
		cur = next
	}
	return cur
}

// resource returns Resources.<name> and checks its Type.
func resource(t *testing.T, tmpl map[string]any, name, wantType string) map[string]any {
	t.Helper()
	r := obj(t, tmpl, "Resources", name)
	if got := r["Type"]; got != wantType {
		t.Fatalf("%s Type: got %v, want %s", name, got, wantType)
	}
	return r
}

// resourcesOfType lists the logical ids of every resource of one type, sorted.
func resourcesOfType(t *testing.T, tmpl map[string]any, typ string) []string {
	t.Helper()
	var ids []string
	for id, r := range obj(t, tmpl, "Resources") {
		if m, ok := r.(map[string]any); ok && m["Type"] == typ {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids
}

// paramDefault returns Parameters.<name>.Default as a string.
func paramDefault(t *testing.T, tmpl map[string]any, name string) string {
	t.Helper()
	p := obj(t, tmpl, "Parameters", name)
	d, ok := p["Default"]
	if !ok {
		t.Fatalf("parameter %s has no Default", name)
	}
	return scalar(d)
}

// scalar renders a YAML scalar the way CloudFormation sees it (numbers and booleans as text).
func scalar(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case bool:
		return strconv.FormatBool(x)
	default:
		return fmt.Sprint(x)
	}
}

// refOf returns X for {"Ref": X}, "" otherwise.
func refOf(v any) string {
	if m, ok := v.(map[string]any); ok && len(m) == 1 {
		if s, ok := m["Ref"].(string); ok {
			return s
		}
	}
	return ""
}

// render gives an IAM Resource value one comparable string form:
// a literal as is, {"Fn::Sub": s} as s, {"Ref": X} as "Ref:X", {"Fn::GetAtt": [A, B]} as "GetAtt:A.B".
func render(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case map[string]any:
		if len(x) != 1 {
			return fmt.Sprintf("unrecognised:%v", x)
		}
		for k, arg := range x {
			switch k {
			case "Fn::Sub":
				if s, ok := arg.(string); ok {
					return s
				}
				if l, ok := arg.([]any); ok && len(l) > 0 {
					return scalar(l[0])
				}
			case "Ref":
				return "Ref:" + scalar(arg)
			case "Fn::GetAtt":
				if l, ok := arg.([]any); ok && len(l) == 2 {
					return "GetAtt:" + scalar(l[0]) + "." + scalar(l[1])
				}
				if s, ok := arg.(string); ok {
					return "GetAtt:" + s
				}
			}
		}
	}
	return fmt.Sprintf("unrecognised:%v", v)
}

// list accepts IAM's "one string or a list" shapes and renders each element.
func list(v any) []string {
	if v == nil {
		return nil
	}
	if l, ok := v.([]any); ok {
		out := make([]string, 0, len(l))
		for _, e := range l {
			out = append(out, render(e))
		}
		return out
	}
	return []string{render(v)}
}

// statement is one IAM policy statement, normalised.
type statement struct {
	Sid       string
	Effect    string
	Actions   []string
	Resources []string
	Condition map[string]any
	// Raw keeps keys such as NotAction/NotResource visible to the tests that forbid them.
	Raw map[string]any
}

func statements(t *testing.T, doc map[string]any) []statement {
	t.Helper()
	raw, ok := doc["Statement"].([]any)
	if !ok {
		// A single statement object is legal IAM too.
		if m, isMap := doc["Statement"].(map[string]any); isMap {
			raw = []any{m}
		} else {
			t.Fatalf("policy Statement: got %T, want a list", doc["Statement"])
		}
	}
	var out []statement
	for i, r := range raw {
		m, ok := r.(map[string]any)
		if !ok {
			t.Fatalf("statement %d: got %T, want a map", i, r)
		}
		s := statement{Effect: scalar(m["Effect"]), Actions: list(m["Action"]), Resources: list(m["Resource"]), Raw: m}
		if sid, ok := m["Sid"].(string); ok {
			s.Sid = sid
		}
		if c, ok := m["Condition"].(map[string]any); ok {
			s.Condition = c
		}
		out = append(out, s)
	}
	return out
}

// secretARN is the resource form the design mandates for a secret family under the prefix.
func secretARN(family string) string {
	return "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:${SecretPrefix}" + family + "/*"
}

// tomlDoc maps "table.path" → key → value, with string quotes removed.
type tomlDoc map[string]map[string]string

// readTOMLLines understands the subset samconfig.toml uses: [table] headers,
// key = value lines, # comments, basic strings, and one-line arrays kept raw.
func readTOMLLines(data string) (tomlDoc, error) {
	doc := tomlDoc{"": {}}
	table := ""
	for n, line := range strings.Split(data, "\n") {
		line = strings.TrimSpace(stripTOMLComment(line))
		if line == "" {
			continue
		}
		if strings.HasPrefix(line, "[") {
			if !strings.HasSuffix(line, "]") || strings.HasPrefix(line, "[[") {
				return nil, fmt.Errorf("line %d: unsupported table header %q", n+1, line)
			}
			table = strings.TrimSpace(line[1 : len(line)-1])
			if _, dup := doc[table]; dup {
				return nil, fmt.Errorf("line %d: table [%s] defined twice", n+1, table)
			}
			doc[table] = map[string]string{}
			continue
		}
		key, val, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("line %d: want key = value, got %q", n+1, line)
		}
		key, val = strings.TrimSpace(key), strings.TrimSpace(val)
		if strings.HasPrefix(val, `"`) {
			s, err := strconv.Unquote(val)
			if err != nil {
				return nil, fmt.Errorf("line %d: bad string %s: %v", n+1, val, err)
			}
			val = s
		}
		if _, dup := doc[table][key]; dup {
			return nil, fmt.Errorf("line %d: key %s repeated in [%s]", n+1, key, table)
		}
		doc[table][key] = val
	}
	return doc, nil
}

// stripTOMLComment cuts a line at the first # outside a basic string.
func stripTOMLComment(line string) string {
	inString, escaped := false, false
	for i, r := range line {
		switch {
		case escaped:
			escaped = false
		case inString && r == '\\':
			escaped = true
		case r == '"':
			inString = !inString
		case r == '#' && !inString:
			return line[:i]
		}
	}
	return line
}
