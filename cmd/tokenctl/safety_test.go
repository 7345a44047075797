package main

import (
	"context"
	"encoding/json"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/seed-502fa48b/token-refresher/pkg/ledger"
	"github.com/seed-502fa48b/token-refresher/pkg/token"
)

const rotatedRefreshToken = "rt-tokenctl-moto-ROTATED-5e6f"

// refresherWrites plays the refresher's first rotation of name: a new version with a new
// refresh token and our version id, committed in the state table, labelled AWSCURRENT.
func refresherWrites(t *testing.T, e awsEnv, name string) string {
	t.Helper()
	ctx := context.Background()
	_, cur := e.current(t, name)
	p, err := token.ParsePrivate([]byte(cur))
	if err != nil {
		t.Fatal(err)
	}
	const v = "11111111-2222-4333-8444-555555555555"
	p.RefreshToken, p.Generation, p.VersionID = token.Secret(rotatedRefreshToken), 1, v
	body, err := p.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.sm.PutSecretValue(ctx, &secretsmanager.PutSecretValueInput{SecretId: aws.String(e.prefix + "private/" + name),
		SecretString: aws.String(string(body)), ClientRequestToken: aws.String(v)}); err != nil {
		t.Fatal(err)
	}
	led := ledger.New(e.ddb, ledger.Options{Table: e.table})
	if err := led.Create(ctx, ledger.Record{Name: name, VersionID: v, Generation: 1, PublishedGeneration: 1, Status: "active"}); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestSeedRefusesSpentRefreshToken(t *testing.T) {
	e := newAWSEnv(t)
	c := e.cli(t)
	onboarding := writeFile(t, "acme.json", rotatingDoc(seedClientSecret))
	c.mustRun("seed", "acme", "--file", onboarding)
	v := refresherWrites(t, e, "acme")
	before := e.versionCount(t, "acme")

	// The onboarding file again: its refresh token has been spent.
	if code := c.run("seed", "acme", "--file", onboarding); code != exitRefused {
		t.Errorf("re-seed of the onboarding file: exit %d, want %d", code, exitRefused)
	}
	for _, want := range []string{"refused, nothing written", "refreshed 1 time(s)", "--replace-refresh-token"} {
		if !strings.Contains(c.err.String(), want) {
			t.Errorf("stderr lacks %q: %s", want, c.err.String())
		}
	}
	// A copy of an older version of ours (it carries our version id).
	stale := strings.Replace(rotatingDoc(seedClientSecret), `"generation": 0,`, `"generation": 0, "version_id": "00000000-0000-4000-8000-000000000000",`, 1)
	c.stdin = stale
	if code := c.run("seed", "acme", "--file", "-"); code != exitRefused || !strings.Contains(c.err.String(), "a copy of version 00000000-0000-4000-8000-000000000000") {
		t.Errorf("stale copy: exit %d, stderr %s", code, c.err.String())
	}
	// Without a state table the check falls back to AWSCURRENT, which the refresher wrote.
	noTable := newCLI(t, &e.cfg, map[string]string{"SECRET_PREFIX": e.prefix})
	if code := noTable.run("seed", "acme", "--file", onboarding); code != exitRefused || !strings.Contains(noTable.err.String(), "AWSCURRENT only") {
		t.Errorf("without a table: exit %d, stderr %s", code, noTable.err.String())
	}
	if got := e.versionCount(t, "acme"); got != before {
		t.Errorf("refused seeds wrote versions: got %d, want %d", got, before)
	}
	if cur, _ := e.current(t, "acme"); cur != v {
		t.Errorf("AWSCURRENT moved to %s, want %s", cur, v)
	}

	// A settings change that carries the committed refresh token is fine.
	edit := strings.Replace(rotatingDoc(editClientSecret), seedRefreshToken, rotatedRefreshToken, 1)
	c.mustRun("seed", "acme", "--file", writeFile(t, "edit.json", edit))
	// And a newly authorised refresh token goes in with the flag.
	c.mustRun("seed", "acme", "--file", onboarding, "--replace-refresh-token")
	if _, cur := e.current(t, "acme"); !strings.Contains(cur, seedRefreshToken) {
		t.Error("--replace-refresh-token did not store the document's refresh token")
	}
	assertNoSecrets(t, append(seededSecrets, rotatedRefreshToken), c.out.String(), c.err.String(), noTable.err.String())
}

func TestSeedFencesNewSecrets(t *testing.T) {
	e := newAWSEnv(t)
	const refresher, admin = "arn:aws:iam::111122223333:role/token-refresher-RefresherRole-X", "arn:aws:iam::111122223333:role/Admin"
	c := newCLI(t, &e.cfg, map[string]string{"SECRET_PREFIX": e.prefix, "STATE_TABLE": e.table,
		"TR_REFRESHER_ROLE_ARN": refresher, "TR_ADMIN_ROLE_ARN": admin})
	c.mustRun("seed", "acme", "--file", writeFile(t, "acme.json", rotatingDoc(seedClientSecret)))
	if strings.Contains(c.err.String(), "not fenced") {
		t.Errorf("stderr: %s", c.err.String())
	}
	out, err := e.sm.GetResourcePolicy(context.Background(), &secretsmanager.GetResourcePolicyInput{SecretId: aws.String(e.prefix + "private/acme")})
	if err != nil {
		t.Fatal(err)
	}
	var got, want any
	wantRaw, _ := privatePolicy(refresher, admin)
	if err := json.Unmarshal([]byte(aws.ToString(out.ResourcePolicy)), &got); err != nil {
		t.Fatalf("stored policy: %v", err)
	}
	_ = json.Unmarshal(wantRaw, &want)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("resource policy:\n got %s\nwant %s", aws.ToString(out.ResourcePolicy), wantRaw)
	}

	// Without role ARNs: stored, with a warning.
	plain := e.cli(t)
	plain.mustRun("seed", "beta", "--file", writeFile(t, "b.json", sahamatiDoc))
	if !strings.Contains(plain.err.String(), "warning") || !strings.Contains(plain.err.String(), "not fenced") || !e.exists(t, "beta") {
		t.Errorf("no ARNs: stderr %q, exists %v", plain.err.String(), e.exists(t, "beta"))
	}
	// A malformed ARN changes nothing.
	bad := newCLI(t, &e.cfg, map[string]string{"SECRET_PREFIX": e.prefix, "TR_REFRESHER_ROLE_ARN": "RefresherRole", "TR_ADMIN_ROLE_ARN": admin})
	if code := bad.run("seed", "gamma", "--file", writeFile(t, "g.json", sahamatiDoc)); code != exitUsage ||
		!strings.Contains(bad.err.String(), "--refresher-role-arn: want an IAM role ARN") || e.exists(t, "gamma") {
		t.Errorf("bad ARN: exit %d, stderr %q, exists %v", code, bad.err.String(), e.exists(t, "gamma"))
	}
}

func TestPolicyPrivate(t *testing.T) {
	c := newCLI(t, nil, nil)
	c.mustRun("policy", "private", "--refresher-role-arn", "arn:aws:iam::111122223333:role/R", "--admin-role-arn", "arn:aws:iam::111122223333:role/A")
	var doc policyDocument
	if err := json.Unmarshal(c.out.Bytes(), &doc); err != nil {
		t.Fatalf("policy private: %v\n%s", err, c.out.String())
	}
	want := `{"Version":"2012-10-17","Statement":[{"Sid":"OnlyRefresherAndAdmin","Effect":"Deny","Principal":"*",` +
		`"Action":["secretsmanager:GetSecretValue","secretsmanager:PutSecretValue","secretsmanager:UpdateSecret","secretsmanager:UpdateSecretVersionStage","secretsmanager:PutResourcePolicy","secretsmanager:DeleteResourcePolicy"],"Resource":"*",` +
		`"Condition":{"StringNotLike":{"aws:PrincipalArn":["arn:aws:iam::111122223333:role/R","arn:aws:iam::111122223333:role/A"]}}}]}`
	if got, _ := json.Marshal(doc); string(got) != want {
		t.Errorf("got %s\nwant %s", got, want)
	}
	if code := c.run("policy", "private"); code != exitUsage || !strings.Contains(c.err.String(), "--refresher-role-arn: required") {
		t.Errorf("without ARNs: exit %d, stderr %q", code, c.err.String())
	}
}

// TestPolicyPrivateMatchesTemplate: tokenctl and the stack output (PrivateSecretResourcePolicy)
// deny the same actions, so a secret fenced by either tool is fenced the same way.
func TestPolicyPrivateMatchesTemplate(t *testing.T) {
	tmpl, err := os.ReadFile("../../template.yaml")
	if err != nil {
		t.Fatal(err)
	}
	text := string(tmpl)
	i := strings.Index(text, "\n  PrivateSecretResourcePolicy:")
	if i < 0 {
		t.Fatal("template.yaml: output PrivateSecretResourcePolicy not found")
	}
	m := regexp.MustCompile(`"Action":\[([^\]]*)\]`).FindStringSubmatch(text[i:])
	if m == nil {
		t.Fatal("template.yaml: PrivateSecretResourcePolicy has no Action list")
	}
	var inTemplate []string
	if err := json.Unmarshal([]byte("["+strings.Join(strings.Fields(m[1]), "")+"]"), &inTemplate); err != nil {
		t.Fatalf("template.yaml: PrivateSecretResourcePolicy actions: %v", err)
	}
	raw, err := privatePolicy("arn:aws:iam::111122223333:role/R", "arn:aws:iam::111122223333:role/A")
	if err != nil {
		t.Fatal(err)
	}
	var doc policyDocument
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	got, want := slices.Sorted(slices.Values(doc.Statement[0].Action)), slices.Sorted(slices.Values(inTemplate))
	if !slices.Equal(got, want) {
		t.Errorf("tokenctl policy private denies %v, want the template's %v", got, want)
	}
}

func TestGrant(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"read only", []string{"grant", "orders-service", "acme", "sahamati-prod", "--account", "111122223333"}, map[string]string{"AWS_REGION": "ap-south-1"},
			`{"Version":"2012-10-17","Statement":[{"Sid":"ReadAccessTokens","Effect":"Allow","Action":["secretsmanager:GetSecretValue"],` +
				`"Resource":["arn:aws:secretsmanager:ap-south-1:111122223333:secret:token-refresher/access/acme-??????",` +
				`"arn:aws:secretsmanager:ap-south-1:111122223333:secret:token-refresher/access/sahamati-prod-??????"]}]}`},
		{"with ensure, function ARN", []string{"grant", "orders-service", "acme", "--ensure", "--region", "cn-north-1", "--account", "111122223333", "--prefix", "tr/",
			"--function", "arn:aws-cn:lambda:cn-north-1:111122223333:function:token-refresher-Fn:live"}, nil,
			`{"Version":"2012-10-17","Statement":[{"Sid":"ReadAccessTokens","Effect":"Allow","Action":["secretsmanager:GetSecretValue"],` +
				`"Resource":["arn:aws-cn:secretsmanager:cn-north-1:111122223333:secret:tr/access/acme-??????"]},` +
				`{"Sid":"EnsureFresh","Effect":"Allow","Action":["lambda:InvokeFunction"],"Resource":["arn:aws-cn:lambda:cn-north-1:111122223333:function:token-refresher-Fn:ensure"]}]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCLI(t, nil, tt.env)
			c.mustRun(tt.args...)
			var doc policyDocument
			if err := json.Unmarshal(c.out.Bytes(), &doc); err != nil {
				t.Fatal(err)
			}
			if got, _ := json.Marshal(doc); string(got) != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
			if !strings.Contains(c.err.String(), "--role-name orders-service") {
				t.Errorf("stderr: %q", c.err.String())
			}
		})
	}
	for _, bad := range []struct {
		args []string
		want string
	}{
		{[]string{"grant", "svc"}, "at least one token"},
		{[]string{"grant", "svc role", "acme", "--account", "111122223333", "--region", "eu-west-1"}, "want an IAM role name"},
		{[]string{"grant", "svc", "acme", "--account", "1234", "--region", "eu-west-1"}, "12-digit"},
		{[]string{"grant", "svc", "acme", "--account", "111122223333"}, "no region"},
		{[]string{"grant", "svc", "_acme", "--account", "111122223333", "--region", "eu-west-1"}, "not a token name"},
		{[]string{"grant", "svc", "acme", "--account", "111122223333", "--region", "eu-west-1", "--ensure"}, "--ensure needs the function"},
	} {
		c := newCLI(t, nil, nil)
		if code := c.run(bad.args...); code != exitUsage || !strings.Contains(c.err.String(), bad.want) || c.out.Len() != 0 {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", bad.args, code, c.err.String(), exitUsage, bad.want)
		}
	}
}

// AWS errors come out as one line naming the resource, the region and the likely fix.
func TestAWSErrorMessages(t *testing.T) {
	e := newAWSEnv(t)
	tests := []struct {
		name string
		env  map[string]string // on top of moto's
		args []string
		want string
	}{
		{"wrong table", map[string]string{"STATE_TABLE": "no-such-table"}, []string{"status"},
			"state table no-such-table not found in region us-east-1: check --table / STATE_TABLE and AWS_REGION"},
		{"no region", map[string]string{"AWS_REGION": "", "AWS_DEFAULT_REGION": ""}, []string{"status"}, "no AWS region: set AWS_REGION"},
		{"no credentials", map[string]string{"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}, []string{"show", "acme"}, "no AWS credentials: set AWS_PROFILE"},
		{"endpoint unreachable", map[string]string{"AWS_ENDPOINT_URL": "http://127.0.0.1:1", "AWS_MAX_ATTEMPTS": "1"}, []string{"status"},
			"state table " + e.table + ": cannot reach http://127.0.0.1:1 (region us-east-1)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			useLocalEnv(t, e, "http://127.0.0.1:1")
			t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			var out, errb strings.Builder
			if code := run(context.Background(), tt.args, &out, &errb); code != exitFail {
				t.Errorf("exit: got %d, want %d", code, exitFail)
			}
			if msg := strings.TrimSpace(errb.String()); !strings.Contains(msg, tt.want) || strings.Contains(msg, "\n") {
				t.Errorf("stderr: got %q, want one line containing %q", errb.String(), tt.want)
			}
		})
	}
}
