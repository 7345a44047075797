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

	"github.com/seed-502fa48b/token-refresher/internal/ci"
)

func requireCfnLint(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("cfn-lint")
	if err != nil {
		ci.Missing(t, "cfn-lint not found (pip install cfn-lint): %v", err)
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
	// LanguageExtensions before SAM: the schedule's FindInMap keys are computed (TestScheduleIntervalDerived).
	if got, want := strs(tmpl["Transform"]), []string{"AWS::LanguageExtensions", "AWS::Serverless-2016-10-31"}; !slices.Equal(got, want) {
		t.Errorf("Transform: got %v, want %v", got, want)
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
	// Our own role: SAM's generated one carries AWSLambdaBasicExecutionRole (logs:* on *).
	if got := render(props["Role"]); got != "GetAtt:RefresherRole.Arn" {
		t.Errorf("Role: got %q, want !GetAtt RefresherRole.Arn", got)
	}
	if _, ok := props["Policies"]; ok {
		t.Error("Policies is set: SAM ignores it when Role is set; put statements in RefresherPolicy")
	}

	// Each variable comes from the parameter (or table) the design names, and the
	// parameter defaults equal the function's own defaults (§4). SCHEDULE_INTERVAL is
	// derived from ScheduleExpression (TestScheduleIntervalDerived).
	env := obj(t, props, "Environment", "Variables")
	for _, c := range []struct{ env, ref, def string }{
		{"STATE_TABLE", "StateTable", ""},
		{"SECRET_PREFIX", "SecretPrefix", "token-refresher/"},
		{"SWEEP_INTERVAL", "SweepInterval", "5m"},
		{"CONCURRENCY", "Concurrency", "8"},
		{"WRITE_RATE", "WriteRate", "40"},
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
	// The template publishes token events on the default bus.
	if got := env["EVENT_BUS_NAME"]; got != "default" {
		t.Errorf("env EVENT_BUS_NAME: got %v, want default", got)
	}
	if _, ok := env["KMS_KEY_ID"]; !ok {
		t.Error("env KMS_KEY_ID missing (empty without a customer-managed key; TestKmsKeyOption checks values)")
	}
	for _, k := range []string{"SCHEDULE_INTERVAL", "ESCROW_KEY_ID"} {
		if _, ok := env[k]; !ok {
			t.Errorf("env %s missing (values: TestScheduleIntervalDerived, TestEscrowKey)", k)
		}
	}
	if len(env) != 9 {
		t.Errorf("environment: got %d variables, want 9 (%v)", len(env), env)
	}
}

// The function is built by the Makefile's build-RefresherFunction target (BuildMethod: makefile).
func TestMakefileHasBuildTarget(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(repoRoot(t), "Makefile"))
	if os.IsNotExist(err) {
		ci.Missing(t, "no Makefile at the repository root; BuildMethod makefile needs one")
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

// scheduleEvent returns the properties of the reconcile ScheduleV2 event ("Schedule"); the
// function has exactly two events, both ScheduleV2: Schedule (reconcile) and Sweep.
func scheduleEvent(t *testing.T, tmpl map[string]any) map[string]any {
	t.Helper()
	return namedSchedule(t, tmpl, "Schedule")
}

func namedSchedule(t *testing.T, tmpl map[string]any, name string) map[string]any {
	t.Helper()
	evs := obj(t, tmpl, "Resources", "RefresherFunction", "Properties", "Events")
	var names []string
	for n, e := range evs {
		if m := obj(t, e); m["Type"] != "ScheduleV2" {
			t.Errorf("event %s: type %v; only ScheduleV2 (EventBridge Scheduler) is expected", n, m["Type"])
		}
		names = append(names, n)
	}
	if sort.Strings(names); !slices.Equal(names, []string{"Schedule", "Sweep"}) {
		t.Fatalf("events: got %v, want [Schedule Sweep]", names)
	}
	return obj(t, evs, name, "Properties")
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

	// Scheduler delivers to Lambda asynchronously: the schedule retries only delivery (Lambda
	// never accepted the event, so no run is repeated); failed runs are not retried
	// (TestNoRetriesMultiplyRotations).
	retry := obj(t, ev, "RetryPolicy")
	if n := scalar(retry["MaximumRetryAttempts"]); n != "0" && n != "1" && n != "2" {
		t.Errorf("RetryPolicy.MaximumRetryAttempts: got %s, want 0 to 2", n)
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

// One schedule parameter: for every expression an operator may choose, the function is told
// the same interval the schedule runs at, so the two can never disagree.
func TestScheduleIntervalDerived(t *testing.T) {
	t.Parallel()
	tmpl := loadTransformed(t)
	params := obj(t, tmpl, "Parameters")
	if _, ok := params["ScheduleInterval"]; ok {
		t.Error("parameter ScheduleInterval exists: the interval must be derived from ScheduleExpression")
	}
	exprs := strs(obj(t, params, "ScheduleExpression")["AllowedValues"])
	if !slices.Contains(exprs, "rate(12 hours)") || !slices.Contains(exprs, "rate(30 minutes)") {
		t.Fatalf("ScheduleExpression AllowedValues %v: want at least rate(12 hours) and rate(30 minutes)", exprs)
	}
	env := obj(t, tmpl, "Resources", "RefresherFunction", "Properties", "Environment", "Variables")
	sched := obj(t, tmpl, "Resources", "RefresherFunctionSchedule", "Properties")
	rows := obj(t, tmpl, "Mappings", "Schedule")
	for _, expr := range exprs {
		t.Run(expr, func(t *testing.T) {
			want, err := rateDuration(expr)
			if err != nil {
				t.Fatalf("allowed value: %v", err)
			}
			s := newStack(t, tmpl, map[string]string{"ScheduleExpression": expr})
			if got := s.str(sched["ScheduleExpression"]); got != expr {
				t.Errorf("schedule expression: got %q, want %q", got, expr)
			}
			text := s.str(env["SCHEDULE_INTERVAL"])
			got, err := time.ParseDuration(text)
			if err != nil {
				t.Fatalf("SCHEDULE_INTERVAL %q: the function cannot parse it: %v", text, err)
			}
			if got != want {
				t.Errorf("SCHEDULE_INTERVAL: got %v, want %v (the schedule's rate)", got, want)
			}
		})
	}
	// No row for a value the parameter refuses (a dead row would hide a missing one).
	if len(rows) != len(exprs) {
		t.Errorf("Mappings.Schedule: got %d rows, want one per allowed expression (%d)", len(rows), len(exprs))
	}
	// Control: the derivation reads the parameter, so a different rate gives a different interval.
	a := newStack(t, tmpl, map[string]string{"ScheduleExpression": "rate(1 hour)"}).str(env["SCHEDULE_INTERVAL"])
	b := newStack(t, tmpl, map[string]string{"ScheduleExpression": "rate(30 minutes)"}).str(env["SCHEDULE_INTERVAL"])
	if a == b {
		t.Errorf("control: SCHEDULE_INTERVAL %q for both rate(1 hour) and rate(30 minutes)", a)
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
		{"SweepInterval",
			[]string{"5m", "1m", "15m", "999m", "off"},
			[]string{"", "0m", "5", "5 minutes", "1h", "1000m", "OFF", "-5m"}},
		{"AdminRoleArn",
			[]string{"", "arn:aws:iam::123456789012:role/TokenAdmin", "arn:aws:iam::123456789012:role/aws-reserved/sso.amazonaws.com/*/AWSReservedSSO_Admin_*"},
			[]string{"TokenAdmin", "arn:aws:iam::123456789012:user/bob", "arn:aws:iam::12345:role/x", "arn:aws:iam::123456789012:role/"}},
		{"KmsKeyArn",
			[]string{"", "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"},
			[]string{"alias/aws/secretsmanager", "arn:aws:kms:us-east-1:123456789012:alias/x", "1234abcd-12ab"}},
		{"EscrowKeyArn",
			[]string{"", testEscrowARN},
			[]string{"alias/token-refresher-escrow", "arn:aws:kms:us-east-1:123456789012:alias/x", testEscrowID}},
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
				if c.param == "SweepInterval" && v != "off" {
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
	// ScheduleExpression is a fixed list (each value has a Schedule row): every value is a rate
	// whose row gives its interval in seconds (TestScheduleIntervalDerived: the Go duration).
	p := obj(t, tmpl, "Parameters", "ScheduleExpression")
	values := strs(p["AllowedValues"])
	if !slices.Contains(values, scalar(p["Default"])) {
		t.Errorf("ScheduleExpression default %v not in AllowedValues %v", p["Default"], values)
	}
	for _, v := range values {
		d, err := rateDuration(v)
		if err != nil {
			t.Errorf("ScheduleExpression %q: %v", v, err)
			continue
		}
		s := newStack(t, tmpl, map[string]string{"ScheduleExpression": v})
		seconds := s.str(obj(t, tmpl, "Resources", "HeartbeatAlarm", "Properties")["Period"])
		if want := strconv.Itoa(int(d.Seconds())); seconds != want {
			t.Errorf("ScheduleExpression %s: Schedule row Seconds %q, want %s", v, seconds, want)
		}
	}
	if got := scalar(obj(t, tmpl, "Parameters", "CreateKmsKey")["Default"]); got != "false" {
		t.Errorf("CreateKmsKey default: got %q, want false (opt-in)", got)
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
	// Attribute definitions and the due index: TestStateTableMatchesLedger.
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

func TestConsumerPolicies(t *testing.T) {
	t.Parallel()
	tmpl := loadTemplate(t)

	// Read: GetSecretValue on access/* (plus kms:Decrypt under the key option, TestKmsKeyOption).
	read := resource(t, tmpl, "ConsumerReadPolicy", "AWS::IAM::ManagedPolicy")
	if c, ok := read["Condition"]; ok {
		t.Errorf("ConsumerReadPolicy is conditional (%v); consumers always need it", c)
	}
	readStmts := statements(t, obj(t, read, "Properties", "PolicyDocument"))
	if len(readStmts) == 0 {
		t.Fatal("ConsumerReadPolicy has no statements")
	}
	if s := readStmts[0]; s.Effect != "Allow" || !slices.Equal(s.Actions, []string{"secretsmanager:GetSecretValue"}) ||
		!slices.Equal(s.Resources, []string{secretARN("access")}) {
		t.Errorf("ConsumerReadPolicy %s: got %s %v on %v, want Allow [secretsmanager:GetSecretValue] on [%s]",
			s.Sid, s.Effect, s.Actions, s.Resources, secretARN("access"))
	}

	// Ensure and operator invoke policies: always created (they grant nothing until attached).
	for _, c := range []struct{ id, resource string }{
		{"ConsumerEnsurePolicy", "Ref:EnsureAlias"},
		{"OperatorInvokePolicy", "GetAtt:RefresherFunction.Arn"},
	} {
		p := resource(t, tmpl, c.id, "AWS::IAM::ManagedPolicy")
		for _, s := range statements(t, obj(t, p, "Properties", "PolicyDocument")) {
			if s.Effect != "Allow" || !slices.Equal(s.Actions, []string{"lambda:InvokeFunction"}) || !slices.Equal(s.Resources, []string{c.resource}) {
				t.Errorf("%s %s: got %s %v on %v, want Allow lambda:InvokeFunction on %s only", c.id, s.Sid, s.Effect, s.Actions, s.Resources, c.resource)
			}
			for _, k := range []string{"NotAction", "NotResource"} {
				if _, ok := s.Raw[k]; ok {
					t.Errorf("%s uses %s", c.id, k)
				}
			}
		}
	}
	if _, ok := obj(t, tmpl, "Resources")["ConsumerInvokePolicy"]; ok {
		t.Error("ConsumerInvokePolicy exists: a consumer invoke policy on the function itself could force")
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
			if k == "RoleName" && m["Type"] == "AWS::IAM::RolePolicy" {
				continue // names the role it attaches to, not a new one
			}
			if _, ok := props[k]; ok && strings.HasPrefix(scalar(m["Type"]), "AWS::IAM::") {
				t.Errorf("%s sets %s; samconfig would need CAPABILITY_NAMED_IAM", id, k)
			}
		}
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
		"ConsumerEnsurePolicyArn": "Ref:ConsumerEnsurePolicy",
		"OperatorInvokePolicyArn": "Ref:OperatorInvokePolicy",
		"EnsureFunctionArn":       "Ref:EnsureAlias",
		"RefresherRoleArn":        "GetAtt:RefresherRole.Arn",
		"AccessSecretPrefix":      "${SecretPrefix}access/",
		"AlarmTopicArn":           "Ref:AlarmTopic",
		"AsyncFailureQueueUrl":    "Ref:AsyncFailureQueue",
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
	// The key output exists exactly when the key is used (TestKmsKeyOption checks values).
	if got := obj(t, outs, "SecretsKeyArn")["Condition"]; got != "UseKms" {
		t.Errorf("SecretsKeyArn Condition: got %v, want UseKms", got)
	}
	// The escrow key always exists (created or given); TestEscrowKey checks values.
	if o := obj(t, outs, "EscrowKeyArn"); o["Condition"] != nil {
		t.Errorf("EscrowKeyArn Condition: got %v, want none", o["Condition"])
	}
	if _, ok := outs["PrivateSecretResourcePolicy"]; !ok {
		t.Error("output PrivateSecretResourcePolicy missing")
	}
}
