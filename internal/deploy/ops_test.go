package deploy

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/eventbridge"
	ebtypes "github.com/aws/aws-sdk-go-v2/service/eventbridge/types"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/seed-502fa48b/token-refresher/pkg/invocation"
	"github.com/seed-502fa48b/token-refresher/pkg/ledger"
	"github.com/seed-502fa48b/token-refresher/pkg/notify"
)

// contractMetrics are the TokenRefresher metric names the function emits (docs/operations.md lists them).
var contractMetrics = []string{
	"Outcomes", "NeedsReauth", "Throttled", "QuotaExhausted", "Failed", "InvalidConfig",
	"SecretsManagerThrottled", "Reconciled", "Swept", "SecondsToExpiry", "DaysToCredentialExpiry",
	"DaysToRefreshTokenExpiry", "WriteBudgetUsedPercent", "QuotaUsed", "QuotaUsedPercent",
	"Backlog",
}

type alarmWant struct {
	namespace, metric, stat, cmp, threshold, missing string
	period                                           string // "" = checked elsewhere (heartbeat)
	evaluations                                      string
	dims                                             []string // dimension names
}

func TestAlarms(t *testing.T) {
	t.Parallel()
	tmpl := loadTemplate(t)
	s := newStack(t, loadTransformed(t), nil)
	resource(t, tmpl, "AlarmTopic", "AWS::SNS::Topic")

	count := func(metric string) alarmWant {
		return alarmWant{"TokenRefresher", metric, "Sum", "GreaterThanOrEqualToThreshold", "1", "notBreaching", "3600", "1", nil}
	}
	gauge := func(metric, stat, cmp, threshold string) alarmWant {
		// Gauges arrive with runs; "ignore" keeps the state between them.
		return alarmWant{"TokenRefresher", metric, stat, cmp, threshold, "ignore", "3600", "1", nil}
	}
	wants := []alarmWant{
		{"AWS/Lambda", "Errors", "Sum", "GreaterThanOrEqualToThreshold", "1", "notBreaching", "300", "1", []string{"FunctionName"}},
		{"TokenRefresher", "Reconciled", "Sum", "LessThanThreshold", "1", "breaching", "", "2", nil},
		count("NeedsReauth"), count("InvalidConfig"), count("Failed"), count("Throttled"),
		count("QuotaExhausted"), count("SecretsManagerThrottled"),
		// Deferred tokens left by every run for three sweeps in a row (not the Errors alarm).
		{"TokenRefresher", "Backlog", "Minimum", "GreaterThanOrEqualToThreshold", "1", "notBreaching", "300", "3", nil},
		gauge("DaysToCredentialExpiry", "Minimum", "LessThanThreshold", "7"),
		gauge("DaysToRefreshTokenExpiry", "Minimum", "LessThanThreshold", "7"),
		gauge("WriteBudgetUsedPercent", "Maximum", "GreaterThanThreshold", "80"),
		gauge("QuotaUsedPercent", "Maximum", "GreaterThanThreshold", "80"),
		{"AWS/SQS", "ApproximateNumberOfMessagesVisible", "Maximum", "GreaterThanOrEqualToThreshold", "1", "notBreaching", "300", "1", []string{"QueueName"}},
	}
	alarms := map[string]map[string]any{}
	for _, id := range resourcesOfType(t, tmpl, "AWS::CloudWatch::Alarm") {
		p := obj(t, tmpl, "Resources", id, "Properties")
		key := scalar(p["Namespace"]) + "/" + scalar(p["MetricName"])
		if _, dup := alarms[key]; dup {
			t.Errorf("two alarms on %s", key)
		}
		alarms[key] = p
	}
	if len(alarms) != len(wants) {
		t.Errorf("alarms: got %d, want %d", len(alarms), len(wants))
	}
	for _, w := range wants {
		t.Run(w.metric, func(t *testing.T) {
			p, ok := alarms[w.namespace+"/"+w.metric]
			if !ok {
				t.Fatalf("no alarm on %s %s", w.namespace, w.metric)
			}
			for k, v := range map[string]string{
				"Statistic": w.stat, "ComparisonOperator": w.cmp, "Threshold": w.threshold,
				"TreatMissingData": w.missing, "EvaluationPeriods": w.evaluations,
			} {
				if got := scalar(p[k]); got != v {
					t.Errorf("%s: got %q, want %q", k, got, v)
				}
			}
			if w.period != "" && scalar(p["Period"]) != w.period {
				t.Errorf("Period: got %v, want %s", p["Period"], w.period)
			}
			var dims []string
			raw, _ := p["Dimensions"].([]any)
			for _, d := range raw {
				dims = append(dims, scalar(obj(t, d)["Name"]))
			}
			if !slices.Equal(dims, w.dims) {
				t.Errorf("Dimensions: got %v, want %v (per-token gauges alarm on their dimensionless series)", dims, w.dims)
			}
			for _, k := range []string{"AlarmActions", "OKActions"} {
				if actions := list(p[k]); !slices.Equal(actions, []string{"Ref:AlarmTopic"}) {
					t.Errorf("%s: got %v, want the AlarmTopic", k, actions)
				}
			}
			if d := s.str(p["AlarmDescription"]); len(d) < 40 {
				t.Errorf("AlarmDescription %q: want what it means and what to do", d)
			}
			if w.namespace == "TokenRefresher" && !slices.Contains(contractMetrics, w.metric) {
				t.Errorf("metric %s is not one the function emits", w.metric)
			}
		})
	}
}

// The heartbeat alarms after two reconcile intervals without a completed reconcile, for every
// allowed interval, with a period CloudWatch accepts.
func TestHeartbeatAlarm(t *testing.T) {
	t.Parallel()
	tmpl := loadTransformed(t)
	p := obj(t, tmpl, "Resources", "HeartbeatAlarm", "Properties")
	for _, v := range strs(obj(t, tmpl, "Parameters", "ScheduleExpression")["AllowedValues"]) {
		s := newStack(t, tmpl, map[string]string{"ScheduleExpression": v})
		interval, err := rateDuration(v)
		if err != nil {
			t.Fatal(err)
		}
		period, _ := strconv.Atoi(s.str(p["Period"]))
		evals, _ := strconv.Atoi(s.str(p["EvaluationPeriods"]))
		datapoints, _ := strconv.Atoi(s.str(p["DatapointsToAlarm"]))
		if period <= 0 || period > 86400 || period%60 != 0 {
			t.Errorf("%s: Period %d, want a multiple of 60 up to 86400", v, period)
		}
		if got := time.Duration(period*evals) * time.Second; got != 2*interval || datapoints != evals {
			t.Errorf("%s: alarms after %v (%d of %d periods), want 2 intervals = %v, all periods empty", v, got, datapoints, evals, 2*interval)
		}
	}
	if got := scalar(p["MetricName"]); got != "Reconciled" {
		t.Errorf("MetricName: got %q, want Reconciled", got)
	}
}

// Token events reach the topic through one rule on the default bus that matches exactly the
// detail types pkg/notify sends, and its message names token, outcome and reason only.
func TestTokenEventsRule(t *testing.T) {
	t.Parallel()
	tmpl := loadTemplate(t)
	rule := obj(t, resource(t, tmpl, "TokenEventsRule", "AWS::Events::Rule"), "Properties")
	if rule["EventBusName"] != "default" || rule["State"] != "ENABLED" {
		t.Errorf("rule: bus %v state %v, want default ENABLED", rule["EventBusName"], rule["State"])
	}
	pattern := obj(t, rule, "EventPattern")
	if got := strs(pattern["source"]); !slices.Equal(got, []string{notify.Source}) {
		t.Errorf("pattern source: got %v, want [%s]", got, notify.Source)
	}
	wantTypes := []string{notify.DetailNeedsReauth, notify.DetailRecovered, notify.DetailInvalidConfig,
		notify.DetailCredentialsExpiring, notify.DetailRefreshTokenExpiring}
	gotTypes := strs(pattern["detail-type"])
	if !slices.Equal(slices.Sorted(slices.Values(gotTypes)), slices.Sorted(slices.Values(wantTypes))) {
		t.Errorf("pattern detail-type: got %v, want %v", gotTypes, wantTypes)
	}
	targets := rule["Targets"].([]any)
	if len(targets) != 1 {
		t.Fatalf("targets: got %d, want 1", len(targets))
	}
	target := obj(t, targets[0])
	if render(target["Arn"]) != "Ref:AlarmTopic" {
		t.Errorf("target: got %v, want the AlarmTopic", target["Arn"])
	}
	it := obj(t, target, "InputTransformer")
	paths := obj(t, it, "InputPathsMap")
	for k, v := range paths {
		if p := scalar(v); p == "$" || p == "$.detail" {
			t.Errorf("input path %s = %s: forwards whole documents; name the fields", k, p)
		}
	}
	for k, want := range map[string]string{"token": "$.detail.token", "outcome": "$.detail.outcome", "reason": "$.detail.reason"} {
		if got := scalar(paths[k]); got != want {
			t.Errorf("InputPathsMap.%s: got %q, want %q", k, got, want)
		}
	}
	// Fill the template as EventBridge does with an event pkg/notify would send.
	detail := notify.Detail{Token: "sahamati-prod", Outcome: "needs_reauth", Reason: "provider rejected the entity secret"}
	msg := scalar(it["InputTemplate"])
	values := map[string]string{"type": notify.DetailNeedsReauth, "token": detail.Token, "outcome": detail.Outcome,
		"reason": detail.Reason, "time": "2026-12-02T19:40:00Z", "account": testAccount, "region": testRegion}
	for k := range paths {
		v, ok := values[k]
		if !ok {
			t.Fatalf("InputPathsMap.%s: no sample value", k)
		}
		msg = strings.ReplaceAll(msg, "<"+k+">", v)
	}
	var line string
	if err := json.Unmarshal([]byte(msg), &line); err != nil {
		t.Fatalf("filled InputTemplate is not a JSON string (SNS would get an object): %v\n%s", err, msg)
	}
	for _, want := range []string{detail.Token, detail.Outcome, detail.Reason, notify.DetailNeedsReauth} {
		if !strings.Contains(line, want) {
			t.Errorf("message %q does not name %q", line, want)
		}
	}
	if strings.ContainsAny(line, "<>") {
		t.Errorf("message %q has an unfilled placeholder", line)
	}

	// The topic lets this rule (and CloudWatch alarms) publish.
	pol := obj(t, resource(t, tmpl, "AlarmTopicPolicy", "AWS::SNS::TopicPolicy"), "Properties")
	var rulePublishes bool
	for _, st := range statements(t, obj(t, pol, "PolicyDocument")) {
		svc := strs(obj(t, st.Raw["Principal"])["Service"])
		if slices.Equal(svc, []string{"events.amazonaws.com"}) && slices.Equal(st.Actions, []string{"sns:Publish"}) {
			cond := obj(t, st.Condition, "ArnEquals")
			rulePublishes = render(cond["aws:SourceArn"]) == "GetAtt:TokenEventsRule.Arn"
		}
	}
	if !rulePublishes {
		t.Error("AlarmTopicPolicy: no sns:Publish for events.amazonaws.com from TokenEventsRule")
	}

	// The e-mail subscription exists only when an address is given.
	subs := resourcesOfType(t, tmpl, "AWS::SNS::Subscription")
	if len(subs) != 1 {
		t.Fatalf("SNS subscriptions: got %v, want one", subs)
	}
	sub := obj(t, tmpl, "Resources", subs[0])
	for _, c := range []struct {
		email string
		want  bool
	}{{"", false}, {"ops@example.com", true}} {
		s := newStack(t, loadTransformed(t), map[string]string{"AlarmEmail": c.email})
		if got := s.active(sub); got != c.want {
			t.Errorf("AlarmEmail %q: subscription created %v, want %v", c.email, got, c.want)
		}
	}
}

// The dashboard parses as CloudWatch reads it and shows what an operator needs.
func TestDashboard(t *testing.T) {
	t.Parallel()
	tmpl := loadTransformed(t)
	for _, interval := range []string{"rate(12 hours)", "rate(30 minutes)"} {
		s := newStack(t, tmpl, map[string]string{"ScheduleExpression": interval})
		body := s.str(obj(t, tmpl, "Resources", "Dashboard", "Properties")["DashboardBody"])
		var dash struct {
			Widgets []struct {
				Type                string
				X, Y, Width, Height int
				Properties          map[string]any
			}
		}
		dec := json.NewDecoder(strings.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&dash); err != nil {
			t.Fatalf("DashboardBody is not JSON: %v\n%s", err, body)
		}
		var titles []string
		metrics := map[string]bool{}
		search := regexp.MustCompile(`MetricName="([A-Za-z]+)"`)
		for i, w := range dash.Widgets {
			title := scalar(w.Properties["title"])
			titles = append(titles, title)
			if w.Type != "metric" || w.Properties["region"] != testRegion {
				t.Errorf("widget %d %q: type %s region %v, want metric in the stack's region", i, title, w.Type, w.Properties["region"])
			}
			rows, _ := w.Properties["metrics"].([]any)
			if len(rows) == 0 {
				t.Errorf("widget %q: no metrics", title)
			}
			for _, r := range rows {
				row := r.([]any)
				if m, ok := row[0].(map[string]any); ok {
					expr := scalar(m["expression"])
					sm := search.FindStringSubmatch(expr)
					if sm == nil || !strings.HasPrefix(expr, "SEARCH('{TokenRefresher,") {
						t.Errorf("widget %q: expression %q, want a SEARCH over TokenRefresher", title, expr)
						continue
					}
					metrics["TokenRefresher/"+sm[1]] = true
					continue
				}
				ns, name := scalar(row[0]), scalar(row[1])
				metrics[ns+"/"+name] = true
				if ns == "AWS/Lambda" && (len(row) < 4 || row[3] != testFunction) {
					t.Errorf("widget %q: %s not for the refresher function: %v", title, name, row)
				}
			}
			if strings.Contains(title, "status") && scalar(w.Properties["period"]) != strconv.Itoa(map[string]int{"rate(12 hours)": 43200, "rate(30 minutes)": 1800}[interval]) {
				t.Errorf("ScheduleExpression %s: status widget period %v, want the reconcile interval", interval, w.Properties["period"])
			}
		}
		for m := range metrics {
			if ns, name, _ := strings.Cut(m, "/"); ns == "TokenRefresher" && !slices.Contains(contractMetrics, name) {
				t.Errorf("dashboard metric %s is not one the function emits (typo?)", name)
			}
		}
		for _, want := range []string{"TokenRefresher/Outcomes", "TokenRefresher/SecondsToExpiry", "TokenRefresher/QuotaUsed",
			"TokenRefresher/WriteBudgetUsedPercent", "AWS/Lambda/Duration", "AWS/Lambda/Errors"} {
			if !metrics[want] {
				t.Errorf("dashboard does not show %s", want)
			}
		}
		if !slices.ContainsFunc(titles, func(s string) bool { return strings.Contains(s, "by status") }) {
			t.Errorf("dashboard titles %v: no tokens-by-status widget", titles)
		}
	}
}

// The sweep schedule and SWEEP_INTERVAL come from one parameter, so they always agree; "off"
// disables the schedule and tells the function there is no sweep.
func TestSweepSchedule(t *testing.T) {
	t.Parallel()
	tmpl := loadTransformed(t)
	if got := paramDefault(t, loadTemplate(t), "SweepInterval"); got != "5m" {
		t.Errorf("SweepInterval default: got %q, want 5m", got)
	}
	sched := obj(t, tmpl, "Resources", "RefresherFunctionSweep")
	env := obj(t, tmpl, "Resources", "RefresherFunction", "Properties", "Environment", "Variables")
	for _, c := range []struct{ param, expr, state string }{
		{"5m", "rate(5 minutes)", "ENABLED"},
		{"1m", "rate(1 minute)", "ENABLED"},
		{"15m", "rate(15 minutes)", "ENABLED"},
		{"off", "", "DISABLED"},
	} {
		s := newStack(t, tmpl, map[string]string{"SweepInterval": c.param})
		p := obj(t, sched, "Properties")
		if got := s.str(p["State"]); got != c.state {
			t.Errorf("SweepInterval %s: State %q, want %q", c.param, got, c.state)
		}
		expr := s.str(p["ScheduleExpression"])
		if _, err := rateDuration(expr); err != nil {
			t.Errorf("SweepInterval %s: expression %q is not a valid rate (even a disabled schedule needs one): %v", c.param, expr, err)
		}
		if got := s.str(env["SWEEP_INTERVAL"]); got != c.param {
			t.Errorf("SweepInterval %s: SWEEP_INTERVAL %q", c.param, got)
		}
		if c.expr == "" {
			continue
		}
		if expr != c.expr {
			t.Errorf("SweepInterval %s: expression %q, want %q", c.param, expr, c.expr)
		}
		d, _ := rateDuration(expr)
		if want, _ := time.ParseDuration(c.param); d != want {
			t.Errorf("SweepInterval %s: schedule every %v, function told %v", c.param, d, want)
		}
	}
	target := obj(t, sched, "Properties", "Target")
	var req invocation.Request
	dec := json.NewDecoder(strings.NewReader(scalar(target["Input"])))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil || !req.Sweep || req.Force || req.Tokens != nil || req.Ensure != nil {
		t.Errorf("sweep Input %v: got %+v (%v), want exactly {\"sweep\":true}", target["Input"], req, err)
	}
	if n := scalar(obj(t, target, "RetryPolicy")["MaximumRetryAttempts"]); n != "0" {
		t.Errorf("sweep RetryPolicy.MaximumRetryAttempts: got %s, want 0 (the next sweep is minutes away)", n)
	}
	if render(target["Arn"]) != "GetAtt:RefresherFunction.Arn" {
		t.Errorf("sweep target: got %v, want the function itself (the ensure alias rejects sweeps)", target["Arn"])
	}
}

// Failed asynchronous runs are not retried (a retry re-refreshes what is due: more rotations
// and quota) and land in an encrypted queue; undeliverable schedules land there too.
func TestNoRetriesMultiplyRotations(t *testing.T) {
	t.Parallel()
	tmpl := loadTransformed(t)
	s := newStack(t, tmpl, nil)
	var qualifiers []string
	for _, id := range resourcesOfType(t, tmpl, "AWS::Lambda::EventInvokeConfig") {
		p := obj(t, tmpl, "Resources", id, "Properties")
		qualifiers = append(qualifiers, scalar(p["Qualifier"]))
		if n := scalar(p["MaximumRetryAttempts"]); n != "0" {
			t.Errorf("%s MaximumRetryAttempts: got %s, want 0", id, n)
		}
		if got := s.str(obj(t, p, "DestinationConfig", "OnFailure")["Destination"]); got != testQueueARN {
			t.Errorf("%s OnFailure: got %q, want the failure queue", id, got)
		}
	}
	if sort.Strings(qualifiers); !slices.Equal(qualifiers, []string{"$LATEST", "ensure"}) {
		t.Errorf("EventInvokeConfig qualifiers: got %v, want [$LATEST ensure]", qualifiers)
	}
	q := obj(t, resource(t, tmpl, "AsyncFailureQueue", "AWS::SQS::Queue"), "Properties")
	if q["SqsManagedSseEnabled"] != true && q["KmsMasterKeyId"] == nil {
		t.Error("AsyncFailureQueue is not encrypted")
	}
	// Lambda sends failures with the function's role; Scheduler with each schedule's role.
	send := request{Principal: testRoleARN, Action: "sqs:SendMessage", Resource: testQueueARN}
	if got := authorize(t, send, s.roleStatements("RefresherRole"), nil); got != allowed {
		t.Errorf("refresher role sqs:SendMessage to the queue: got %s, want allowed", got)
	}
	schedules := resourcesOfType(t, tmpl, "AWS::Scheduler::Schedule")
	if len(schedules) != 2 {
		t.Errorf("schedules: got %v, want reconcile and sweep", schedules)
	}
	for _, id := range schedules {
		target := obj(t, tmpl, "Resources", id, "Properties", "Target")
		if got := s.str(obj(t, target, "DeadLetterConfig")["Arn"]); got != testQueueARN {
			t.Errorf("%s DeadLetterConfig: got %q, want the failure queue", id, got)
		}
		role := strings.TrimSuffix(render(target["RoleArn"]), ".Arn")
		role = strings.TrimPrefix(role, "GetAtt:")
		if got := authorize(t, send, s.roleStatements(role), nil); got != allowed {
			t.Errorf("%s role %s sqs:SendMessage: got %s, want allowed", id, role, got)
		}
		if n, _ := strconv.Atoi(scalar(obj(t, target, "RetryPolicy")["MaximumRetryAttempts"])); n > 2 {
			t.Errorf("%s delivery retries: got %d, want at most 2", id, n)
		}
	}
}

// The template's state table has the keys and the sparse due index that pkg/ledger creates
// (docs/design.md §2): ledger.CreateTable runs against moto and the result is compared.
func TestStateTableMatchesLedger(t *testing.T) {
	t.Parallel()
	tmpl := loadTemplate(t)
	props := obj(t, tmpl, "Resources", "StateTable", "Properties")

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	db := dynamodb.NewFromConfig(moto(t).AWSConfig(t))
	if err := ledger.CreateTable(ctx, db, "deploy-state"); err != nil {
		t.Fatalf("ledger.CreateTable: %v", err)
	}
	out, err := db.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String("deploy-state")})
	if err != nil {
		t.Fatal(err)
	}
	desc := out.Table

	attrs := func() []string {
		var got []string
		for _, a := range props["AttributeDefinitions"].([]any) {
			m := obj(t, a)
			got = append(got, scalar(m["AttributeName"])+":"+scalar(m["AttributeType"]))
		}
		return slices.Sorted(slices.Values(got))
	}()
	var want []string
	for _, a := range desc.AttributeDefinitions {
		want = append(want, aws.ToString(a.AttributeName)+":"+string(a.AttributeType))
	}
	if want = slices.Sorted(slices.Values(want)); !slices.Equal(attrs, want) {
		t.Errorf("AttributeDefinitions: template %v, ledger.CreateTable %v", attrs, want)
	}
	keys := func(v any) []string {
		var out []string
		for _, k := range v.([]any) {
			m := obj(t, k)
			out = append(out, scalar(m["AttributeName"])+":"+scalar(m["KeyType"]))
		}
		return out
	}
	var wantKeys []string
	for _, k := range desc.KeySchema {
		wantKeys = append(wantKeys, aws.ToString(k.AttributeName)+":"+string(k.KeyType))
	}
	if got := keys(props["KeySchema"]); !slices.Equal(got, wantKeys) {
		t.Errorf("KeySchema: template %v, ledger.CreateTable %v", got, wantKeys)
	}

	gsis, _ := props["GlobalSecondaryIndexes"].([]any)
	if len(gsis) != len(desc.GlobalSecondaryIndexes) {
		t.Fatalf("GlobalSecondaryIndexes: template %d, ledger.CreateTable %d", len(gsis), len(desc.GlobalSecondaryIndexes))
	}
	for i, g := range desc.GlobalSecondaryIndexes {
		tg := obj(t, gsis[i])
		var wk []string
		for _, k := range g.KeySchema {
			wk = append(wk, aws.ToString(k.AttributeName)+":"+string(k.KeyType))
		}
		if scalar(tg["IndexName"]) != aws.ToString(g.IndexName) || !slices.Equal(keys(tg["KeySchema"]), wk) ||
			scalar(obj(t, tg, "Projection")["ProjectionType"]) != string(g.Projection.ProjectionType) {
			t.Errorf("index %d: template %v, ledger.CreateTable %s %v %s", i, tg, aws.ToString(g.IndexName), wk, g.Projection.ProjectionType)
		}
		if _, ok := tg["ProvisionedThroughput"]; ok {
			t.Errorf("index %s: ProvisionedThroughput on an on-demand table", aws.ToString(g.IndexName))
		}
	}
	// Contract 1 itself, so a change made on both sides at once is still caught.
	if got := fmt.Sprint(attrs); got != "[due_at:N due_shard:S pk:S]" {
		t.Errorf("attributes: got %s, want pk S, due_shard S, due_at N", got)
	}
	if len(gsis) != 1 || scalar(obj(t, gsis[0])["IndexName"]) != ledger.DueIndex || ledger.DueIndex != "due" ||
		!slices.Equal(keys(obj(t, gsis[0])["KeySchema"]), []string{"due_shard:HASH", "due_at:RANGE"}) {
		t.Errorf("due index: got %v, want due: due_shard HASH, due_at RANGE, ALL", gsis)
	}
}

// Events published by pkg/notify reach the topic's subscribers through the template's own
// rule: moto's EventBridge matches the rule's pattern and applies its InputTransformer, and an
// SQS queue stands in for the SNS topic (moto does not deliver to SNS e-mail).
func TestTokenEventsRouteThroughRule(t *testing.T) {
	t.Parallel()
	tmpl := loadTemplate(t)
	rule := obj(t, tmpl, "Resources", "TokenEventsRule", "Properties")
	target := obj(t, rule["Targets"].([]any)[0])
	it := obj(t, target, "InputTransformer")

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := moto(t).AWSConfig(t)
	eb := eventbridge.NewFromConfig(cfg)
	sq := sqs.NewFromConfig(cfg)

	name := fmt.Sprintf("deploy-token-events-%d", time.Now().UnixNano())
	q, err := sq.CreateQueue(ctx, &sqs.CreateQueueInput{QueueName: aws.String(name)})
	if err != nil {
		t.Fatal(err)
	}
	attrs, err := sq.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: q.QueueUrl,
		AttributeNames: []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNameQueueArn}})
	if err != nil {
		t.Fatal(err)
	}
	pattern, err := json.Marshal(rule["EventPattern"])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := eb.PutRule(ctx, &eventbridge.PutRuleInput{Name: aws.String(name), EventBusName: aws.String("default"),
		EventPattern: aws.String(string(pattern)), State: ebtypes.RuleStateEnabled}); err != nil {
		t.Fatal(err)
	}
	paths := map[string]string{}
	for k, v := range obj(t, it, "InputPathsMap") {
		paths[k] = scalar(v)
	}
	if _, err := eb.PutTargets(ctx, &eventbridge.PutTargetsInput{Rule: aws.String(name), EventBusName: aws.String("default"),
		Targets: []ebtypes.Target{{Id: aws.String("q"), Arn: aws.String(attrs.Attributes["QueueArn"]),
			InputTransformer: &ebtypes.InputTransformer{InputPathsMap: paths, InputTemplate: aws.String(scalar(it["InputTemplate"]))}}}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		_, _ = eb.RemoveTargets(ctx, &eventbridge.RemoveTargetsInput{Rule: aws.String(name), Ids: []string{"q"}})
		_, _ = eb.DeleteRule(ctx, &eventbridge.DeleteRuleInput{Name: aws.String(name)})
		_, _ = sq.DeleteQueue(ctx, &sqs.DeleteQueueInput{QueueUrl: q.QueueUrl})
	})

	events := []notify.Event{
		{DetailType: notify.DetailNeedsReauth, Token: "acme", Outcome: "needs_reauth", Reason: "provider rejected the refresh token (invalid_grant)"},
		{DetailType: notify.DetailCredentialsExpiring, Token: "sahamati/prod", Outcome: "refreshed", Reason: "entity secret expires in 5 days"},
	}
	pub := notify.New(eb, notify.Options{EventBusName: "default"})
	if err := pub.Publish(ctx, events...); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	// Not matched by the rule: another source, and a detail type the rule does not list.
	if _, err := eb.PutEvents(ctx, &eventbridge.PutEventsInput{Entries: []ebtypes.PutEventsRequestEntry{
		{Source: aws.String("someone-else"), DetailType: aws.String(notify.DetailNeedsReauth), Detail: aws.String(`{"token":"x"}`), EventBusName: aws.String("default")},
		{Source: aws.String(notify.Source), DetailType: aws.String("Token Refreshed"), Detail: aws.String(`{"token":"y"}`), EventBusName: aws.String("default")},
	}}); err != nil {
		t.Fatal(err)
	}

	var got []string
	for {
		out, err := sq.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{QueueUrl: q.QueueUrl, MaxNumberOfMessages: 10})
		if err != nil {
			t.Fatal(err)
		}
		if len(out.Messages) == 0 {
			break
		}
		for _, m := range out.Messages {
			var line string
			if err := json.Unmarshal([]byte(aws.ToString(m.Body)), &line); err != nil {
				t.Fatalf("message %q: want one JSON string (what SNS e-mail shows as text): %v", aws.ToString(m.Body), err)
			}
			got = append(got, line)
		}
	}
	sort.Strings(got)
	if len(got) != len(events) {
		t.Fatalf("messages: got %d %q, want %d (only token-refresher events of the listed types)", len(got), got, len(events))
	}
	for _, ev := range events {
		i := slices.IndexFunc(got, func(s string) bool { return strings.Contains(s, "token "+ev.Token+" ") })
		if i < 0 {
			t.Errorf("no message names token %s: %q", ev.Token, got)
			continue
		}
		for _, want := range []string{ev.DetailType, ev.Outcome, ev.Reason, testAccount} {
			if !strings.Contains(got[i], want) {
				t.Errorf("message %q does not contain %q", got[i], want)
			}
		}
		if strings.ContainsAny(got[i], "<>") {
			t.Errorf("message %q has an unfilled placeholder", got[i])
		}
	}
}
