package main

import (
	"encoding/json"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

const (
	testRefresherARN = "arn:aws:iam::111122223333:role/R"
	testAdminARN     = "arn:aws:iam::111122223333:role/A"
)

func TestPolicyTable(t *testing.T) {
	c := newCLI(t, nil, map[string]string{"STATE_TABLE": "tr-state"})
	c.mustRun("policy", "table", "--refresher-role-arn", testRefresherARN, "--admin-role-arn", testAdminARN)
	var doc policyDocument
	if err := json.Unmarshal(c.out.Bytes(), &doc); err != nil {
		t.Fatalf("policy table: %v\n%s", err, c.out.String())
	}
	want := `{"Version":"2012-10-17","Statement":[{"Sid":"OnlyRefresherAndAdmin","Effect":"Deny","Principal":"*",` +
		`"Action":["dynamodb:GetItem","dynamodb:BatchGetItem","dynamodb:Query","dynamodb:Scan","dynamodb:PutItem","dynamodb:UpdateItem",` +
		`"dynamodb:DeleteItem","dynamodb:BatchWriteItem","dynamodb:ConditionCheckItem",` +
		`"dynamodb:PartiQLSelect","dynamodb:PartiQLInsert","dynamodb:PartiQLUpdate","dynamodb:PartiQLDelete"],"Resource":"*",` +
		`"Condition":{"StringNotLike":{"aws:PrincipalArn":["arn:aws:iam::111122223333:role/R","arn:aws:iam::111122223333:role/A"]}}}]}`
	if got, _ := json.Marshal(doc); string(got) != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	if !strings.Contains(c.err.String(), "aws dynamodb put-resource-policy") || !strings.Contains(c.err.String(), "--table-name tr-state") {
		t.Errorf("stderr: got %q, want the aws dynamodb put-resource-policy line for tr-state", c.err.String())
	}

	for _, bad := range []struct {
		args []string
		want string
	}{
		{[]string{"policy", "table"}, "--refresher-role-arn: required"},
		{[]string{"policy", "table", "--refresher-role-arn", testRefresherARN}, "--admin-role-arn: required"},
		{[]string{"policy", "table", "--refresher-role-arn", "arn:aws:iam::111122223333:user/U", "--admin-role-arn", testAdminARN}, "want an IAM role ARN"},
		{[]string{"policy", "table", "private", "--refresher-role-arn", testRefresherARN, "--admin-role-arn", testAdminARN}, "want: policy private"},
	} {
		if code := c.run(bad.args...); code != exitUsage || !strings.Contains(c.err.String(), bad.want) || c.out.Len() != 0 {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit %d, no stdout, stderr with %q", bad.args, code, c.out.String(), c.err.String(), exitUsage, bad.want)
		}
	}
}

// TestPolicyTableMatchesTemplate: `tokenctl policy table` prints the document template.yaml
// puts on the state table, with the template's two principal expressions (the refresher
// role's ARN, the admin role or the account root) in the place of the ARNs given. Every
// field is compared, not only the actions, so neither can drift alone.
func TestPolicyTableMatchesTemplate(t *testing.T) {
	raw, err := os.ReadFile("../../template.yaml")
	if err != nil {
		t.Fatal(err)
	}
	doc := templateTablePolicy(t, string(raw))

	stmts, _ := doc["Statement"].([]any)
	if len(stmts) != 1 {
		t.Fatalf("template.yaml: StateTable policy has %d statements, want 1 (tokenctl prints one)", len(stmts))
	}
	cond, _ := stmts[0].(map[string]any)["Condition"].(map[string]any)
	notLike, _ := cond["StringNotLike"].(map[string]any)
	principals, _ := notLike["aws:PrincipalArn"].([]any)
	if len(principals) != 2 {
		t.Fatalf("template.yaml: StateTable policy's StringNotLike aws:PrincipalArn = %v, want the refresher and the admin", notLike)
	}
	if got := principals[0]; got != "!GetAtt RefresherRole.Arn" {
		t.Errorf("template.yaml: first principal %q, want !GetAtt RefresherRole.Arn", got)
	}
	if got, _ := principals[1].(string); !strings.HasPrefix(got, "!If [HasAdminRole, !Ref AdminRoleArn,") {
		t.Errorf("template.yaml: second principal %q, want !If [HasAdminRole, !Ref AdminRoleArn, ...]", got)
	}
	principals[0], principals[1] = testRefresherARN, testAdminARN

	printed, err := tablePolicy(testRefresherARN, testAdminARN)
	if err != nil {
		t.Fatal(err)
	}
	var got any
	if err := json.Unmarshal(printed, &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, any(doc)) {
		g, _ := json.Marshal(got)
		w, _ := json.Marshal(doc)
		t.Errorf("tokenctl policy table prints\n %s\nwant the template's StateTable ResourcePolicy\n %s", g, w)
	}
}

// templateTablePolicy returns Resources.StateTable.Properties.ResourcePolicy.PolicyDocument
// of template.yaml. go.mod has no YAML library, and one is not worth a dependency for a
// test: yamlBlock reads the block-style subset that resource is written in.
func templateTablePolicy(t *testing.T, tmpl string) map[string]any {
	t.Helper()
	lines := strings.Split(tmpl, "\n")
	start := slicesIndex(lines, "Resources:")
	if start < 0 {
		t.Fatal("template.yaml: no Resources section")
	}
	table := start + 1 + slicesIndex(lines[start+1:], "  StateTable:")
	if table <= start {
		t.Fatal("template.yaml: no Resources.StateTable")
	}
	var block []yamlLine
	for _, l := range lines[table+1:] {
		trimmed := strings.TrimSpace(l)
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		indent := len(l) - len(strings.TrimLeft(l, " "))
		if indent <= 2 {
			break // the next resource
		}
		block = append(block, yamlLine{indent, trimmed})
	}
	v, _ := parseYAMLBlock(t, block, 0, 4)
	res, _ := v.(map[string]any)
	props, _ := res["Properties"].(map[string]any)
	pol, _ := props["ResourcePolicy"].(map[string]any)
	doc, ok := pol["PolicyDocument"].(map[string]any)
	if !ok {
		t.Fatalf("template.yaml: StateTable has no Properties.ResourcePolicy.PolicyDocument (got %v)", props["ResourcePolicy"])
	}
	return doc
}

func slicesIndex(lines []string, want string) int {
	for i, l := range lines {
		if strings.TrimRight(l, " ") == want {
			return i
		}
	}
	return -1
}

type yamlLine struct {
	indent int
	text   string
}

// yamlKey matches "key:" or "key: value" (keys such as aws:PrincipalArn hold colons).
var yamlKey = regexp.MustCompile(`^([A-Za-z0-9_.:-]+?):(?: (.*))?$`)

// parseYAMLBlock parses the lines from i at exactly indent as one map or one list; scalars
// are unquoted strings, and tagged or flow values (!GetAtt X, !If [...]) stay as written.
func parseYAMLBlock(t *testing.T, ls []yamlLine, i, indent int) (any, int) {
	t.Helper()
	if i < len(ls) && strings.HasPrefix(ls[i].text, "- ") {
		var list []any
		for i < len(ls) && ls[i].indent == indent && strings.HasPrefix(ls[i].text, "- ") {
			item := strings.TrimPrefix(ls[i].text, "- ")
			if yamlKey.MatchString(item) {
				// "- key: v" opens a map whose keys sit two columns in.
				ls[i] = yamlLine{indent + 2, item}
				var m any
				m, i = parseYAMLBlock(t, ls, i, indent+2)
				list = append(list, m)
				continue
			}
			list = append(list, yamlScalar(item))
			i++
		}
		return list, i
	}
	m := map[string]any{}
	for i < len(ls) && ls[i].indent == indent {
		kv := yamlKey.FindStringSubmatch(ls[i].text)
		if kv == nil {
			t.Fatalf("template.yaml: StateTable: cannot read %q", ls[i].text)
		}
		i++
		if kv[2] != "" {
			m[kv[1]] = yamlScalar(kv[2])
			continue
		}
		if i >= len(ls) || ls[i].indent < indent || (ls[i].indent == indent && !strings.HasPrefix(ls[i].text, "- ")) {
			m[kv[1]] = nil
			continue
		}
		m[kv[1]], i = parseYAMLBlock(t, ls, i, ls[i].indent)
	}
	return m, i
}

func yamlScalar(s string) any {
	if u, err := strconv.Unquote(s); err == nil && strings.HasPrefix(s, `"`) {
		return u
	}
	return s
}
