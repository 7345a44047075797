package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	smtypes "github.com/aws/aws-sdk-go-v2/service/secretsmanager/types"
	"github.com/google/uuid"

	"github.com/seed-502fa48b/token-refresher/internal/awsemu"
	"github.com/seed-502fa48b/token-refresher/pkg/ledger"
	"github.com/seed-502fa48b/token-refresher/pkg/token"
)

// Secret values the moto tests seed; no tokenctl output may contain any of them.
const (
	seedClientSecret  = "cs-tokenctl-moto-7c1f0e5b9a"
	seedRefreshToken  = "rt-tokenctl-moto-3d2e1f0a9b"
	seedAccessToken   = "at-tokenctl-moto-8e7d6c5b4a"
	editClientSecret  = "cs-tokenctl-moto-EDITED-44ab"
	seedEntitySecret  = "es-tokenctl-moto-5f4e3d2c1b"
	badDocumentSecret = "rt-tokenctl-moto-bad-doc-91"
)

var seededSecrets = []string{seedClientSecret, seedRefreshToken, seedAccessToken, editClientSecret, seedEntitySecret, badDocumentSecret}

func rotatingDoc(clientSecret string) string {
	return `{
  "provider": {"grant": "refresh_token", "body": "form", "token_url": "https://auth.example.com/oauth2/token",
    "client_id": "acme-client", "client_secret": "` + clientSecret + `", "client_auth": "basic",
    "scope": "offline_access fund.read target:b/acme", "reuse_grace": "60s", "x_audience": "https://api.example.com"},
  "policy": {"daily_limit": 100, "x_burst": 2},
  "refresh_token": "` + seedRefreshToken + `",
  "access_token": "` + seedAccessToken + `", "token_type": "Bearer", "expires_at": "2026-11-22T12:00:00Z",
  "generation": 0, "x_owner": "payments-team"
}`
}

const sahamatiDoc = `{"provider":{"grant":"sahamati_entity","token_url":"https://api.sahamati.org.in/iam/v1/entity/token/generate",
  "entity_id":"FIU-TOKENCTL-1","entity_secret":"` + seedEntitySecret + `"}}`

type awsEnv struct {
	cfg    aws.Config
	sm     *secretsmanager.Client
	ddb    *dynamodb.Client
	prefix string
	table  string
}

func newAWSEnv(t *testing.T) awsEnv {
	t.Helper()
	cfg := awsemu.Shared(t).AWSConfig(t)
	id := uuid.NewString()[:8]
	e := awsEnv{
		cfg:    cfg,
		sm:     secretsmanager.NewFromConfig(cfg),
		ddb:    dynamodb.NewFromConfig(cfg),
		prefix: "tokenctl-test-" + id + "/",
		table:  "tokenctl-test-" + id,
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := ledger.CreateTable(ctx, e.ddb, e.table); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e awsEnv) cli(t *testing.T) *cli {
	return newCLI(t, &e.cfg, map[string]string{"SECRET_PREFIX": e.prefix, "STATE_TABLE": e.table})
}

func (e awsEnv) current(t *testing.T, name string) (string, string) {
	t.Helper()
	out, err := e.sm.GetSecretValue(context.Background(), &secretsmanager.GetSecretValueInput{SecretId: aws.String(e.prefix + "private/" + name)})
	if err != nil {
		t.Fatalf("GetSecretValue %s: %v", name, err)
	}
	return aws.ToString(out.VersionId), aws.ToString(out.SecretString)
}

func (e awsEnv) exists(t *testing.T, name string) bool {
	t.Helper()
	_, err := e.sm.DescribeSecret(context.Background(), &secretsmanager.DescribeSecretInput{SecretId: aws.String(e.prefix + "private/" + name)})
	var nf *smtypes.ResourceNotFoundException
	if errors.As(err, &nf) {
		return false
	}
	if err != nil {
		t.Fatalf("DescribeSecret %s: %v", name, err)
	}
	return true
}

func (e awsEnv) versionCount(t *testing.T, name string) int {
	t.Helper()
	out, err := e.sm.ListSecretVersionIds(context.Background(), &secretsmanager.ListSecretVersionIdsInput{
		SecretId: aws.String(e.prefix + "private/" + name), IncludeDeprecated: aws.Bool(true)})
	if err != nil {
		t.Fatal(err)
	}
	return len(out.Versions)
}

func TestSeed(t *testing.T) {
	e := newAWSEnv(t)
	c := e.cli(t)

	// A new token: CreateSecret with the document as written (compacted), marked as a new
	// authorisation at the time of the seed.
	c.mustRun("seed", "acme", "--file", writeFile(t, "acme.json", rotatingDoc(seedClientSecret)))
	if !strings.HasPrefix(c.out.String(), "created "+e.prefix+"private/acme") {
		t.Errorf("stdout: got %q, want it to say created", c.out.String())
	}
	assertNoSecrets(t, seededSecrets, c.out.String(), c.err.String())
	v1, stored := e.current(t, "acme")
	if want, _ := compact([]byte(rotatingDoc(seedClientSecret))); stored != strings.TrimSuffix(string(want), "}")+`,"authorized_at":"2026-11-22T00:00:00Z"}` {
		t.Errorf("stored document:\n got %s\nwant %s", stored, want)
	}
	if !strings.Contains(c.out.String(), v1) {
		t.Errorf("stdout %q does not name the version %s", c.out.String(), v1)
	}

	// An edit (from stdin): a new AWSCURRENT version, the old one kept as AWSPREVIOUS.
	c.stdin = rotatingDoc(editClientSecret)
	c.mustRun("seed", "--file", "-", "acme")
	if !strings.Contains(c.out.String(), "new AWSCURRENT version") {
		t.Errorf("stdout: got %q, want it to say new AWSCURRENT version", c.out.String())
	}
	assertNoSecrets(t, seededSecrets, c.out.String(), c.err.String())
	v2, stored := e.current(t, "acme")
	p, err := token.ParsePrivate([]byte(stored))
	if err != nil {
		t.Fatal(err)
	}
	if v2 == v1 || p.Provider.ClientSecret.Reveal() != editClientSecret {
		t.Errorf("after edit: version %s (was %s), client secret changed=%v", v2, v1, p.Provider.ClientSecret.Reveal() == editClientSecret)
	}
	if got := e.versionCount(t, "acme"); got != 2 {
		t.Errorf("versions: got %d, want 2", got)
	}

	// A bad document writes nothing: no new secret, no new version.
	bad := `{"provider":{"grant":"refresh_token","token_url":"http://auth.example.com/t","client_auth":"none"},"refresh_token":"` + badDocumentSecret + `"}`
	for _, name := range []string{"beta", "acme"} {
		if code := c.run("seed", name, "--file", writeFile(t, "bad.json", bad)); code != exitInvalid {
			t.Errorf("seed %s bad document: exit %d, want %d", name, code, exitInvalid)
		}
		if !strings.Contains(c.err.String(), "provider.token_url: must use https") || !strings.Contains(c.err.String(), "nothing written") {
			t.Errorf("seed %s bad document: stderr %q", name, c.err.String())
		}
		assertNoSecrets(t, seededSecrets, c.out.String(), c.err.String())
	}
	if e.exists(t, "beta") {
		t.Error("seed with a bad document created the secret")
	}
	if got := e.versionCount(t, "acme"); got != 2 {
		t.Errorf("seed with a bad document added a version: got %d, want 2", got)
	}
	if cur, _ := e.current(t, "acme"); cur != v2 {
		t.Errorf("seed with a bad document moved AWSCURRENT to %s, want %s", cur, v2)
	}
	// A placeholder left in is a bad document too.
	if code := c.run("seed", "gamma", "--file", writeFile(t, "tpl.json", templates["client_credentials"].doc)); code != exitInvalid || e.exists(t, "gamma") {
		t.Errorf("seed of an unfilled template: exit %d, exists %v", code, e.exists(t, "gamma"))
	}
}

func TestStatus(t *testing.T) {
	e := newAWSEnv(t)
	c := e.cli(t)
	c.mustRun("seed", "acme", "--file", writeFile(t, "acme.json", rotatingDoc(seedClientSecret)))
	c.mustRun("seed", "sahamati-prod", "--file", writeFile(t, "s.json", sahamatiDoc))
	// Secrets made with other tools that the refresher will never adopt as they are.
	ctx := context.Background()
	for name, body := range map[string]string{"_draft": sahamatiDoc, "broken": `{"provider":{"grant":"refresh_token","client_secret":"` + badDocumentSecret + `"}}`} {
		if _, err := e.sm.CreateSecret(ctx, &secretsmanager.CreateSecretInput{Name: aws.String(e.prefix + "private/" + name), SecretString: aws.String(body)}); err != nil {
			t.Fatal(err)
		}
	}

	// Seeded, not adopted yet: listed from the secrets, with why two never will be.
	if code := c.run("status", "--json"); code != exitInvalid {
		t.Errorf("status with unadoptable secrets: exit %d, want %d", code, exitInvalid)
	}
	var rows []statusRow
	if err := json.Unmarshal(c.out.Bytes(), &rows); err != nil {
		t.Fatalf("status --json: %v\n%s", err, c.out.String())
	}
	reasons := map[string]string{}
	for _, r := range rows {
		if r.Adopted {
			t.Errorf("%s: adopted before any record exists", r.Name)
		}
		reasons[r.Name] = r.NotAdoptedReason
	}
	if len(rows) != 4 || reasons["acme"] != "" || reasons["sahamati-prod"] != "" ||
		!strings.Contains(reasons["_draft"], "not a valid token name") || !strings.Contains(reasons["broken"], "invalid document: provider.token_url: required") {
		t.Errorf("before adoption: got %+v", rows)
	}
	c.run("status")
	for _, want := range []string{"(not adopted yet)", "(will not be adopted)", "not a valid token name"} {
		if !strings.Contains(c.out.String(), want) {
			t.Errorf("status table lacks %q:\n%s", want, c.out.String())
		}
	}

	// What the refresher writes: one record mid-refresh, one needing a person.
	led := ledger.New(e.ddb, ledger.Options{Table: e.table, Now: func() time.Time { return c.now }})
	v1, _ := e.current(t, "acme")
	expires := c.now.Add(15 * time.Minute)
	next := c.now.Add(10 * time.Minute)
	refreshExp := c.now.Add(30 * 24 * time.Hour)
	writes := []time.Time{c.now.Add(-25 * time.Hour)} // outside the last 24 h
	for i := range 18 {
		writes = append(writes, c.now.Add(-time.Duration(i)*80*time.Minute))
	}
	if err := led.Create(ctx, ledger.Record{Name: "acme", VersionID: v1, Generation: 3, PublishedGeneration: 3, Status: "active",
		ExpiresAt: expires, NextDueAt: next, RefreshExpiresAt: refreshExp, Writes: writes}); err != nil {
		t.Fatal(err)
	}
	leaseUntil := c.now.Add(45 * time.Second).Truncate(time.Millisecond)
	if err := led.Claim(ctx, ledger.Claim{Name: "acme", Holder: "req-1", Generation: 3, From: v1, To: "v-next", LeaseUntil: leaseUntil,
		Quota: &ledger.QuotaReservation{Key: "auth.example.com#acme-client", Day: "2026-11-22", Limit: 100}}); err != nil {
		t.Fatal(err)
	}
	if err := led.Create(ctx, ledger.Record{Name: "sahamati-prod", VersionID: "v-s", Generation: 9, PublishedGeneration: 8,
		Status: "needs_reauth", StatusReason: "provider rejected the credentials", ConsecutiveFailures: 2, LastError: "provider: 401 invalid entity"}); err != nil {
		t.Fatal(err)
	}

	if code := c.run("status", "--json", "acme", "sahamati-prod"); code != exitNeedsReauth {
		t.Errorf("status with a needs_reauth token: exit %d, want %d", code, exitNeedsReauth)
	}
	rows = nil
	if err := json.Unmarshal(c.out.Bytes(), &rows); err != nil {
		t.Fatalf("status --json: %v\n%s", err, c.out.String())
	}
	if len(rows) != 2 {
		t.Fatalf("got %d rows, want 2: %s", len(rows), c.out.String())
	}
	acme, sah := rows[0], rows[1]
	if !acme.Adopted || acme.Status != "active" || acme.Generation != 3 || acme.PublishedGeneration != 3 || acme.VersionID != v1 ||
		acme.Lease != leaseHeld || acme.LeaseHolder != "req-1" || acme.LeaseUntil == nil || !acme.LeaseUntil.Equal(leaseUntil) ||
		acme.Inflight == nil || acme.Inflight.From != v1 || acme.Inflight.To != "v-next" ||
		acme.ExpiresAt == nil || !acme.ExpiresAt.Equal(expires) {
		t.Errorf("acme row: got %+v", acme)
	}
	// The record's own next_due_at (15-minute tokens are not due 13 h in the past), the
	// refresh token's expiry, the write budget and today's quota.
	if acme.NextDueAt == nil || !acme.NextDueAt.Equal(next) || acme.RefreshExpiresAt == nil || !acme.RefreshExpiresAt.Equal(refreshExp) {
		t.Errorf("acme times: next due %v (want %v), refresh token expires %v (want %v)", acme.NextDueAt, next, acme.RefreshExpiresAt, refreshExp)
	}
	if acme.WritesLast24h != 18 || acme.MaxWritesPerDay != 90 || acme.WriteBudgetUsedPct != 20 {
		t.Errorf("acme write budget: got %d/%d %.1f%%, want 18/90 20%%", acme.WritesLast24h, acme.MaxWritesPerDay, acme.WriteBudgetUsedPct)
	}
	if q := acme.Quota; q == nil || q.Key != "auth.example.com#acme-client" || q.Day != "2026-11-22" || q.Used != 1 || q.Limit != 100 {
		t.Errorf("acme quota: got %+v, want 1/100 on 2026-11-22", acme.Quota)
	}
	if sah.Status != "needs_reauth" || sah.StatusReason != "provider rejected the credentials" || sah.Generation != 9 ||
		sah.PublishedGeneration != 8 || sah.Lease != leaseFree || sah.Inflight != nil || sah.ConsecutiveFailures != 2 ||
		sah.LastError != "provider: 401 invalid entity" {
		t.Errorf("sahamati row: got %+v", sah)
	}

	// The table, and the lease seen after it has run out.
	c.now = c.now.Add(time.Minute)
	c.run("status", "acme", "sahamati-prod")
	table := c.out.String()
	for _, want := range []string{"NAME", "LAST_ERROR", "acme", "active", "expired " + formatTime(leaseUntil), "inflight",
		formatTime(next) + " (in 9m)", formatTime(refreshExp), "18/90 (20%)", "1/100 auth.example.com#acme-client",
		"sahamati-prod", "needs_reauth", "free", "provider: 401 invalid entity", "provider rejected the credentials"} {
		if !strings.Contains(table, want) {
			t.Errorf("status table lacks %q:\n%s", want, table)
		}
	}
	c.now = c.now.Add(-time.Minute)
	c.mustRun("status", "acme")
	if lines := strings.Split(strings.TrimSpace(c.out.String()), "\n"); len(lines) != 2 || !strings.Contains(lines[1], "held until "+formatTime(leaseUntil)) {
		t.Errorf("status acme: got\n%s", c.out.String())
	}

	// A name with neither record nor secret fails, after printing the rest.
	if code := c.run("status", "acme", "nope"); code != exitNotFound || !strings.Contains(c.err.String(), "nope") || !strings.Contains(c.out.String(), "acme") {
		t.Errorf("status acme nope: exit %d\nstdout %s\nstderr %s", code, c.out.String(), c.err.String())
	}
	assertNoSecrets(t, seededSecrets, c.out.String(), c.err.String(), table)
}

func TestShow(t *testing.T) {
	e := newAWSEnv(t)
	c := e.cli(t)
	c.mustRun("seed", "acme", "--file", writeFile(t, "acme.json", rotatingDoc(seedClientSecret)))
	v1, _ := e.current(t, "acme")
	c.stdin = rotatingDoc(editClientSecret)
	c.mustRun("seed", "acme", "--file", "-")
	v2, _ := e.current(t, "acme")
	c.mustRun("seed", "sahamati-prod", "--file", writeFile(t, "s.json", sahamatiDoc))

	// No record yet: the document and versions, and a note on stderr.
	c.mustRun("show", "acme", "--json")
	assertNoSecrets(t, seededSecrets, c.out.String(), c.err.String())
	var out showOutput
	if err := json.Unmarshal(c.out.Bytes(), &out); err != nil {
		t.Fatalf("show --json: %v\n%s", err, c.out.String())
	}
	d := out.Document
	if d == nil || out.CurrentVersion != v2 || out.Secret != e.prefix+"private/acme" {
		t.Fatalf("show: got %+v", out)
	}
	if d.Provider.ClientSecret.Reveal() != "[redacted]" || d.RefreshToken.Reveal() != "[redacted]" || d.AccessToken.Reveal() != "[redacted]" {
		t.Errorf("secrets: got client_secret %q refresh_token %q access_token %q, want [redacted]",
			d.Provider.ClientSecret.Reveal(), d.RefreshToken.Reveal(), d.AccessToken.Reveal())
	}
	if d.Provider.ClientID != "acme-client" || d.Provider.ReuseGrace != "1m0s" || d.ExpiresAt != "2026-11-22T12:00:00Z" || d.Policy == nil || d.Policy.DailyLimit != 100 {
		t.Errorf("document: got %+v", d)
	}
	if want := []string{"policy.x_burst", "provider.x_audience", "x_owner"}; strings.Join(d.UnknownFields, ",") != strings.Join(want, ",") {
		t.Errorf("unknown fields: got %v, want %v", d.UnknownFields, want)
	}
	if d.Quota == nil || d.Quota.Key != "auth.example.com#acme-client" || d.Quota.DailyLimit != 100 {
		t.Errorf("effective quota: got %+v", d.Quota)
	}
	if len(out.Versions) != 2 || out.Versions[0].ID != v2 || out.Versions[1].ID != v1 ||
		strings.Join(out.Versions[0].Stages, ",") != "AWSCURRENT" || strings.Join(out.Versions[1].Stages, ",") != "AWSPREVIOUS" {
		t.Errorf("versions: got %+v, want %s AWSCURRENT then %s AWSPREVIOUS", out.Versions, v2, v1)
	}
	if !strings.Contains(c.err.String(), "no token record yet") {
		t.Errorf("stderr: got %q, want a note that there is no record", c.err.String())
	}

	// With a record: the committed pointer is marked (here the older version: the
	// refresher has not adopted the edit yet).
	led := ledger.New(e.ddb, ledger.Options{Table: e.table})
	if err := led.Create(context.Background(), ledger.Record{Name: "acme", VersionID: v1, Generation: 4, Status: "active"}); err != nil {
		t.Fatal(err)
	}
	c.mustRun("show", "acme")
	text := c.out.String()
	assertNoSecrets(t, seededSecrets, text, c.err.String())
	for _, want := range []string{`"client_secret": "[redacted]"`, `"refresh_token": "[redacted]"`, `"access_token": "[redacted]"`,
		"current: " + v2, "record:  version " + v1 + ", generation 4", "AWSCURRENT", "AWSPREVIOUS", "committed (generation 4)"} {
		if !strings.Contains(text, want) {
			t.Errorf("show lacks %q:\n%s", want, text)
		}
	}
	for _, line := range strings.Split(text, "\n") {
		if strings.Contains(line, "committed") && !strings.Contains(line, v1) {
			t.Errorf("committed mark on the wrong version: %q", line)
		}
	}

	c.mustRun("show", "sahamati-prod")
	assertNoSecrets(t, seededSecrets, c.out.String(), c.err.String())
	if !strings.Contains(c.out.String(), `"entity_secret": "[redacted]"`) || !strings.Contains(c.out.String(), `"key": "sahamati#FIU-TOKENCTL-1"`) ||
		!strings.Contains(c.out.String(), `"authorized_at": "2026-11-22T00:00:00Z"`) {
		t.Errorf("show sahamati-prod:\n%s", c.out.String())
	}

	if code := c.run("show", "nope"); code != exitNotFound || !strings.Contains(c.err.String(), "no private secret") {
		t.Errorf("show nope: exit %d, stderr %q", code, c.err.String())
	}
}

// A private secret someone broke by hand: show names the field, shows no value, fails.
func TestShowBrokenDocument(t *testing.T) {
	e := newAWSEnv(t)
	_, err := e.sm.CreateSecret(context.Background(), &secretsmanager.CreateSecretInput{
		Name:         aws.String(e.prefix + "private/broken"),
		SecretString: aws.String(`{"provider":{"grant":"refresh_token","client_secret":"` + seedClientSecret + `"},"refresh_token":"` + seedRefreshToken + `","expires_at":"soon"}`),
	})
	if err != nil {
		t.Fatal(err)
	}
	c := e.cli(t)
	if code := c.run("show", "broken"); code != exitInvalid {
		t.Errorf("exit: got %d, want %d", code, exitInvalid)
	}
	if !strings.Contains(c.err.String(), "expires_at: want an RFC 3339 time") || !strings.Contains(c.out.String(), "AWSCURRENT") {
		t.Errorf("show broken:\nstdout %s\nstderr %s", c.out.String(), c.err.String())
	}
	assertNoSecrets(t, seededSecrets, c.out.String(), c.err.String())
}

// run() is what main calls: config.LoadDefaultConfig must reach moto through
// AWS_ENDPOINT_URL and the flags must come from the environment.
func TestRunUsesDefaultConfig(t *testing.T) {
	e := newAWSEnv(t)
	srv := awsemu.Shared(t)
	dir := t.TempDir()
	for _, kv := range srv.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	// Nothing from the machine's AWS setup may leak in.
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "config"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "credentials"))
	t.Setenv("AWS_PROFILE", "")
	t.Setenv("AWS_SESSION_TOKEN", "")
	t.Setenv("SECRET_PREFIX", e.prefix)
	t.Setenv("STATE_TABLE", e.table)

	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"seed", "acme", "--file", writeFile(t, "acme.json", rotatingDoc(seedClientSecret))}, &out, &errb); code != exitOK {
		t.Fatalf("seed: exit %d: %s", code, errb.String())
	}
	if !e.exists(t, "acme") {
		t.Fatal("seed through run() did not create the secret in moto")
	}
	out.Reset()
	if code := run(context.Background(), []string{"status"}, &out, &errb); code != exitOK {
		t.Fatalf("status: exit %d: %s", code, errb.String())
	}
	if !strings.Contains(out.String(), "acme") || !strings.Contains(out.String(), "(not adopted yet)") {
		t.Errorf("status: got\n%s", out.String())
	}
	assertNoSecrets(t, seededSecrets, out.String(), errb.String())
}
