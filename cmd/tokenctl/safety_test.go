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
	"time"

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

// Issue 17 sequence 5: seed marks a document as a new authorisation (authorized_at) when it
// creates the token, or when --replace-refresh-token stores a refresh token that is not the
// committed one; otherwise the document keeps its own authorized_at, and one the operator
// wrote later than the committed one's is accepted as a new authorisation.
func TestSeedMarksAuthorization(t *testing.T) {
	e := newAWSEnv(t)
	c := e.cli(t)
	t0 := c.now
	stored := func(name string) *token.Private {
		t.Helper()
		_, raw := e.current(t, name)
		p, err := token.ParsePrivate([]byte(raw))
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	marked := func(doc string, at time.Time) string {
		return strings.Replace(doc, `"generation": 0,`, `"generation": 0, "authorized_at": "`+at.Format(time.RFC3339Nano)+`",`, 1)
	}
	onboarding := rotatingDoc(seedClientSecret)
	settings := strings.Replace(rotatingDoc(editClientSecret), seedRefreshToken, rotatedRefreshToken, 1) // the committed refresh token
	c.mustRun("seed", "acme", "--file", writeFile(t, "acme.json", onboarding))
	refresherWrites(t, e, "acme") // generation 1, keeps authorized_at t0

	steps := []struct {
		name  string
		now   time.Time
		doc   string
		flags []string
		code  int
		want  time.Time // the stored document's authorized_at (zero: absent)
		note  string    // on stderr
	}{
		{"new token", t0, "", nil, exitOK, t0, ""},
		{"settings edit keeps its own (absent) value", t0.Add(time.Hour), settings, nil, exitOK, time.Time{}, ""},
		{"settings edit with the flag: not a new refresh token", t0.Add(time.Hour), marked(settings, t0.Add(-time.Hour)), []string{"--replace-refresh-token"},
			exitOK, t0.Add(-time.Hour), ""},
		{"a copy of the first version (marked t0) is refused", t0.Add(time.Hour), marked(onboarding, t0), nil, exitRefused, t0.Add(-time.Hour), "refused, nothing written"},
		{"the onboarding file (unmarked) is refused", t0.Add(time.Hour), onboarding, nil, exitRefused, t0.Add(-time.Hour), "refused, nothing written"},
		{"an operator's own later mark is a new authorisation", t0.Add(time.Hour), marked(onboarding, t0.Add(time.Second)), nil, exitOK, t0.Add(time.Second), ""},
		{"--replace-refresh-token marks it now", t0.Add(2 * time.Hour), onboarding, []string{"--replace-refresh-token"}, exitOK, t0.Add(2 * time.Hour), "authorized_at set to now"},
	}
	for _, s := range steps {
		c.now = s.now
		if s.doc == "" {
			if got := stored("acme").AuthorizedAt; !got.Equal(s.want) {
				t.Errorf("%s: authorized_at got %v, want %v", s.name, got, s.want)
			}
			continue
		}
		if code := c.run(append([]string{"seed", "acme", "--file", writeFile(t, "doc.json", s.doc)}, s.flags...)...); code != s.code {
			t.Fatalf("%s: exit %d, want %d\n%s", s.name, code, s.code, c.err.String())
		}
		if got := stored("acme").AuthorizedAt; !got.Equal(s.want) {
			t.Errorf("%s: stored authorized_at got %v, want %v", s.name, got, s.want)
		}
		if !strings.Contains(c.err.String(), s.note) {
			t.Errorf("%s: stderr lacks %q: %s", s.name, s.note, c.err.String())
		}
		assertNoSecrets(t, append(seededSecrets, rotatedRefreshToken), c.out.String(), c.err.String())
	}

	// A token that never rotated (record at generation 0): another refresh token without
	// the flag is stored unmarked, with a warning that the refresher keeps the committed one.
	c.now = t0
	c.mustRun("seed", "beta", "--file", writeFile(t, "beta.json", settings))
	v, _ := e.current(t, "beta")
	if err := ledger.New(e.ddb, ledger.Options{Table: e.table}).Create(context.Background(),
		ledger.Record{Name: "beta", VersionID: v, Generation: 0, Status: "active"}); err != nil {
		t.Fatal(err)
	}
	c.now = t0.Add(time.Hour)
	c.mustRun("seed", "beta", "--file", writeFile(t, "beta2.json", onboarding))
	if got := stored("beta").AuthorizedAt; !got.IsZero() || !strings.Contains(c.err.String(), "keeps the committed refresh token") {
		t.Errorf("generation 0 without the flag: authorized_at %v (want absent), stderr %s", got, c.err.String())
	}
	// A secret with no record (never adopted): --replace-refresh-token marks even the
	// same refresh token, there being no committed version to compare with.
	c.mustRun("seed", "gamma", "--file", writeFile(t, "gamma.json", onboarding))
	c.now = t0.Add(2 * time.Hour)
	c.mustRun("seed", "gamma", "--file", writeFile(t, "gamma2.json", onboarding), "--replace-refresh-token")
	if got := stored("gamma").AuthorizedAt; !got.Equal(c.now) {
		t.Errorf("no record, --replace-refresh-token: authorized_at got %v, want %v", got, c.now)
	}
}

func TestAuthorizationTime(t *testing.T) {
	now := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		over *token.Private
		want time.Time
	}{
		{"nothing to supersede", nil, now},
		{"unmarked", &token.Private{}, now},
		{"marked earlier", &token.Private{AuthorizedAt: now.Add(-time.Hour)}, now},
		{"marked at the same instant", &token.Private{AuthorizedAt: now}, now.Add(time.Nanosecond)},
		{"marked in the future", &token.Private{AuthorizedAt: now.Add(24 * time.Hour)}, now.Add(24*time.Hour + time.Nanosecond)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := authorizationTime(now.In(time.FixedZone("IST", 19800)), tt.over)
			if !got.Equal(tt.want) || got.Location() != time.UTC {
				t.Errorf("got %v, want %v in UTC", got, tt.want)
			}
			if doc := (&token.Private{AuthorizedAt: got}); !doc.NewAuthorizationOver(tt.over) {
				t.Errorf("a document marked %v is not a new authorisation over %+v", got, tt.over)
			}
		})
	}
}

func TestMarkAuthorized(t *testing.T) {
	at := time.Date(2026, 12, 5, 10, 0, 0, 500, time.UTC)
	tests := []struct{ name, in, want string }{
		{"appended, the rest as written", `{"b":1,"a":{"x":1.50}}`, `{"b":1,"a":{"x":1.50},"authorized_at":"2026-12-05T10:00:00.0000005Z"}`},
		{"empty object", `{}`, `{"authorized_at":"2026-12-05T10:00:00.0000005Z"}`},
		{"replaced", `{"authorized_at":"2020-01-01T00:00:00Z","a":1}`, `{"a":1,"authorized_at":"2026-12-05T10:00:00.0000005Z"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := markAuthorized([]byte(tt.in), at)
			if err != nil || string(got) != tt.want {
				t.Errorf("got %s, %v; want %s", got, err, tt.want)
			}
		})
	}
}
