package deploy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/events"
)

func requireCfnLint(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("cfn-lint")
	if err != nil {
		missingTool(t, "cfn-lint not found (pip install cfn-lint): %v", err)
	}
	return path
}

func runCfnLint(t *testing.T, bin, template string) (int, string) {
	t.Helper()
	var out bytes.Buffer
	cmd := exec.Command(bin, template)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err == nil {
		return 0, out.String()
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), out.String()
	}
	t.Fatalf("run cfn-lint: %v", err)
	return -1, ""
}

func TestCfnLintPasses(t *testing.T) {
	t.Parallel()
	bin := requireCfnLint(t)
	path := filepath.Join(repoRoot(t), "template.yaml")
	if code, out := runCfnLint(t, bin, path); code != 0 {
		t.Fatalf("cfn-lint template.yaml: exit %d, want 0:\n%s", code, out)
	}
}

// The same lint on a broken copy must fail, or a lint that checks nothing would pass above.
func TestCfnLintRejectsBrokenTemplate(t *testing.T) {
	t.Parallel()
	bin := requireCfnLint(t)
	path := filepath.Join(repoRoot(t), "template.yaml")
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	broken := bytes.Replace(src, []byte("Timeout: 300"), []byte("Timeout: 9000"), 1)
	if bytes.Equal(broken, src) {
		t.Fatal("control: template has no \"Timeout: 300\" to break")
	}
	bad := filepath.Join(t.TempDir(), "template.yaml")
	if err := os.WriteFile(bad, broken, 0o644); err != nil {
		t.Fatal(err)
	}
	if code, out := runCfnLint(t, bin, bad); code == 0 {
		t.Fatalf("control: cfn-lint accepted a Lambda Timeout of 9000 s (max 900):\n%s", out)
	}
}

func TestFunction(t *testing.T) {
	t.Parallel()
	tmpl := loadTemplate(t)
	if got := tmpl["Transform"]; got != "AWS::Serverless-2016-10-31" {
		t.Errorf("Transform: got %v, want AWS::Serverless-2016-10-31", got)
	}
	fn := resource(t, tmpl, "RefresherFunction", "AWS::Serverless::Function")
	props := obj(t, fn, "Properties")

	for _, c := range []struct{ key, want string }{
		{"Runtime", "provided.al2023"},
		{"Handler", "bootstrap"},
		{"CodeUri", "."},
		{"Timeout", "300"},
		{"MemorySize", "256"},
	} {
		if got := scalar(props[c.key]); got != c.want {
			t.Errorf("%s: got %q, want %q", c.key, got, c.want)
		}
	}
	if got := list(props["Architectures"]); !slices.Equal(got, []string{"arm64"}) {
		t.Errorf("Architectures: got %v, want [arm64]", got)
	}
	if got := obj(t, fn, "Metadata")["BuildMethod"]; got != "makefile" {
		t.Errorf("Metadata.BuildMethod: got %v, want makefile", got)
	}
	if got := obj(t, props, "LoggingConfig")["LogFormat"]; got != "JSON" {
		t.Errorf("LoggingConfig.LogFormat: got %v, want JSON", got)
	}
	if _, ok := props["Role"]; ok {
		t.Error("Role is set: SAM would ignore Policies, and the least-privilege statements tested here would not apply")
	}

	// Each variable comes from the parameter (or table) the design names, and the
	// parameter defaults equal the function's own defaults (§4).
	env := obj(t, props, "Environment", "Variables")
	for _, c := range []struct{ env, ref, def string }{
		{"STATE_TABLE", "StateTable", ""},
		{"SECRET_PREFIX", "SecretPrefix", "token-refresher/"},
		{"SCHEDULE_INTERVAL", "ScheduleInterval", "12h"},
		{"CONCURRENCY", "Concurrency", "8"},
	} {
		if got := refOf(env[c.env]); got != c.ref {
			t.Errorf("env %s: got %v, want !Ref %s", c.env, env[c.env], c.ref)
			continue
		}
		if c.def != "" {
			if got := paramDefault(t, tmpl, c.ref); got != c.def {
				t.Errorf("parameter %s default: got %q, want %q", c.ref, got, c.def)
			}
		}
	}
	if len(env) != 4 {
		t.Errorf("environment: got %d variables, want 4 (%v)", len(env), env)
	}
}

// The function is built by the Makefile's build-RefresherFunction target (BuildMethod: makefile).
func TestMakefileHasBuildTarget(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(repoRoot(t), "Makefile"))
	if os.IsNotExist(err) {
		missingTool(t, "no Makefile at the repository root; BuildMethod makefile needs one")
	}
	if err != nil {
		t.Fatal(err)
	}
	text := string(data)
	if !regexp.MustCompile(`(?m)^build-RefresherFunction:`).MatchString(text) {
		t.Error("Makefile has no build-RefresherFunction target")
	}
	if !strings.Contains(text, "$(ARTIFACTS_DIR)/bootstrap") {
		t.Error("Makefile never writes $(ARTIFACTS_DIR)/bootstrap")
	}
}

// scheduleEvent returns the function's only ScheduleV2 event's properties.
func scheduleEvent(t *testing.T, tmpl map[string]any) map[string]any {
	t.Helper()
	evs := obj(t, tmpl, "Resources", "RefresherFunction", "Properties", "Events")
	var found []map[string]any
	for name, e := range evs {
		m := obj(t, e)
		if m["Type"] != "ScheduleV2" {
			t.Errorf("event %s: type %v; only ScheduleV2 (EventBridge Scheduler) is expected", name, m["Type"])
			continue
		}
		found = append(found, obj(t, m, "Properties"))
	}
	if len(found) != 1 {
		t.Fatalf("ScheduleV2 events: got %d, want 1", len(found))
	}
	return found[0]
}

func TestSchedule(t *testing.T) {
	t.Parallel()
	tmpl := loadTemplate(t)
	ev := scheduleEvent(t, tmpl)

	param := refOf(ev["ScheduleExpression"])
	if param == "" {
		t.Fatalf("ScheduleExpression: got %v, want !Ref to a parameter", ev["ScheduleExpression"])
	}
	if got := paramDefault(t, tmpl, param); got != "rate(12 hours)" {
		t.Errorf("parameter %s default: got %q, want rate(12 hours)", param, got)
	}
	if ev["OmitName"] != true {
		t.Error("OmitName: want true, or SAM names the schedule RefresherFunctionSchedule and two stacks collide")
	}

	// Scheduler delivers to Lambda asynchronously: the schedule retries delivery, the
	// function's EventInvokeConfig retries failed runs. A rerun is harmless; both bounded.
	retry := obj(t, ev, "RetryPolicy")
	if n := scalar(retry["MaximumRetryAttempts"]); n != "1" && n != "2" {
		t.Errorf("RetryPolicy.MaximumRetryAttempts: got %s, want 1 or 2", n)
	}
	inv := obj(t, tmpl, "Resources", "RefresherFunction", "Properties", "EventInvokeConfig")
	if n := scalar(inv["MaximumRetryAttempts"]); n != "1" && n != "2" {
		t.Errorf("EventInvokeConfig.MaximumRetryAttempts: got %s, want 1 or 2", n)
	}

	// What Scheduler sends must read as an EventBridge scheduled event once its
	// placeholders are filled, since the engine branches on that shape.
	input := render(ev["Input"])
	filled := strings.NewReplacer(
		"${AWS::AccountId}", "123456789012",
		"${AWS::Region}", "ap-south-1",
		"<aws.scheduler.execution-id>", "d32c5kddcf5bb8c3",
		"<aws.scheduler.scheduled-time>", "2026-11-22T00:00:00Z",
		"<aws.scheduler.schedule-arn>", "arn:aws:scheduler:ap-south-1:123456789012:schedule/default/x",
	).Replace(input)
	if strings.Contains(filled, "${") || strings.Contains(filled, "<aws.") {
		t.Fatalf("Input has an unknown placeholder: %s", filled)
	}
	var got events.EventBridgeEvent
	dec := json.NewDecoder(strings.NewReader(filled))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("Input does not decode as events.EventBridgeEvent: %v\n%s", err, filled)
	}
	if got.DetailType != "Scheduled Event" {
		t.Errorf("Input detail-type: got %q, want Scheduled Event", got.DetailType)
	}
	if got.Time.IsZero() || len(got.Resources) != 1 {
		t.Errorf("Input: got time %v and resources %v, want the scheduled time and the schedule ARN", got.Time, got.Resources)
	}
}

// rateDuration converts an EventBridge rate(...) expression to a duration.
func rateDuration(expr string) (time.Duration, error) {
	m := regexp.MustCompile(`^rate\((\d+) (minute|minutes|hour|hours|day|days)\)$`).FindStringSubmatch(expr)
	if m == nil {
		return 0, fmt.Errorf("not a rate expression: %q", expr)
	}
	n, err := strconv.Atoi(m[1])
	if err != nil {
		return 0, err
	}
	unit := map[string]time.Duration{
		"minute": time.Minute, "minutes": time.Minute,
		"hour": time.Hour, "hours": time.Hour,
		"day": 24 * time.Hour, "days": 24 * time.Hour,
	}[m[2]]
	return time.Duration(n) * unit, nil
}

func TestScheduleIntervalAgreesWithExpression(t *testing.T) {
	t.Parallel()
	tmpl := loadTemplate(t)
	exprParam := refOf(scheduleEvent(t, tmpl)["ScheduleExpression"])
	want, err := rateDuration(paramDefault(t, tmpl, exprParam))
	if err != nil {
		t.Fatalf("%s default: %v", exprParam, err)
	}
	interval := paramDefault(t, tmpl, "ScheduleInterval")
	got, err := time.ParseDuration(interval)
	if err != nil {
		t.Fatalf("ScheduleInterval default %q is not a Go duration: %v", interval, err)
	}
	if got != want {
		t.Errorf("ScheduleInterval default: got %v, want %v (the schedule's rate)", got, want)
	}
	if desc := scalar(obj(t, tmpl, "Parameters", "ScheduleInterval")["Description"]); !strings.Contains(desc, "ScheduleExpression") {
		t.Errorf("ScheduleInterval description does not tell the operator to keep it in line with ScheduleExpression: %q", desc)
	}
}

// Parameter patterns are plain regular expressions (no look-arounds), so RE2 reads
// them as CloudFormation does; each accepts what the function accepts and no more.
func TestParameterPatterns(t *testing.T) {
	t.Parallel()
	tmpl := loadTemplate(t)
	cases := []struct {
		param string
		good  []string
		bad   []string
	}{
		{"SecretPrefix",
			[]string{"token-refresher/", "team-a/tr/", "tr_1/"},
			[]string{"", "token-refresher", "tr*/", "tr?/", "/", "a b/"}},
		{"ScheduleExpression",
			[]string{"rate(12 hours)", "rate(1 hour)", "rate(30 minutes)", "rate(1 day)", "cron(0 0/12 * * ? *)"},
			[]string{"rate(0 hours)", "rate(12 hrs)", "every 12h", "12h"}},
		{"ScheduleInterval",
			[]string{"12h", "6h", "90m", "1h30m"},
			[]string{"", "12", "0h", "12 hours", "-1h", "1.5h"}},
		{"AlarmEmail",
			[]string{"", "ops@example.com"},
			[]string{"ops", "ops@", "a@b", "ops@example.com bob@example.com"}},
	}
	for _, c := range cases {
		t.Run(c.param, func(t *testing.T) {
			p := obj(t, tmpl, "Parameters", c.param)
			pattern := scalar(p["AllowedPattern"])
			re, err := regexp.Compile(pattern)
			if err != nil {
				t.Fatalf("AllowedPattern %q: %v", pattern, err)
			}
			def := scalar(p["Default"])
			if !re.MatchString(def) {
				t.Errorf("default %q does not match its own AllowedPattern %q", def, pattern)
			}
			for _, v := range c.good {
				if !re.MatchString(v) {
					t.Errorf("%q rejected by %q, want accepted", v, pattern)
				}
				if c.param == "ScheduleInterval" {
					if _, err := time.ParseDuration(v); err != nil {
						t.Errorf("%q accepted but the function cannot parse it: %v", v, err)
					}
				}
			}
			for _, v := range c.bad {
				if re.MatchString(v) {
					t.Errorf("%q accepted by %q, want rejected", v, pattern)
				}
			}
		})
	}
	if got := scalar(obj(t, tmpl, "Parameters", "CreateConsumerInvokePolicy")["Default"]); got != "false" {
		t.Errorf("CreateConsumerInvokePolicy default: got %q, want false (opt-in)", got)
	}
}

func TestStateTable(t *testing.T) {
	t.Parallel()
	tmpl := loadTemplate(t)
	table := resource(t, tmpl, "StateTable", "AWS::DynamoDB::Table")
	for _, k := range []string{"DeletionPolicy", "UpdateReplacePolicy"} {
		if got := table[k]; got != "Retain" {
			t.Errorf("%s: got %v, want Retain (the table holds leases and quota counts)", k, got)
		}
	}
	props := obj(t, table, "Properties")
	keys, _ := props["KeySchema"].([]any)
	if len(keys) != 1 {
		t.Fatalf("KeySchema: got %v, want one hash key", props["KeySchema"])
	}
	if k := obj(t, keys[0]); k["AttributeName"] != "pk" || k["KeyType"] != "HASH" {
		t.Errorf("KeySchema: got %v, want pk HASH", k)
	}
	attrs, _ := props["AttributeDefinitions"].([]any)
	if len(attrs) != 1 {
		t.Fatalf("AttributeDefinitions: got %v, want only pk", props["AttributeDefinitions"])
	}
	if a := obj(t, attrs[0]); a["AttributeName"] != "pk" || a["AttributeType"] != "S" {
		t.Errorf("AttributeDefinitions: got %v, want pk S", a)
	}
	if got := props["BillingMode"]; got != "PAY_PER_REQUEST" {
		t.Errorf("BillingMode: got %v, want PAY_PER_REQUEST", got)
	}
	if ttl := obj(t, props, "TimeToLiveSpecification"); ttl["AttributeName"] != "ttl" || ttl["Enabled"] != true {
		t.Errorf("TimeToLiveSpecification: got %v, want ttl enabled", ttl)
	}
	if pitr := obj(t, props, "PointInTimeRecoverySpecification"); pitr["PointInTimeRecoveryEnabled"] != true {
		t.Errorf("PointInTimeRecoverySpecification: got %v, want enabled", pitr)
	}
	if sse := obj(t, props, "SSESpecification"); sse["SSEEnabled"] != true {
		t.Errorf("SSESpecification: got %v, want enabled", sse)
	}
	if _, named := props["TableName"]; named {
		t.Error("TableName is set: a named table cannot be replaced and blocks a second stack")
	}
}

// refresherStatements flattens the function's inline Policies; anything else
// (a managed policy name, a SAM policy template) would escape these checks.
func refresherStatements(t *testing.T, tmpl map[string]any) []statement {
	t.Helper()
	pols, ok := obj(t, tmpl, "Resources", "RefresherFunction", "Properties")["Policies"].([]any)
	if !ok || len(pols) == 0 {
		t.Fatal("RefresherFunction Policies: want a list of inline policy documents")
	}
	var out []statement
	for i, p := range pols {
		m, ok := p.(map[string]any)
		if !ok || len(m) != 1 || m["Statement"] == nil {
			t.Fatalf("Policies[%d]: got %v, want only an inline {Statement: …} document", i, p)
		}
		out = append(out, statements(t, m)...)
	}
	return out
}

func TestRefresherPolicyIsLeastPrivilege(t *testing.T) {
	t.Parallel()
	tmpl := loadTemplate(t)
	forbidden := regexp.MustCompile(`^[a-z0-9-]+:(Delete.*|RotateSecret|CancelRotateSecret|PutResourcePolicy|RestoreSecret|RemoveRegionsFromReplication|ReplicateSecretToRegions|StopReplicationToReplica|UntagResource|UpdateSecret|BatchWriteItem|Query|GetRecords|.*\*.*)$`)

	byResource := map[string][]string{} // resource kind → actions
	for _, s := range refresherStatements(t, tmpl) {
		name := s.Sid
		if s.Effect != "Allow" {
			t.Errorf("statement %s: Effect %q, want Allow (deny-by-default is enough)", name, s.Effect)
		}
		for _, k := range []string{"NotAction", "NotResource", "NotPrincipal"} {
			if _, ok := s.Raw[k]; ok {
				t.Errorf("statement %s uses %s, which grants everything it does not list", name, k)
			}
		}
		for _, a := range s.Actions {
			if forbidden.MatchString(a) {
				t.Errorf("statement %s grants %s", name, a)
			}
		}
		for _, r := range s.Resources {
			kind := ""
			switch r {
			case secretARN("private"):
				kind = "private"
			case secretARN("access"):
				kind = "access"
			case "GetAtt:StateTable.Arn":
				kind = "table"
			case "*":
				kind = "*"
			default:
				t.Errorf("statement %s: unexpected resource %q", name, r)
				continue
			}
			for _, a := range s.Actions {
				service, _, _ := strings.Cut(a, ":")
				if (kind == "table") != (service == "dynamodb") {
					t.Errorf("statement %s: %s on %s resource", name, a, kind)
				}
				if a == "secretsmanager:TagResource" && s.Condition == nil {
					t.Errorf("statement %s: TagResource without a condition", name)
				}
			}
			byResource[kind] = append(byResource[kind], s.Actions...)
		}
	}

	want := map[string][]string{
		"private": {"secretsmanager:DescribeSecret", "secretsmanager:GetSecretValue", "secretsmanager:ListSecretVersionIds",
			"secretsmanager:PutSecretValue", "secretsmanager:UpdateSecretVersionStage"},
		"access": {"secretsmanager:CreateSecret", "secretsmanager:DescribeSecret", "secretsmanager:PutSecretValue",
			"secretsmanager:TagResource"},
		"*":     {"secretsmanager:ListSecrets"},
		"table": {"dynamodb:ConditionCheckItem", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Scan", "dynamodb:UpdateItem"},
	}
	for kind, w := range want {
		got := slices.Compact(slices.Sorted(slices.Values(byResource[kind])))
		if !slices.Equal(got, w) {
			t.Errorf("actions on %s: got %v, want %v", kind, got, w)
		}
	}
	for kind := range byResource {
		if _, ok := want[kind]; !ok {
			t.Errorf("unexpected resource kind %s", kind)
		}
	}
}

func TestConsumerPolicies(t *testing.T) {
	t.Parallel()
	tmpl := loadTemplate(t)

	read := resource(t, tmpl, "ConsumerReadPolicy", "AWS::IAM::ManagedPolicy")
	if c, ok := read["Condition"]; ok {
		t.Errorf("ConsumerReadPolicy is conditional (%v); consumers always need it", c)
	}
	readStmts := statements(t, obj(t, read, "Properties", "PolicyDocument"))
	if len(readStmts) == 0 {
		t.Fatal("ConsumerReadPolicy has no statements")
	}
	for _, s := range readStmts {
		if s.Effect != "Allow" || !slices.Equal(s.Actions, []string{"secretsmanager:GetSecretValue"}) {
			t.Errorf("ConsumerReadPolicy %s: got %s %v, want Allow [secretsmanager:GetSecretValue]", s.Sid, s.Effect, s.Actions)
		}
		if !slices.Equal(s.Resources, []string{secretARN("access")}) {
			t.Errorf("ConsumerReadPolicy %s resources: got %v, want [%s]", s.Sid, s.Resources, secretARN("access"))
		}
	}

	invoke := resource(t, tmpl, "ConsumerInvokePolicy", "AWS::IAM::ManagedPolicy")
	cond, _ := invoke["Condition"].(string)
	if cond == "" {
		t.Fatal("ConsumerInvokePolicy must be conditional (opt-in)")
	}
	eq, _ := obj(t, tmpl, "Conditions")[cond].(map[string]any)
	args, _ := eq["Fn::Equals"].([]any)
	if len(args) != 2 || refOf(args[0]) != "CreateConsumerInvokePolicy" || args[1] != "true" {
		t.Errorf("condition %s: got %v, want Equals [Ref CreateConsumerInvokePolicy, \"true\"]", cond, eq)
	}
	invokeStmts := statements(t, obj(t, invoke, "Properties", "PolicyDocument"))
	for _, s := range invokeStmts {
		if !slices.Equal(s.Actions, []string{"lambda:InvokeFunction"}) || !slices.Equal(s.Resources, []string{"GetAtt:RefresherFunction.Arn"}) {
			t.Errorf("ConsumerInvokePolicy %s: got %v on %v, want lambda:InvokeFunction on the refresher only", s.Sid, s.Actions, s.Resources)
		}
	}

	// Neither consumer policy may reach private state or everything.
	for name, stmts := range map[string][]statement{"ConsumerReadPolicy": readStmts, "ConsumerInvokePolicy": invokeStmts} {
		for _, s := range stmts {
			for _, k := range []string{"NotAction", "NotResource"} {
				if _, ok := s.Raw[k]; ok {
					t.Errorf("%s uses %s", name, k)
				}
			}
			for _, r := range s.Resources {
				if r == "*" || strings.Contains(r, "private") || strings.HasSuffix(r, ":*") {
					t.Errorf("%s grants on %q", name, r)
				}
			}
		}
	}
}

// No IAM resource is named, which is what lets samconfig use CAPABILITY_IAM.
func TestIAMResourcesUnnamed(t *testing.T) {
	t.Parallel()
	tmpl := loadTemplate(t)
	for id, r := range obj(t, tmpl, "Resources") {
		m := obj(t, r)
		props, _ := m["Properties"].(map[string]any)
		for _, k := range []string{"RoleName", "ManagedPolicyName", "UserName", "GroupName"} {
			if _, ok := props[k]; ok && strings.HasPrefix(scalar(m["Type"]), "AWS::IAM::") {
				t.Errorf("%s sets %s; samconfig would need CAPABILITY_NAMED_IAM", id, k)
			}
		}
	}
}

func TestAlarms(t *testing.T) {
	t.Parallel()
	tmpl := loadTemplate(t)
	resource(t, tmpl, "AlarmTopic", "AWS::SNS::Topic")

	type want struct {
		namespace, metric string
		dims              map[string]string // dimension name → !Ref target
		period            string            // "" = any
		missingData       string            // "" = any
	}
	wants := []want{
		{"AWS/Lambda", "Errors", map[string]string{"FunctionName": "RefresherFunction"}, "", ""},
		{"TokenRefresher", "NeedsReauth", nil, "3600", "notBreaching"},
	}
	alarms := map[string]map[string]any{}
	for _, id := range resourcesOfType(t, tmpl, "AWS::CloudWatch::Alarm") {
		p := obj(t, tmpl, "Resources", id, "Properties")
		alarms[scalar(p["Namespace"])+"/"+scalar(p["MetricName"])] = p
	}
	// Optional alarms on the engine's other EMF outcomes share NeedsReauth's shape.
	for _, m := range []string{"Throttled", "QuotaExhausted"} {
		if _, ok := alarms["TokenRefresher/"+m]; ok {
			wants = append(wants, want{"TokenRefresher", m, nil, "3600", "notBreaching"})
		}
	}
	for _, w := range wants {
		t.Run(w.metric, func(t *testing.T) {
			p, ok := alarms[w.namespace+"/"+w.metric]
			if !ok {
				t.Fatalf("no alarm on %s %s", w.namespace, w.metric)
			}
			for k, v := range map[string]string{
				"Statistic": "Sum", "Threshold": "1", "EvaluationPeriods": "1",
				"ComparisonOperator": "GreaterThanOrEqualToThreshold",
			} {
				if got := scalar(p[k]); got != v {
					t.Errorf("%s: got %q, want %q", k, got, v)
				}
			}
			if w.period != "" && scalar(p["Period"]) != w.period {
				t.Errorf("Period: got %v, want %s", p["Period"], w.period)
			}
			if w.missingData != "" && p["TreatMissingData"] != w.missingData {
				t.Errorf("TreatMissingData: got %v, want %s", p["TreatMissingData"], w.missingData)
			}
			dims, _ := p["Dimensions"].([]any)
			got := map[string]string{}
			for _, d := range dims {
				dm := obj(t, d)
				got[scalar(dm["Name"])] = refOf(dm["Value"])
			}
			if len(got) != len(w.dims) {
				t.Errorf("Dimensions: got %v, want %v", got, w.dims)
			}
			for k, v := range w.dims {
				if got[k] != v {
					t.Errorf("dimension %s: got !Ref %q, want !Ref %s", k, got[k], v)
				}
			}
			if actions := list(p["AlarmActions"]); !slices.Contains(actions, "Ref:AlarmTopic") {
				t.Errorf("AlarmActions: got %v, want the AlarmTopic", actions)
			}
		})
	}

	// The e-mail subscription exists only when an address is given.
	subs := resourcesOfType(t, tmpl, "AWS::SNS::Subscription")
	if len(subs) != 1 {
		t.Fatalf("SNS subscriptions: got %v, want one", subs)
	}
	sub := obj(t, tmpl, "Resources", subs[0])
	cond, _ := sub["Condition"].(string)
	not, _ := obj(t, tmpl, "Conditions")[cond].(map[string]any)
	inner, _ := not["Fn::Not"].([]any)
	var args []any
	if len(inner) == 1 {
		args, _ = obj(t, inner[0])["Fn::Equals"].([]any)
	}
	if len(args) != 2 || refOf(args[0]) != "AlarmEmail" || args[1] != "" {
		t.Errorf("subscription condition %q: got %v, want Not [Equals [Ref AlarmEmail, \"\"]]", cond, not)
	}
	if got := paramDefault(t, tmpl, "AlarmEmail"); got != "" {
		t.Errorf("AlarmEmail default: got %q, want empty", got)
	}
}

func TestLogGroup(t *testing.T) {
	t.Parallel()
	tmpl := loadTemplate(t)
	groups := resourcesOfType(t, tmpl, "AWS::Logs::LogGroup")
	if len(groups) == 0 {
		t.Fatal("no log group in the template: Lambda would create one that keeps logs forever")
	}
	if len(groups) != 1 {
		t.Fatalf("log groups: got %v, want one", groups)
	}
	p := obj(t, tmpl, "Resources", groups[0], "Properties")
	if got := render(p["LogGroupName"]); got != "/aws/lambda/${RefresherFunction}" {
		t.Errorf("LogGroupName: got %q, want /aws/lambda/${RefresherFunction} (where Lambda writes)", got)
	}
	if _, ok := p["RetentionInDays"]; !ok {
		t.Error("log group has no RetentionInDays")
	}
	if lg, ok := obj(t, tmpl, "Resources", "RefresherFunction", "Properties", "LoggingConfig")["LogGroup"]; ok {
		t.Errorf("LoggingConfig.LogGroup is %v: the function would not write to the retained group", lg)
	}
}

func TestOutputs(t *testing.T) {
	t.Parallel()
	tmpl := loadTemplate(t)
	outs := obj(t, tmpl, "Outputs")
	want := map[string]string{
		"RefresherFunctionName":   "Ref:RefresherFunction",
		"RefresherFunctionArn":    "GetAtt:RefresherFunction.Arn",
		"StateTableName":          "Ref:StateTable",
		"ConsumerReadPolicyArn":   "Ref:ConsumerReadPolicy",
		"ConsumerInvokePolicyArn": "Ref:ConsumerInvokePolicy",
		"AccessSecretPrefix":      "${SecretPrefix}access/",
		"AlarmTopicArn":           "Ref:AlarmTopic",
	}
	names := make([]string, 0, len(want))
	for n := range want {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		o, ok := outs[name].(map[string]any)
		if !ok {
			t.Errorf("output %s missing", name)
			continue
		}
		if got := render(o["Value"]); got != want[name] {
			t.Errorf("output %s Value: got %q, want %q", name, got, want[name])
		}
		if got := render(obj(t, o, "Export")["Name"]); got != "${AWS::StackName}-"+name {
			t.Errorf("output %s export: got %q, want ${AWS::StackName}-%s", name, got, name)
		}
	}
	invCond := obj(t, tmpl, "Resources", "ConsumerInvokePolicy")["Condition"]
	if got := obj(t, outs, "ConsumerInvokePolicyArn")["Condition"]; got != invCond {
		t.Errorf("ConsumerInvokePolicyArn Condition: got %v, want %v (same as the policy)", got, invCond)
	}
}
