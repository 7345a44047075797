package deploy

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

const (
	privateARN = "arn:aws:secretsmanager:" + testRegion + ":" + testAccount + ":secret:token-refresher/private/acme-AbC123"
	accessARN  = "arn:aws:secretsmanager:" + testRegion + ":" + testAccount + ":secret:token-refresher/access/acme-DeF456"
	adminRole  = "arn:aws:iam::" + testAccount + ":role/TokenAdmin"
)

// broad is what PowerUserAccess-like principals hold: every Secrets Manager and KMS action.
var broad = []iamStatement{{Sid: "Broad", Effect: "Allow", Action: []string{"secretsmanager:*", "kms:*", "lambda:*"}, Resource: []string{"*"}}}

// privatePolicy returns the resource policy the stack outputs for private secrets.
func privatePolicy(t *testing.T, s *stack) []iamStatement {
	t.Helper()
	out := obj(t, s.tmpl, "Outputs", "PrivateSecretResourcePolicy")
	text := s.str(out["Value"])
	var doc map[string]any
	if err := json.Unmarshal([]byte(text), &doc); err != nil {
		t.Fatalf("PrivateSecretResourcePolicy is not JSON: %v\n%s", err, text)
	}
	if doc["Version"] != "2012-10-17" {
		t.Errorf("PrivateSecretResourcePolicy Version: got %v, want 2012-10-17", doc["Version"])
	}
	return s.policyStatements(doc)
}

// Only the refresher role and the administrator role can read or write a private secret,
// whatever identity policy anyone else holds — decided by the policies alone.
func TestPrivateSecretsReadableOnlyByRefresherAndAdmin(t *testing.T) {
	t.Parallel()
	tmpl := loadTransformed(t)
	const ssoAdmin = "arn:aws:iam::" + testAccount + ":role/aws-reserved/sso.amazonaws.com/*/AWSReservedSSO_TokenAdmin_*"
	consumerRole := "arn:aws:iam::" + testAccount + ":role/billing-app"
	powerUser := "arn:aws:iam::" + testAccount + ":role/PowerUser"
	rootUser := "arn:aws:iam::" + testAccount + ":root"

	for _, admin := range []struct {
		param, principal, other string
	}{
		{adminRole, adminRole, powerUser},
		{"", rootUser, adminRole},
		{ssoAdmin, "arn:aws:iam::" + testAccount + ":role/aws-reserved/sso.amazonaws.com/eu-west-1/AWSReservedSSO_TokenAdmin_0a1b2c",
			"arn:aws:iam::" + testAccount + ":role/aws-reserved/sso.amazonaws.com/eu-west-1/AWSReservedSSO_PowerUser_9f8e7d"},
	} {
		t.Run("AdminRoleArn="+admin.param, func(t *testing.T) {
			s := newStack(t, tmpl, map[string]string{"AdminRoleArn": admin.param})
			rp := privatePolicy(t, s)
			refresher := s.roleStatements("RefresherRole")
			consumer := append(s.managedStatements("ConsumerReadPolicy"), s.managedStatements("ConsumerEnsurePolicy")...)

			cases := []struct {
				name      string
				principal string
				identity  []iamStatement
				action    string
				resource  string
				rp        []iamStatement
				want      decision
			}{
				{"refresher reads private", testRoleARN, refresher, "secretsmanager:GetSecretValue", privateARN, rp, allowed},
				{"refresher writes private", testRoleARN, refresher, "secretsmanager:PutSecretValue", privateARN, rp, allowed},
				{"refresher moves a label", testRoleARN, refresher, "secretsmanager:UpdateSecretVersionStage", privateARN, rp, allowed},
				{"refresher never reads access", testRoleARN, refresher, "secretsmanager:GetSecretValue", accessARN, nil, implicitDeny},
				{"refresher cannot drop the policy", testRoleARN, refresher, "secretsmanager:DeleteResourcePolicy", privateARN, rp, implicitDeny},
				{"refresher cannot delete", testRoleARN, refresher, "secretsmanager:DeleteSecret", privateARN, rp, implicitDeny},
				{"admin reads private", admin.principal, broad, "secretsmanager:GetSecretValue", privateARN, rp, allowed},
				{"admin seeds private", admin.principal, broad, "secretsmanager:PutSecretValue", privateARN, rp, allowed},
				{"admin manages the policy", admin.principal, broad, "secretsmanager:PutResourcePolicy", privateARN, rp, allowed},
				{"consumer reads access", consumerRole, consumer, "secretsmanager:GetSecretValue", accessARN, nil, allowed},
				{"consumer cannot read private", consumerRole, consumer, "secretsmanager:GetSecretValue", privateARN, rp, explicitDeny},
				{"consumer policy alone grants no private", consumerRole, consumer, "secretsmanager:GetSecretValue", privateARN, nil, implicitDeny},
				{"broad principal cannot read private", admin.other, broad, "secretsmanager:GetSecretValue", privateARN, rp, explicitDeny},
				{"broad principal cannot write private", admin.other, broad, "secretsmanager:PutSecretValue", privateARN, rp, explicitDeny},
				{"broad principal cannot overwrite via UpdateSecret", admin.other, broad, "secretsmanager:UpdateSecret", privateARN, rp, explicitDeny},
				{"broad principal cannot move labels", admin.other, broad, "secretsmanager:UpdateSecretVersionStage", privateARN, rp, explicitDeny},
				{"broad principal cannot drop the policy", admin.other, broad, "secretsmanager:DeleteResourcePolicy", privateARN, rp, explicitDeny},
				{"broad principal cannot replace the policy", admin.other, broad, "secretsmanager:PutResourcePolicy", privateARN, rp, explicitDeny},
				{"broad principal still reads access", admin.other, broad, "secretsmanager:GetSecretValue", accessARN, nil, allowed},
				// Control: without the resource policy the same principal reads everything,
				// so the denials above come from the policy and the evaluator can say "allowed".
				{"control: no resource policy", admin.other, broad, "secretsmanager:GetSecretValue", privateARN, nil, allowed},
			}
			for _, c := range cases {
				got := authorize(t, request{Principal: c.principal, Action: c.action, Resource: c.resource}, c.identity, c.rp)
				if got != c.want {
					t.Errorf("%s (%s %s by %s): got %s, want %s", c.name, c.action, c.resource, c.principal, got, c.want)
				}
			}
		})
	}
}

// The output policy names exactly the refresher role and the admin (or root), and its deny
// covers reading, writing and changing the policy itself.
func TestPrivateSecretResourcePolicyOutput(t *testing.T) {
	t.Parallel()
	tmpl := loadTransformed(t)
	s := newStack(t, tmpl, map[string]string{"AdminRoleArn": adminRole})
	rp := privatePolicy(t, s)
	if len(rp) != 1 {
		t.Fatalf("statements: got %d, want 1", len(rp))
	}
	st := rp[0]
	if st.Effect != "Deny" || st.Principal != "*" || !slices.Equal(st.Resource, []string{"*"}) {
		t.Errorf("statement: got %s %v on %v, want Deny * on *", st.Effect, st.Principal, st.Resource)
	}
	for _, a := range []string{"secretsmanager:GetSecretValue", "secretsmanager:PutSecretValue", "secretsmanager:PutResourcePolicy", "secretsmanager:DeleteResourcePolicy"} {
		if !slices.Contains(st.Action, a) {
			t.Errorf("Deny actions %v: missing %s", st.Action, a)
		}
	}
	cond, _ := st.Condition["StringNotLike"].(map[string]any)
	if got, want := strs(cond["aws:PrincipalArn"]), []string{testRoleARN, adminRole}; !slices.Equal(got, want) {
		t.Errorf("StringNotLike aws:PrincipalArn: got %v, want %v", got, want)
	}
	if len(st.Condition) != 1 {
		t.Errorf("Condition: got %v, want only StringNotLike", st.Condition)
	}
	role := obj(t, tmpl, "Outputs", "RefresherRoleArn")
	if got := s.str(role["Value"]); got != testRoleARN {
		t.Errorf("RefresherRoleArn: got %q, want the role's ARN", got)
	}
	fn := obj(t, tmpl, "Resources", "RefresherFunction", "Properties")
	if got := s.str(fn["Role"]); got != testRoleARN {
		t.Errorf("RefresherFunction Role: got %q, want RefresherRole", got)
	}
}

// The ensure policy reaches only the ensure alias: the unqualified function (which accepts
// force) and any version are refused, while operators' policy reaches the function.
func TestEnsurePolicyCannotForce(t *testing.T) {
	t.Parallel()
	tmpl := loadTransformed(t)
	s := newStack(t, tmpl, nil)
	alias := obj(t, tmpl, "Resources", "EnsureAlias")
	if alias["Type"] != "AWS::Lambda::Alias" {
		t.Fatalf("EnsureAlias Type: got %v", alias["Type"])
	}
	p := obj(t, alias, "Properties")
	if refOf(p["FunctionName"]) != "RefresherFunction" || p["Name"] != "ensure" || p["FunctionVersion"] != "$LATEST" {
		t.Errorf("EnsureAlias: got %v, want name ensure on RefresherFunction $LATEST", p)
	}
	ensure := s.managedStatements("ConsumerEnsurePolicy")
	operator := s.managedStatements("OperatorInvokePolicy")
	for _, c := range []struct {
		name     string
		identity []iamStatement
		resource string
		want     decision
	}{
		{"consumer invokes ensure", ensure, testFnARN + ":ensure", allowed},
		{"consumer cannot invoke the function", ensure, testFnARN, implicitDeny},
		{"consumer cannot invoke $LATEST", ensure, testFnARN + ":$LATEST", implicitDeny},
		{"consumer cannot invoke a version", ensure, testFnARN + ":7", implicitDeny},
		{"consumer cannot invoke another alias", ensure, testFnARN + ":ensure2", implicitDeny},
		{"operator invokes the function", operator, testFnARN, allowed},
	} {
		got := authorize(t, request{Principal: "arn:aws:iam::" + testAccount + ":role/app", Action: "lambda:InvokeFunction", Resource: c.resource}, c.identity, nil)
		if got != c.want {
			t.Errorf("%s: got %s, want %s", c.name, got, c.want)
		}
	}
	out := obj(t, tmpl, "Outputs", "EnsureFunctionArn")
	if got := s.str(out["Value"]); got != testFnARN+":ensure" {
		t.Errorf("EnsureFunctionArn: got %q, want the alias ARN", got)
	}
}

// ListSecrets is the only action on "*" in any identity policy of the deployed stack, every
// other resource is an ARN in this account and region, and no identity policy uses
// NotAction/NotResource or an action wildcard.
func TestOnlyListSecretsOnStar(t *testing.T) {
	t.Parallel()
	tmpl := loadTransformed(t)
	for _, params := range []map[string]string{
		nil,
		{"CreateKmsKey": "true", "AdminRoleArn": adminRole, "ConsumerAccountIds": "210987654321"},
		{"KmsKeyArn": testKeyARN, "SweepInterval": "off"},
	} {
		s := newStack(t, tmpl, params)
		checked, star := 0, 0
		for id, r := range obj(t, tmpl, "Resources") {
			m := obj(t, r)
			if !s.active(m) {
				continue
			}
			props, _ := m["Properties"].(map[string]any)
			var docs []any
			switch scalar(m["Type"]) {
			case "AWS::IAM::Role":
				pols, _ := props["Policies"].([]any)
				for _, p := range pols {
					docs = append(docs, obj(t, p)["PolicyDocument"])
				}
				if _, ok := props["ManagedPolicyArns"]; ok {
					t.Errorf("%s: ManagedPolicyArns %v, want none", id, props["ManagedPolicyArns"])
				}
			case "AWS::IAM::RolePolicy", "AWS::IAM::Policy", "AWS::IAM::ManagedPolicy":
				docs = append(docs, props["PolicyDocument"])
			}
			for _, d := range docs {
				raw := s.resolve(d).(map[string]any)
				for _, st := range s.policyStatements(raw) {
					checked++
					if len(st.NotAction) > 0 {
						t.Errorf("%s %s: NotAction", id, st.Sid)
					}
					for _, a := range st.Action {
						if strings.Contains(a, "*") {
							t.Errorf("%s %s: wildcard action %s", id, st.Sid, a)
						}
					}
					for _, res := range st.Resource {
						if res == "*" {
							star++
							if !slices.Equal(st.Action, []string{"secretsmanager:ListSecrets"}) || st.Effect != "Allow" {
								t.Errorf("%s %s: %s %v on *, want only Allow secretsmanager:ListSecrets", id, st.Sid, st.Effect, st.Action)
							}
							continue
						}
						f := arnFields(res)
						region := f[3]
						if f[2] == "iam" {
							region = testRegion
						}
						if len(f) != 6 || f[0] != "arn" || f[1] != "aws" || region != testRegion || f[4] != testAccount {
							t.Errorf("%s %s: resource %q, want an ARN in %s/%s", id, st.Sid, res, testRegion, testAccount)
						}
					}
				}
			}
		}
		if checked < 10 || star != 1 {
			t.Errorf("params %v: checked %d statements with %d on *, want the stack's statements and exactly one on *", params, checked, star)
		}
	}
}

// The function's actions are exactly the calls it makes, each on its own resource.
func TestRefresherPolicyIsLeastPrivilege(t *testing.T) {
	t.Parallel()
	tmpl := loadTransformed(t)
	s := newStack(t, tmpl, nil)
	byResource := map[string][]string{}
	for _, st := range s.roleStatements("RefresherRole") {
		if st.Effect != "Allow" {
			t.Errorf("statement %s: Effect %s, want Allow", st.Sid, st.Effect)
		}
		for _, r := range st.Resource {
			kind := map[string]string{
				strings.TrimSuffix(privateARN, "acme-AbC123") + "*": "private",
				strings.TrimSuffix(accessARN, "acme-DeF456") + "*":  "access",
				testTableARN:                "table",
				testTableARN + "/index/due": "index",
				"*":                         "*",
				testQueueARN:                "queue",
				testEscrowARN:               "escrow",
				"arn:aws:events:" + testRegion + ":" + testAccount + ":event-bus/default":                         "bus",
				"arn:aws:logs:" + testRegion + ":" + testAccount + ":log-group:" + testLogGroup:                   "logs",
				"arn:aws:logs:" + testRegion + ":" + testAccount + ":log-group:" + testLogGroup + ":log-stream:*": "logs",
			}[r]
			if kind == "" {
				t.Errorf("statement %s: unexpected resource %q", st.Sid, r)
				continue
			}
			byResource[kind] = append(byResource[kind], st.Action...)
		}
	}
	want := map[string][]string{
		"private": {"secretsmanager:DescribeSecret", "secretsmanager:GetSecretValue", "secretsmanager:PutSecretValue", "secretsmanager:UpdateSecretVersionStage"},
		"access":  {"secretsmanager:CreateSecret", "secretsmanager:DescribeSecret", "secretsmanager:PutSecretValue", "secretsmanager:TagResource", "secretsmanager:UpdateSecretVersionStage"},
		"*":       {"secretsmanager:ListSecrets"},
		"table":   {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Scan", "dynamodb:UpdateItem"},
		"index":   {"dynamodb:Query"},
		"queue":   {"sqs:SendMessage"},
		"bus":     {"events:PutEvents"},
		"escrow":  {"kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"},
		"logs":    {"logs:CreateLogStream", "logs:PutLogEvents"},
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
	// TagResource only for the refresher's own tag, at creation.
	for _, st := range s.roleStatements("RefresherRole") {
		if slices.Contains(st.Action, "secretsmanager:TagResource") && st.Condition == nil {
			t.Errorf("statement %s: TagResource without a condition", st.Sid)
		}
	}
	// The role is assumable by Lambda only.
	trust := s.policyStatements(obj(t, tmpl, "Resources", "RefresherRole", "Properties")["AssumeRolePolicyDocument"])
	if len(trust) != 1 || !slices.Equal(strs(obj(t, trust[0].Principal)["Service"]), []string{"lambda.amazonaws.com"}) {
		t.Errorf("RefresherRole trust: got %+v, want lambda.amazonaws.com only", trust)
	}
}

// The customer-managed key option: off by default; created (rotating, retained) or given; the
// function and consumers may use it only through Secrets Manager; both options at once are refused.
func TestKmsKeyOption(t *testing.T) {
	t.Parallel()
	tmpl := loadTransformed(t)
	viaSM := map[string]string{"kms:ViaService": "secretsmanager." + testRegion + ".amazonaws.com"}
	for _, c := range []struct {
		name    string
		params  map[string]string
		key     string // "" = no customer-managed key
		created bool
	}{
		{"default", nil, "", false},
		{"created", map[string]string{"CreateKmsKey": "true"}, testKeyARN, true},
		{"given", map[string]string{"KmsKeyArn": "arn:aws:kms:us-east-1:123456789012:key/0000aaaa-0000-0000-0000-000000000000"},
			"arn:aws:kms:us-east-1:123456789012:key/0000aaaa-0000-0000-0000-000000000000", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := newStack(t, tmpl, c.params)
			key := obj(t, tmpl, "Resources", "SecretsKey")
			if got := s.active(key); got != c.created {
				t.Fatalf("SecretsKey created: got %v, want %v", got, c.created)
			}
			env := obj(t, tmpl, "Resources", "RefresherFunction", "Properties", "Environment", "Variables")
			if got := s.str(env["KMS_KEY_ID"]); got != c.key {
				t.Errorf("KMS_KEY_ID: got %q, want %q", got, c.key)
			}
			refresher := s.roleStatements("RefresherRole")
			consumer := s.managedStatements("ConsumerReadPolicy")
			probe := c.key
			if probe == "" {
				probe = testKeyARN
			}
			wantVia, wantDirect := implicitDeny, implicitDeny
			if c.key != "" {
				wantVia = allowed
			}
			for _, r := range []struct {
				who      string
				identity []iamStatement
				action   string
			}{
				{"refresher", refresher, "kms:Decrypt"},
				{"refresher", refresher, "kms:GenerateDataKey"},
				{"consumer", consumer, "kms:Decrypt"},
			} {
				req := request{Principal: testRoleARN, Action: r.action, Resource: probe, Context: viaSM}
				if got := authorize(t, req, r.identity, nil); got != wantVia {
					t.Errorf("%s %s via Secrets Manager: got %s, want %s", r.who, r.action, got, wantVia)
				}
				req.Context = nil
				if got := authorize(t, req, r.identity, nil); got != wantDirect {
					t.Errorf("%s %s directly: got %s, want %s", r.who, r.action, got, wantDirect)
				}
			}
			if got := authorize(t, request{Principal: testRoleARN, Action: "kms:GenerateDataKey", Resource: probe, Context: viaSM}, consumer, nil); got != implicitDeny {
				t.Errorf("consumer kms:GenerateDataKey: got %s, want implicit deny (consumers only decrypt)", got)
			}
			out := obj(t, tmpl, "Outputs", "SecretsKeyArn")
			if s.active(out) != (c.key != "") {
				t.Errorf("SecretsKeyArn output present: got %v, want %v", s.active(out), c.key != "")
			} else if c.key != "" && s.str(out["Value"]) != c.key {
				t.Errorf("SecretsKeyArn: got %q, want %q", s.str(out["Value"]), c.key)
			}
			if !c.created {
				return
			}
			if key["DeletionPolicy"] != "Retain" || key["UpdateReplacePolicy"] != "Retain" {
				t.Errorf("SecretsKey policies: got %v/%v, want Retain (secrets encrypted with it)", key["DeletionPolicy"], key["UpdateReplacePolicy"])
			}
			kp := obj(t, key, "Properties")
			if kp["EnableKeyRotation"] != true {
				t.Error("SecretsKey: EnableKeyRotation is not true")
			}
			policy := s.policyStatements(kp["KeyPolicy"])
			// The key policy lets the refresher use the key through Secrets Manager only.
			req := request{Principal: testRoleARN, Action: "kms:Decrypt", Resource: testKeyARN, Context: viaSM}
			if got := authorize(t, req, nil, policy); got != allowed {
				t.Errorf("key policy, refresher via Secrets Manager: got %s, want allowed", got)
			}
		})
	}

	// Rules: KmsKeyArn and CreateKmsKey=true together are refused before anything is created.
	s := newStack(t, tmpl, map[string]string{"KmsKeyArn": testKeyARN, "CreateKmsKey": "true"})
	rule := obj(t, tmpl, "Rules", "OneKeySource")
	if !s.evalCond(rule["RuleCondition"]) {
		t.Fatal("OneKeySource: RuleCondition false with KmsKeyArn set")
	}
	for _, a := range rule["Assertions"].([]any) {
		if s.evalCond(obj(t, a)["Assert"]) {
			t.Error("OneKeySource assertion holds with both options set, want it to fail")
		}
	}
}

// stateTablePolicy returns the state table's resource policy as deployed.
func stateTablePolicy(t *testing.T, s *stack) []iamStatement {
	t.Helper()
	rp := obj(t, s.tmpl, "Resources", "StateTable", "Properties", "ResourcePolicy")
	return s.policyStatements(rp["PolicyDocument"])
}

// dynamoDataPlane is every DynamoDB action that reads or writes items (TransactGetItems and
// TransactWriteItems are authorised per item through these).
var dynamoDataPlane = []string{
	"dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query", "dynamodb:Scan",
	"dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem",
	"dynamodb:ConditionCheckItem", "dynamodb:PartiQLSelect", "dynamodb:PartiQLInsert",
	"dynamodb:PartiQLUpdate", "dynamodb:PartiQLDelete",
}

// The state table holds escrowed refresh tokens and the leases that fence every write: only
// the refresher role and the administrator role read or write its items, whatever identity
// policy anyone else holds, while the table itself stays manageable (stack updates).
func TestStateTableReadableOnlyByRefresherAndAdmin(t *testing.T) {
	t.Parallel()
	tmpl := loadTransformed(t)
	const ssoAdmin = "arn:aws:iam::" + testAccount + ":role/aws-reserved/sso.amazonaws.com/*/AWSReservedSSO_TokenAdmin_*"
	powerUser := "arn:aws:iam::" + testAccount + ":role/PowerUser"
	rootUser := "arn:aws:iam::" + testAccount + ":root"
	consumerRole := "arn:aws:iam::" + testAccount + ":role/billing-app"
	allDynamo := []iamStatement{{Sid: "Broad", Effect: "Allow", Action: []string{"dynamodb:*"}, Resource: []string{"*"}}}
	index := testTableARN + "/index/due"

	for _, admin := range []struct {
		param, principal, other string
	}{
		{adminRole, adminRole, powerUser},
		{"", rootUser, adminRole},
		{ssoAdmin, "arn:aws:iam::" + testAccount + ":role/aws-reserved/sso.amazonaws.com/eu-west-1/AWSReservedSSO_TokenAdmin_0a1b2c",
			"arn:aws:iam::" + testAccount + ":role/aws-reserved/sso.amazonaws.com/eu-west-1/AWSReservedSSO_PowerUser_9f8e7d"},
	} {
		t.Run("AdminRoleArn="+admin.param, func(t *testing.T) {
			s := newStack(t, tmpl, map[string]string{"AdminRoleArn": admin.param})
			rp := stateTablePolicy(t, s)
			refresher := s.roleStatements("RefresherRole")
			consumer := s.managedStatements("ConsumerReadPolicy")

			cases := []struct {
				name      string
				principal string
				identity  []iamStatement
				action    string
				resource  string
				rp        []iamStatement
				want      decision
			}{
				{"refresher reads a record", testRoleARN, refresher, "dynamodb:GetItem", testTableARN, rp, allowed},
				{"refresher claims", testRoleARN, refresher, "dynamodb:UpdateItem", testTableARN, rp, allowed},
				{"refresher scans", testRoleARN, refresher, "dynamodb:Scan", testTableARN, rp, allowed},
				{"refresher sweeps the due index", testRoleARN, refresher, "dynamodb:Query", index, rp, allowed},
				{"refresher cannot delete items", testRoleARN, refresher, "dynamodb:DeleteItem", testTableARN, rp, implicitDeny},
				{"admin reads", admin.principal, allDynamo, "dynamodb:GetItem", testTableARN, rp, allowed},
				{"admin repairs a record", admin.principal, allDynamo, "dynamodb:UpdateItem", testTableARN, rp, allowed},
				{"admin deletes a record", admin.principal, allDynamo, "dynamodb:DeleteItem", testTableARN, rp, allowed},
				{"consumer cannot read", consumerRole, consumer, "dynamodb:GetItem", testTableARN, rp, explicitDeny},
				{"broad principal still manages the table", admin.other, allDynamo, "dynamodb:UpdateTable", testTableARN, rp, allowed},
				{"broad principal still describes the table", admin.other, allDynamo, "dynamodb:DescribeTable", testTableARN, rp, allowed},
				// Control: without the resource policy the same principal reads everything,
				// so the denials below come from the policy.
				{"control: no resource policy", admin.other, allDynamo, "dynamodb:GetItem", testTableARN, nil, allowed},
			}
			for _, a := range dynamoDataPlane {
				cases = append(cases,
					struct {
						name      string
						principal string
						identity  []iamStatement
						action    string
						resource  string
						rp        []iamStatement
						want      decision
					}{"broad principal denied", admin.other, allDynamo, a, testTableARN, rp, explicitDeny})
			}
			cases = append(cases, struct {
				name      string
				principal string
				identity  []iamStatement
				action    string
				resource  string
				rp        []iamStatement
				want      decision
			}{"broad principal cannot query the index", admin.other, allDynamo, "dynamodb:Query", index, rp, explicitDeny})
			for _, c := range cases {
				got := authorize(t, request{Principal: c.principal, Action: c.action, Resource: c.resource}, c.identity, c.rp)
				if got != c.want {
					t.Errorf("%s (%s %s by %s): got %s, want %s", c.name, c.action, c.resource, c.principal, got, c.want)
				}
			}
		})
	}
}

// The table's policy names the same two principals as the private secrets' policy, in one
// Deny that covers every item action the refresher is granted.
func TestStateTablePolicyMatchesPrivateSecrets(t *testing.T) {
	t.Parallel()
	tmpl := loadTransformed(t)
	s := newStack(t, tmpl, map[string]string{"AdminRoleArn": adminRole})
	rp := stateTablePolicy(t, s)
	if len(rp) != 1 {
		t.Fatalf("statements: got %d, want 1", len(rp))
	}
	st := rp[0]
	if st.Effect != "Deny" || st.Principal != "*" || !slices.Equal(st.Resource, []string{"*"}) {
		t.Errorf("statement: got %s %v on %v, want Deny * on *", st.Effect, st.Principal, st.Resource)
	}
	cond, _ := st.Condition["StringNotLike"].(map[string]any)
	got := strs(cond["aws:PrincipalArn"])
	priv, _ := privatePolicy(t, s)[0].Condition["StringNotLike"].(map[string]any)
	if want := strs(priv["aws:PrincipalArn"]); !slices.Equal(got, want) || !slices.Equal(got, []string{testRoleARN, adminRole}) {
		t.Errorf("StringNotLike aws:PrincipalArn: got %v, want %v (the private secrets' principals)", got, want)
	}
	if len(st.Condition) != 1 {
		t.Errorf("Condition: got %v, want only StringNotLike", st.Condition)
	}
	if got := slices.Sorted(slices.Values(st.Action)); !slices.Equal(got, slices.Sorted(slices.Values(dynamoDataPlane))) {
		t.Errorf("Deny actions: got %v, want the data plane %v", got, dynamoDataPlane)
	}
	for _, g := range s.roleStatements("RefresherRole") {
		for _, a := range g.Action {
			if strings.HasPrefix(a, "dynamodb:") && !slices.Contains(st.Action, a) {
				t.Errorf("refresher is granted %s, which the table's Deny does not cover", a)
			}
		}
	}
}

// authorizeKMS evaluates a call on a KMS key: an explicit Deny in the key policy or the
// caller's identity policies wins; otherwise the key policy must allow the caller directly, or
// allow the account (delegating to IAM) and the caller's identity policy must allow too. A key
// policy that does not name an action for the account makes IAM policies unable to grant it.
func authorizeKMS(t *testing.T, req request, identity, keyPolicy []iamStatement) decision {
	t.Helper()
	account := arnFields(req.Principal)[4]
	root := "arn:aws:iam::" + account + ":root"
	var direct, delegated []iamStatement
	for _, st := range keyPolicy {
		if st.Effect == "Deny" {
			direct = append(direct, st)
			continue
		}
		m, _ := st.Principal.(map[string]any)
		for _, p := range strs(m["AWS"]) {
			switch p {
			case root, account:
				delegated = append(delegated, st)
			case req.Principal, "*":
				direct = append(direct, st)
			}
		}
	}
	// Deny statements and grants naming the caller (or "*") decide on their own.
	d := authorize(t, req, nil, direct)
	if d == explicitDeny || authorize(t, req, identity, nil) == explicitDeny {
		return explicitDeny
	}
	if d == allowed {
		return allowed
	}
	if authorize(t, req, nil, delegated) == allowed && authorize(t, req, identity, nil) == allowed {
		return allowed
	}
	return implicitDeny
}

// The escrow key: created unless EscrowKeyArn names one; the refresher encrypts and decrypts
// with it; the account and the administrator manage it but nobody else decrypts, re-encrypts or
// grants, whatever identity policy they hold; the function is told which key to use.
func TestEscrowKey(t *testing.T) {
	t.Parallel()
	tmpl := loadTransformed(t)
	const givenKey = "arn:aws:kms:us-east-1:123456789012:key/0000bbbb-0000-0000-0000-000000000000"
	for _, c := range []struct {
		name    string
		params  map[string]string
		key     string
		created bool
	}{
		{"created", map[string]string{"AdminRoleArn": adminRole}, testEscrowARN, true},
		{"created with the secrets key too", map[string]string{"CreateKmsKey": "true"}, testEscrowARN, true},
		{"given", map[string]string{"EscrowKeyArn": givenKey}, givenKey, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := newStack(t, tmpl, c.params)
			key := obj(t, tmpl, "Resources", "EscrowKey")
			if got := s.active(key); got != c.created {
				t.Fatalf("EscrowKey created: got %v, want %v", got, c.created)
			}
			if got := s.active(obj(t, tmpl, "Resources", "EscrowKeyAlias")); got != c.created {
				t.Errorf("EscrowKeyAlias created: got %v, want %v", got, c.created)
			}
			env := obj(t, tmpl, "Resources", "RefresherFunction", "Properties", "Environment", "Variables")
			if got := s.str(env["ESCROW_KEY_ID"]); got != c.key {
				t.Errorf("ESCROW_KEY_ID: got %q, want %q", got, c.key)
			}
			if got := s.str(obj(t, tmpl, "Outputs", "EscrowKeyArn")["Value"]); got != c.key {
				t.Errorf("output EscrowKeyArn: got %q, want %q", got, c.key)
			}

			// The function's IAM grants reach this key and no other.
			refresher := s.roleStatements("RefresherRole")
			for _, a := range []string{"kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey"} {
				if got := authorize(t, request{Principal: testRoleARN, Action: a, Resource: c.key}, refresher, nil); got != allowed {
					t.Errorf("refresher IAM %s on the escrow key: got %s, want allowed", a, got)
				}
				other := "arn:aws:kms:" + testRegion + ":" + testAccount + ":key/9999cccc-0000-0000-0000-000000000000"
				if got := authorize(t, request{Principal: testRoleARN, Action: a, Resource: other}, refresher, nil); got != implicitDeny {
					t.Errorf("refresher IAM %s on another key: got %s, want implicit deny", a, got)
				}
			}
			if got := authorize(t, request{Principal: testRoleARN, Action: "kms:CreateGrant", Resource: c.key}, refresher, nil); got != implicitDeny {
				t.Errorf("refresher IAM kms:CreateGrant: got %s, want implicit deny", got)
			}
			if !c.created {
				return
			}

			if key["DeletionPolicy"] != "Retain" || key["UpdateReplacePolicy"] != "Retain" {
				t.Errorf("EscrowKey policies: got %v/%v, want Retain (escrowed tokens are encrypted with it)", key["DeletionPolicy"], key["UpdateReplacePolicy"])
			}
			kp := obj(t, key, "Properties")
			if kp["EnableKeyRotation"] != true {
				t.Error("EscrowKey: EnableKeyRotation is not true")
			}
			policy := s.policyStatements(kp["KeyPolicy"])
			rootUser := "arn:aws:iam::" + testAccount + ":root"
			powerUser := "arn:aws:iam::" + testAccount + ":role/PowerUser"
			consumerRole := "arn:aws:iam::" + testAccount + ":role/billing-app"
			consumer := s.managedStatements("ConsumerReadPolicy")
			viaSM := map[string]string{"kms:ViaService": "secretsmanager." + testRegion + ".amazonaws.com"}
			for _, r := range []struct {
				name      string
				principal string
				identity  []iamStatement
				action    string
				context   map[string]string
				want      decision
			}{
				{"refresher encrypts", testRoleARN, refresher, "kms:Encrypt", nil, allowed},
				{"refresher decrypts", testRoleARN, refresher, "kms:Decrypt", nil, allowed},
				{"refresher makes a data key", testRoleARN, refresher, "kms:GenerateDataKey", nil, allowed},
				{"key policy alone lets the refresher decrypt", testRoleARN, nil, "kms:Decrypt", nil, allowed},
				{"refresher cannot grant", testRoleARN, refresher, "kms:CreateGrant", nil, implicitDeny},
				{"refresher cannot change the policy", testRoleARN, refresher, "kms:PutKeyPolicy", nil, implicitDeny},
				{"admin manages the policy", adminRole, broad, "kms:PutKeyPolicy", nil, allowed},
				{"admin describes", adminRole, broad, "kms:DescribeKey", nil, allowed},
				{"admin can schedule deletion", adminRole, broad, "kms:ScheduleKeyDeletion", nil, allowed},
				{"admin cannot decrypt", adminRole, broad, "kms:Decrypt", nil, explicitDeny},
				{"admin cannot re-encrypt out", adminRole, broad, "kms:ReEncryptFrom", nil, explicitDeny},
				{"admin cannot grant itself", adminRole, broad, "kms:CreateGrant", nil, explicitDeny},
				{"admin cannot make data keys", adminRole, broad, "kms:GenerateDataKey", nil, implicitDeny},
				{"admin cannot encrypt", adminRole, broad, "kms:Encrypt", nil, implicitDeny},
				{"root cannot decrypt", rootUser, broad, "kms:Decrypt", nil, explicitDeny},
				{"power user cannot decrypt", powerUser, broad, "kms:Decrypt", nil, explicitDeny},
				{"nobody decrypts through Secrets Manager", powerUser, broad, "kms:Decrypt", viaSM, explicitDeny},
				{"consumer cannot decrypt", consumerRole, consumer, "kms:Decrypt", viaSM, explicitDeny},
			} {
				req := request{Principal: r.principal, Action: r.action, Resource: testEscrowARN, Context: r.context}
				if got := authorizeKMS(t, req, r.identity, policy); got != r.want {
					t.Errorf("%s (%s by %s): got %s, want %s", r.name, r.action, r.principal, got, r.want)
				}
			}
			// Without its Deny the key policy still grants no decrypt to the account (the
			// management statement delegates no cryptographic action to IAM) ...
			var allows []iamStatement
			for _, st := range policy {
				if st.Effect == "Allow" {
					allows = append(allows, st)
				}
			}
			if len(allows) == len(policy) {
				t.Fatal("key policy has no Deny statement")
			}
			req := request{Principal: powerUser, Action: "kms:Decrypt", Resource: testEscrowARN}
			if got := authorizeKMS(t, req, broad, allows); got != implicitDeny {
				t.Errorf("key policy without its Deny, power user decrypts: got %s, want implicit deny", got)
			}
			// ... and control: the evaluator lets a delegated action through with an identity
			// grant, so "implicit deny" above comes from the policy.
			loose := append(slices.Clone(allows), iamStatement{Sid: "Loose", Effect: "Allow",
				Principal: map[string]any{"AWS": rootUser}, Action: []string{"kms:*"}, Resource: []string{"*"}})
			if got := authorizeKMS(t, req, broad, loose); got != allowed {
				t.Errorf("control: account granted kms:*, power user decrypts: got %s, want allowed", got)
			}
			// With the Deny, even such a loose statement lets nobody but the refresher decrypt.
			loose = append(slices.Clone(policy), loose[len(loose)-1])
			if got := authorizeKMS(t, req, broad, loose); got != explicitDeny {
				t.Errorf("key policy plus kms:* for the account, power user decrypts: got %s, want explicit deny", got)
			}
		})
	}
}
