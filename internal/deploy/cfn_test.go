package deploy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/seed-502fa48b/token-refresher/internal/ci"
)

// templatesScript decodes template.yaml with cfn-lint's own loader (short-form tags to their
// long forms, exactly as CloudFormation reads them) and runs cfn-lint's SAM transform
// (aws-sam-translator, as sam deploy and CloudFormation do) on a copy, printing both: the
// template as written and the deployed shape, with SAM's generated roles, schedules and
// invoke configs. Exit 3 means cfn-lint is not installed, as opposed to a template it rejects.
//
// The SAM transform runs without AWS::LanguageExtensions: with it, cfn-lint inlines every
// parameter's default, and the tests could no longer vary parameters. The one extension the
// template uses (Fn::FindInMap with a computed key) is evaluated by stack.resolve instead.
const templatesScript = `
import copy, json, sys
try:
    from cfnlint.decode import decode
    from cfnlint.template.transforms._sam import Transform
except ImportError as e:
    print(e, file=sys.stderr)
    sys.exit(3)
template, matches = decode(sys.argv[1])
if matches or template is None:
    for m in matches:
        print(m, file=sys.stderr)
    sys.exit(2)
decoded = json.loads(json.dumps(template, default=str))
sam_input = copy.deepcopy(template)
transforms = sam_input.get("Transform")
if isinstance(transforms, list):
    sam_input["Transform"] = [x for x in transforms if x != "AWS::LanguageExtensions"]
t = Transform(sys.argv[1], sam_input, "us-east-1")
matches = t.transform_template()
if matches:
    for m in matches:
        print(m, file=sys.stderr)
    sys.exit(2)
json.dump({"decoded": decoded, "transformed": t.template()}, sys.stdout, default=str)
`

type templates struct {
	decoded, transformed map[string]any
}

var (
	templatesOnce    sync.Once
	templatesDoc     templates
	templatesErr     error
	templatesMissing string // why the decoder cannot run, when it cannot
)

// loadTemplates decodes and transforms template.yaml once per test binary.
func loadTemplates(t *testing.T) templates {
	t.Helper()
	path := filepath.Join(repoRoot(t), "template.yaml")
	templatesOnce.Do(func() {
		if _, err := exec.LookPath("python3"); err != nil {
			templatesMissing = fmt.Sprintf("python3 not found (needed with cfn-lint to read the template): %v", err)
			return
		}
		var stdout, stderr bytes.Buffer
		cmd := exec.Command("python3", "-c", templatesScript, path)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		switch {
		case errors.As(err, &ee) && ee.ExitCode() == 3:
			templatesMissing = "python3 cannot import cfnlint (pip install cfn-lint): " + string(bytes.TrimSpace(stderr.Bytes()))
		case err != nil:
			templatesErr = fmt.Errorf("decode %s: %v: %s", path, err, bytes.TrimSpace(stderr.Bytes()))
		default:
			var both struct{ Decoded, Transformed map[string]any }
			templatesErr = json.Unmarshal(stdout.Bytes(), &both)
			templatesDoc = templates{decoded: both.Decoded, transformed: both.Transformed}
		}
	})
	if templatesMissing != "" {
		ci.Missing(t, "%s", templatesMissing)
	}
	if templatesErr != nil {
		t.Fatalf("load template: %v", templatesErr)
	}
	return templatesDoc
}

// loadTransformed returns template.yaml after the SAM transform.
func loadTransformed(t *testing.T) map[string]any {
	t.Helper()
	return loadTemplates(t).transformed
}

// Fixed identities the resolver gives pseudo parameters and resources.
const (
	testAccount   = "123456789012"
	testRegion    = "us-east-1"
	testFunction  = "token-refresher-RefresherFunction-AbC123"
	testFnARN     = "arn:aws:lambda:" + testRegion + ":" + testAccount + ":function:" + testFunction
	testRoleARN   = "arn:aws:iam::" + testAccount + ":role/token-refresher-RefresherRole-XyZ789"
	testKeyARN    = "arn:aws:kms:" + testRegion + ":" + testAccount + ":key/1234abcd-12ab-34cd-56ef-1234567890ab"
	testEscrowID  = "5678efab-56ef-78ab-90cd-5678901234ef"
	testEscrowARN = "arn:aws:kms:" + testRegion + ":" + testAccount + ":key/" + testEscrowID
	testTableARN  = "arn:aws:dynamodb:" + testRegion + ":" + testAccount + ":table/token-refresher-StateTable-Q1W2"
	testQueueARN  = "arn:aws:sqs:" + testRegion + ":" + testAccount + ":token-refresher-AsyncFailureQueue-Z9"
	testRuleARN   = "arn:aws:events:" + testRegion + ":" + testAccount + ":rule/token-refresher-TokenEventsRule-K8"
	testTopicARN  = "arn:aws:sns:" + testRegion + ":" + testAccount + ":token-refresher-AlarmTopic-P0"
	testLogGroup  = "/aws/lambda/" + testFunction
)

// noValue is what AWS::NoValue resolves to; lists and maps drop it.
type noValueT struct{}

var noValue = noValueT{}

// stack evaluates CloudFormation intrinsics for one set of parameter values, the way
// CloudFormation would at deploy time, so tests read the policies as deployed.
type stack struct {
	t      *testing.T
	tmpl   map[string]any
	params map[string]any // string, or []string for CommaDelimitedList
	refs   map[string]string
	attrs  map[string]string
	memo   map[string]bool
}

// newStack uses each parameter's default unless overridden.
func newStack(t *testing.T, tmpl map[string]any, overrides map[string]string) *stack {
	t.Helper()
	s := &stack{
		t: t, tmpl: tmpl, params: map[string]any{}, memo: map[string]bool{},
		refs: map[string]string{
			"AWS::Partition": "aws", "AWS::Region": testRegion, "AWS::AccountId": testAccount,
			"AWS::StackName": "token-refresher", "AWS::URLSuffix": "amazonaws.com",
			"RefresherFunction": testFunction, "RefresherRole": "token-refresher-RefresherRole-XyZ789",
			"StateTable": "token-refresher-StateTable-Q1W2", "SecretsKey": "1234abcd-12ab-34cd-56ef-1234567890ab",
			"EscrowKey":   testEscrowID,
			"EnsureAlias": testFnARN + ":ensure", "AlarmTopic": testTopicARN,
			"RefresherLogGroup": testLogGroup, "TokenEventsRule": "token-refresher-TokenEventsRule-K8",
			"AsyncFailureQueue": "https://sqs.us-east-1.amazonaws.com/" + testAccount + "/token-refresher-AsyncFailureQueue-Z9",
		},
		attrs: map[string]string{
			"RefresherFunction.Arn": testFnARN, "RefresherRole.Arn": testRoleARN, "SecretsKey.Arn": testKeyARN, "EscrowKey.Arn": testEscrowARN,
			"StateTable.Arn": testTableARN, "AsyncFailureQueue.Arn": testQueueARN,
			"AsyncFailureQueue.QueueName": "token-refresher-AsyncFailureQueue-Z9", "TokenEventsRule.Arn": testRuleARN,
			"RefresherLogGroup.Arn": "arn:aws:logs:" + testRegion + ":" + testAccount + ":log-group:" + testLogGroup + ":*",
			"EnsureAlias.Name":      "ensure",
		},
	}
	params, _ := tmpl["Parameters"].(map[string]any)
	for name, p := range params {
		pm, _ := p.(map[string]any)
		v := scalar(pm["Default"])
		if o, ok := overrides[name]; ok {
			v = o
		}
		if pm["Type"] == "CommaDelimitedList" {
			if v == "" {
				s.params[name] = []string{""}
			} else {
				s.params[name] = strings.Split(v, ",")
			}
			continue
		}
		s.params[name] = v
	}
	for name := range overrides {
		if _, ok := params[name]; !ok {
			t.Fatalf("override of unknown parameter %s", name)
		}
	}
	return s
}

// cond evaluates a named condition.
func (s *stack) cond(name string) bool {
	if v, ok := s.memo[name]; ok {
		return v
	}
	conds, _ := s.tmpl["Conditions"].(map[string]any)
	def, ok := conds[name]
	if !ok {
		s.t.Fatalf("unknown condition %s", name)
	}
	v := s.evalCond(def)
	s.memo[name] = v
	return v
}

func (s *stack) evalCond(v any) bool {
	m, ok := v.(map[string]any)
	if !ok || len(m) != 1 {
		s.t.Fatalf("condition: got %v, want one intrinsic", v)
	}
	for k, arg := range m {
		args, _ := arg.([]any)
		switch k {
		case "Fn::Equals":
			return fmt.Sprint(s.resolve(args[0])) == fmt.Sprint(s.resolve(args[1]))
		case "Fn::Not":
			return !s.evalCond(args[0])
		case "Fn::And", "Fn::Or":
			and := k == "Fn::And"
			for _, a := range args {
				if s.evalCond(a) != and {
					return !and
				}
			}
			return and
		case "Condition":
			return s.cond(scalar(arg))
		}
	}
	s.t.Fatalf("condition: unsupported %v", v)
	return false
}

// active reports whether a resource (or output) exists under these parameters.
func (s *stack) active(r map[string]any) bool {
	c, ok := r["Condition"].(string)
	return !ok || s.cond(c)
}

// subVar matches ${Name}, ${Name.Attr} and ${!Literal}.
var subVar = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`\$\{(!?)([A-Za-z0-9:._-]+)\}`) })

// resolve evaluates every intrinsic in v.
func (s *stack) resolve(v any) any {
	switch x := v.(type) {
	case []any:
		out := make([]any, 0, len(x))
		for _, e := range x {
			if r := s.resolve(e); r != noValue {
				out = append(out, r)
			}
		}
		return out
	case map[string]any:
		if len(x) == 1 {
			for k, arg := range x {
				if r, ok := s.intrinsic(k, arg); ok {
					return r
				}
			}
		}
		out := make(map[string]any, len(x))
		for k, e := range x {
			if r := s.resolve(e); r != noValue {
				out[k] = r
			}
		}
		return out
	default:
		return v
	}
}

func (s *stack) ref(name string) any {
	if name == "AWS::NoValue" {
		return noValue
	}
	if p, ok := s.params[name]; ok {
		if l, isList := p.([]string); isList {
			out := make([]any, len(l))
			for i, e := range l {
				out[i] = e
			}
			return out
		}
		return p
	}
	if r, ok := s.refs[name]; ok {
		return r
	}
	s.t.Fatalf("Ref %s: unknown to the test resolver", name)
	return nil
}

func (s *stack) getAtt(a string) string {
	if v, ok := s.attrs[a]; ok {
		return v
	}
	s.t.Fatalf("GetAtt %s: unknown to the test resolver", a)
	return ""
}

func (s *stack) intrinsic(k string, arg any) (any, bool) {
	args, _ := arg.([]any)
	switch k {
	case "Ref":
		return s.ref(scalar(arg)), true
	case "Fn::GetAtt":
		if str, ok := arg.(string); ok {
			return s.getAtt(str), true
		}
		return s.getAtt(scalar(args[0]) + "." + scalar(args[1])), true
	case "Fn::If":
		if s.cond(scalar(args[0])) {
			return s.resolve(args[1]), true
		}
		return s.resolve(args[2]), true
	case "Fn::Sub":
		text, vars := "", map[string]any{}
		if str, ok := arg.(string); ok {
			text = str
		} else {
			text = scalar(args[0])
			for name, e := range args[1].(map[string]any) {
				vars[name] = s.resolve(e)
			}
		}
		return subVar().ReplaceAllStringFunc(text, func(m string) string {
			sm := subVar().FindStringSubmatch(m)
			if sm[1] == "!" {
				return "${" + sm[2] + "}"
			}
			if v, ok := vars[sm[2]]; ok {
				return scalar(v)
			}
			if strings.Contains(sm[2], ".") && !strings.HasPrefix(sm[2], "AWS::") {
				return s.getAtt(sm[2])
			}
			return scalar(s.ref(sm[2]))
		}), true
	case "Fn::Join":
		parts, _ := s.resolve(args[1]).([]any)
		strs := make([]string, len(parts))
		for i, p := range parts {
			strs[i] = scalar(p)
		}
		return strings.Join(strs, scalar(args[0])), true
	case "Fn::Split":
		parts := strings.Split(scalar(s.resolve(args[1])), scalar(args[0]))
		out := make([]any, len(parts))
		for i, p := range parts {
			out[i] = p
		}
		return out, true
	case "Fn::Select":
		i, _ := strconv.Atoi(scalar(s.resolve(args[0])))
		l, _ := s.resolve(args[1]).([]any)
		if i >= len(l) {
			s.t.Fatalf("Fn::Select %d of %v: out of range", i, l)
		}
		return l[i], true
	case "Fn::FindInMap":
		m := obj(s.t, s.tmpl, "Mappings", scalar(s.resolve(args[0])), scalar(s.resolve(args[1])))
		return m[scalar(s.resolve(args[2]))], true
	case "Condition":
		return s.cond(scalar(arg)), true
	}
	return nil, false
}

// str resolves v to a string.
func (s *stack) str(v any) string { return scalar(s.resolve(v)) }

// iamStatement is one resolved policy statement.
type iamStatement struct {
	Sid       string
	Effect    string
	Principal any
	Action    []string
	NotAction []string
	Resource  []string
	Condition map[string]any
}

// policyStatements resolves a policy document's statements.
func (s *stack) policyStatements(doc any) []iamStatement {
	s.t.Helper()
	d, ok := s.resolve(doc).(map[string]any)
	if !ok {
		s.t.Fatalf("policy document: got %T", doc)
	}
	raw := d["Statement"]
	if m, ok := raw.(map[string]any); ok {
		raw = []any{m}
	}
	var out []iamStatement
	for _, r := range raw.([]any) {
		m := r.(map[string]any)
		st := iamStatement{Effect: scalar(m["Effect"]), Principal: m["Principal"],
			Action: strs(m["Action"]), NotAction: strs(m["NotAction"]), Resource: strs(m["Resource"])}
		st.Sid, _ = m["Sid"].(string)
		st.Condition, _ = m["Condition"].(map[string]any)
		out = append(out, st)
	}
	return out
}

func strs(v any) []string {
	switch x := v.(type) {
	case nil:
		return nil
	case []any:
		out := make([]string, len(x))
		for i, e := range x {
			out[i] = scalar(e)
		}
		return out
	default:
		return []string{scalar(x)}
	}
}

// roleStatements collects every identity statement attached to a role in the transformed
// template: its inline Policies, and AWS::IAM::RolePolicy/Policy resources naming it. A
// managed policy ARN on it fails the test, since its statements are not visible here.
func (s *stack) roleStatements(roleID string) []iamStatement {
	s.t.Helper()
	res := obj(s.t, s.tmpl, "Resources")
	role := obj(s.t, res, roleID)
	props := obj(s.t, role, "Properties")
	if arns, ok := props["ManagedPolicyArns"]; ok {
		s.t.Errorf("%s ManagedPolicyArns: got %v, want none (their statements escape these checks)", roleID, arns)
	}
	var out []iamStatement
	if pols, ok := props["Policies"].([]any); ok {
		for _, p := range pols {
			out = append(out, s.policyStatements(obj(s.t, p)["PolicyDocument"])...)
		}
	}
	for id, r := range res {
		m := obj(s.t, r)
		typ := scalar(m["Type"])
		if (typ != "AWS::IAM::RolePolicy" && typ != "AWS::IAM::Policy") || !s.active(m) {
			continue
		}
		p := obj(s.t, m, "Properties")
		var roles []any
		if typ == "AWS::IAM::RolePolicy" {
			roles = []any{p["RoleName"]}
		} else {
			roles, _ = p["Roles"].([]any)
		}
		for _, rn := range roles {
			if refOf(rn) == roleID {
				stmts := s.policyStatements(p["PolicyDocument"])
				for i := range stmts {
					if stmts[i].Sid == "" {
						stmts[i].Sid = id
					}
				}
				out = append(out, stmts...)
			}
		}
	}
	return out
}

// managedStatements resolves a managed policy's statements (nil when it is not created).
func (s *stack) managedStatements(id string) []iamStatement {
	s.t.Helper()
	r := obj(s.t, s.tmpl, "Resources", id)
	if !s.active(r) {
		return nil
	}
	return s.policyStatements(obj(s.t, r, "Properties")["PolicyDocument"])
}

// request is one API call to authorise.
type request struct {
	Principal string // the caller's ARN (aws:PrincipalArn)
	Action    string
	Resource  string
	Context   map[string]string // further condition keys, e.g. kms:ViaService
}

type decision string

const (
	allowed      decision = "allowed"
	implicitDeny decision = "implicit deny"
	explicitDeny decision = "explicit deny"
)

// authorize is a small same-account IAM evaluation: an explicit Deny in any policy wins;
// otherwise an Allow in the caller's identity policies or in the resource policy (for a
// matching principal) allows; otherwise the call is implicitly denied. Conditions support the
// operators the template uses; any other fails the test rather than being guessed.
func authorize(t *testing.T, req request, identity, resourcePolicy []iamStatement) decision {
	t.Helper()
	ctx := map[string]string{"aws:PrincipalArn": req.Principal}
	for k, v := range req.Context {
		ctx[k] = v
	}
	allow := false
	for _, set := range []struct {
		stmts      []iamStatement
		isResource bool
	}{{identity, false}, {resourcePolicy, true}} {
		for _, st := range set.stmts {
			if set.isResource && !principalMatches(st.Principal, req.Principal) {
				continue
			}
			if !st.matchesAction(req.Action) || !matchesAny(st.Resource, req.Resource, false) {
				continue
			}
			if !conditionHolds(t, st.Condition, ctx) {
				continue
			}
			switch st.Effect {
			case "Deny":
				return explicitDeny
			case "Allow":
				allow = true
			default:
				t.Fatalf("statement %s: Effect %q", st.Sid, st.Effect)
			}
		}
	}
	if allow {
		return allowed
	}
	return implicitDeny
}

func (st iamStatement) matchesAction(action string) bool {
	if len(st.NotAction) > 0 {
		return !matchesAny(st.NotAction, action, true)
	}
	return matchesAny(st.Action, action, true)
}

func principalMatches(p any, principal string) bool {
	if p == "*" {
		return true
	}
	m, ok := p.(map[string]any)
	if !ok {
		return false
	}
	for _, a := range strs(m["AWS"]) {
		account := strings.Split(principal, ":")[4]
		if a == "*" || a == principal || a == account || a == "arn:aws:iam::"+account+":root" {
			return true
		}
	}
	return false
}

func matchesAny(patterns []string, v string, fold bool) bool {
	for _, p := range patterns {
		if wildcardMatch(p, v, fold) {
			return true
		}
	}
	return false
}

// wildcardMatch is IAM's glob: * is any run of characters (including none), ? one character.
func wildcardMatch(pattern, v string, fold bool) bool {
	if fold {
		pattern, v = strings.ToLower(pattern), strings.ToLower(v)
	}
	var b strings.Builder
	b.WriteString("^")
	for _, r := range pattern {
		switch r {
		case '*':
			b.WriteString(".*")
		case '?':
			b.WriteString(".")
		default:
			b.WriteString(regexp.QuoteMeta(string(r)))
		}
	}
	b.WriteString("$")
	return regexp.MustCompile(b.String()).MatchString(v)
}

func conditionHolds(t *testing.T, cond map[string]any, ctx map[string]string) bool {
	t.Helper()
	for op, block := range cond {
		for key, want := range block.(map[string]any) {
			got, present := ctx[key]
			values := strs(want)
			var ok bool
			switch op {
			case "StringEquals", "ArnEquals":
				ok = present && slices.Contains(values, got)
			case "ForAllValues:StringEquals":
				// Multi-valued keys (aws:TagKeys) are comma-joined in the request context.
				ok = true
				if present {
					for _, v := range strings.Split(got, ",") {
						ok = ok && slices.Contains(values, v)
					}
				}
			case "StringNotEquals":
				ok = !present || !slices.Contains(values, got)
			case "StringLike", "ArnLike":
				ok = present && matchesAny(values, got, false)
			case "StringNotLike", "ArnNotLike":
				// A negated operator holds when the key is absent.
				ok = !present || !matchesAny(values, got, false)
			default:
				t.Fatalf("condition operator %s on %s: not supported by the test evaluator", op, key)
			}
			if !ok {
				return false
			}
		}
	}
	return true
}

// arnFields splits an ARN into its six fields ("" fields kept).
func arnFields(arn string) []string { return strings.SplitN(arn, ":", 6) }
