package refresher_test

import (
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/seed-502fa48b/token-refresher/internal/awsemu"
	"github.com/seed-502fa48b/token-refresher/internal/bootstrapbin"
	"github.com/seed-502fa48b/token-refresher/internal/lambdaemu"
	"github.com/seed-502fa48b/token-refresher/internal/providersim"
	"github.com/seed-502fa48b/token-refresher/pkg/refresher"
)

func scheduledEvent(t *testing.T) []byte {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	raw, err := os.ReadFile(filepath.Join(filepath.Dir(file), "..", "..", "events", "scheduled.json"))
	if err != nil {
		t.Fatalf("events/scheduled.json: %v", err)
	}
	return raw
}

// Acceptance 1: each seed provider end to end through the real bootstrap: the private
// secret rotated, the access secret exactly the §2 contract, a second run not_due with
// zero provider requests.
func TestSeedProvidersThroughBootstrap(t *testing.T) {
	ctx := context.Background()
	bin, err := bootstrapbin.Path(ctx)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, time.Now, nil)

	sah := newSahamati(t, "fiu-e2e", providersim.NewClock(time.Now()))
	sahDoc := sahamatiDoc(sah.URL(), "fiu-e2e", simSecret(sah))

	vault := providersim.NewVault(providersim.VaultOptions{})
	t.Cleanup(vault.Close)
	registerIssuer(vault)
	vaultSeed := vault.Seed()

	cs := "cs-" + randID()
	registerSecrets(cs)
	rot := providersim.NewRotating(providersim.RotatingOptions{ClientID: "app", ClientSecret: cs})
	t.Cleanup(rot.Close)
	registerIssuer(rot)
	rotSeed := rot.Seed("offline_access fund.read target:b/acme")
	rotDoc := rotatingDoc(rot.URL(), "app", cs, rotSeed, "60s")
	rotDoc["policy"] = map[string]any{"refresh_margin": "5m"} // 15 min tokens: refresh near expiry, not every run
	rotDoc["provider"].(map[string]any)["scope"] = "offline_access fund.read target:b/acme"
	rotDoc["operator_note"] = map[string]any{"owner": "payments team"} // unknown fields survive

	e.seed("sahamati", sahDoc)
	e.seed("vault", vaultDoc(vault.URL(), vaultSeed))
	e.seed("rotating", rotDoc)

	emu, err := lambdaemu.Start(ctx, lambdaemu.Options{
		Binary:  bin,
		Env:     append(awsemu.Shared(t).Env(), "STATE_TABLE="+e.table, "SECRET_PREFIX="+e.prefix),
		Timeout: 60 * time.Second,
		Stdout:  io.MultiWriter(suiteWriter{}, &e.out),
		Stderr:  io.MultiWriter(suiteWriter{}, &e.out),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer emu.Close()

	invoke := func() refresher.Report {
		t.Helper()
		run := e.runs.Begin()
		res, err := emu.Invoke(ctx, scheduledEvent(t))
		if err != nil {
			run.End(nil)
			t.Fatalf("invoke: %v", err)
		}
		if res.Err != nil {
			run.End(nil)
			t.Fatalf("function error: %v", res.Err)
		}
		_, _ = io.MultiWriter(suiteWriter{}, &e.out).Write(append(res.Payload, '\n'))
		var rep refresher.Report
		if err := json.Unmarshal(res.Payload, &rep); err != nil {
			run.End(nil)
			t.Fatalf("report: %v", err)
		}
		run.End(&rep)
		return rep
	}

	rep := invoke()
	for _, name := range []string{"sahamati", "vault", "rotating"} {
		if got := outcomes(&rep)[name]; got != refresher.OutcomeRefreshed {
			t.Errorf("%s: got %s (%s), want refreshed", name, got, row(t, &rep, name).Error)
		}
	}

	// Private secrets rotated: AWSCURRENT is the committed version, generation 1, and the
	// refresh token is the provider's live one.
	for _, name := range []string{"sahamati", "vault", "rotating"} {
		doc, rec := e.committed(name)
		cur, curID := e.current(name)
		if curID != rec.VersionID || cur.Generation != 1 || rec.Generation != 1 || doc.Generation != 1 {
			t.Errorf("%s: AWSCURRENT %s gen %d, record %s gen %d", name, curID, cur.Generation, rec.VersionID, rec.Generation)
		}
	}
	if doc, _ := e.committed("vault"); doc.RefreshToken.Reveal() != vault.Live() || doc.RefreshToken.Reveal() == vaultSeed {
		t.Errorf("vault: the committed refresh token is not the provider's new live one")
	}
	if doc, _ := e.committed("rotating"); doc.RefreshToken.Reveal() != rot.Live(rotSeed) {
		t.Errorf("rotating: the committed refresh token is not the provider's live one")
	}
	if doc, _ := e.committed("rotating"); len(doc.Extra()) != 1 || doc.Extra()[0] != "operator_note" {
		t.Errorf("rotating: unknown fields got %v, want [operator_note] kept", doc.Extra())
	}

	// Access secrets: exactly the contract.
	valid := map[string]func(string) bool{"sahamati": sah.Valid, "vault": vault.Valid, "rotating": rot.Valid}
	for name, isValid := range valid {
		acc := e.accessRaw(name)
		var keys []string
		for k := range acc {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		if got, want := strings.Join(keys, ","), "access_token,expires_at,generation,scope,status,token_type"; got != want {
			t.Errorf("%s: access secret keys %s, want %s", name, got, want)
		}
		if acc["status"] != "active" || acc["token_type"] != "Bearer" || acc["generation"] != float64(1) {
			t.Errorf("%s: access secret status %v type %v generation %v", name, acc["status"], acc["token_type"], acc["generation"])
		}
		exp, err := time.Parse(time.RFC3339, acc["expires_at"].(string))
		if err != nil || !exp.After(time.Now()) {
			t.Errorf("%s: expires_at %v (%v)", name, acc["expires_at"], err)
		}
		if !isValid(acc["access_token"].(string)) {
			t.Errorf("%s: the published access token is not valid at the provider", name)
		}
	}

	before := sah.Requests() + vault.Requests() + rot.Requests()
	rep = invoke()
	for _, name := range []string{"sahamati", "vault", "rotating"} {
		if got := outcomes(&rep)[name]; got != refresher.OutcomeNotDue {
			t.Errorf("second run %s: got %s, want not_due", name, got)
		}
	}
	if after := sah.Requests() + vault.Requests() + rot.Requests(); after != before {
		t.Errorf("second run made %d provider requests, want 0", after-before)
	}
}
