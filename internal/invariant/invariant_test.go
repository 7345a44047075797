package invariant_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/seed-502fa48b/token-refresher/internal/awsemu"
	"github.com/seed-502fa48b/token-refresher/internal/invariant"
	"github.com/seed-502fa48b/token-refresher/internal/providersim"
	"github.com/seed-502fa48b/token-refresher/pkg/ledger"
	"github.com/seed-502fa48b/token-refresher/pkg/refresher"
	"github.com/seed-502fa48b/token-refresher/pkg/secretstore"
	"github.com/seed-502fa48b/token-refresher/pkg/token"
)

func TestMain(m *testing.M) { os.Exit(awsemu.RunTests(m)) }

func randID() string {
	var b [5]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// world is one installation in moto with one strict rotating provider and one token.
type world struct {
	t      *testing.T
	in     invariant.Input
	sim    *providersim.Rotating
	cs     string
	seed   string
	store  *secretstore.Store
	ledger *ledger.Ledger
}

func newWorld(t *testing.T) *world {
	t.Helper()
	cfg := awsemu.Shared(t).AWSConfig(t)
	ddb := dynamodb.NewFromConfig(cfg)
	table, prefix := "inv-"+randID(), "inv-"+randID()+"/"
	if err := ledger.CreateTable(context.Background(), ddb, table); err != nil {
		t.Fatal(err)
	}
	w := &world{t: t, store: secretstore.New(secretsmanager.NewFromConfig(cfg)), ledger: ledger.New(ddb, ledger.Options{Table: table})}
	w.cs = "cs-" + randID()
	w.sim = providersim.NewRotating(providersim.RotatingOptions{ClientID: "app", ClientSecret: w.cs})
	t.Cleanup(w.sim.Close)
	w.seed = w.sim.Seed("")
	w.in = invariant.Input{Providers: []*providersim.Rotating{w.sim}, Ledger: w.ledger, Store: w.store, Prefix: prefix, Wall: true}
	return w
}

// commit writes a private version holding rt and points the token record at it.
func (w *world) commit(name, rt string, gen int64, status string) {
	w.t.Helper()
	doc := map[string]any{
		"provider":      map[string]any{"grant": "refresh_token", "body": "form", "token_url": w.sim.URL(), "client_id": "app", "client_secret": "cs", "client_auth": "basic"},
		"refresh_token": rt,
	}
	raw, _ := json.Marshal(doc)
	ctx := context.Background()
	id, err := w.store.Create(ctx, w.in.Prefix+"private/"+name, token.Secret(raw))
	if err != nil {
		w.t.Fatal(err)
	}
	if err := w.ledger.Create(ctx, ledger.Record{Name: name, VersionID: id, Generation: gen, Status: status}); err != nil {
		w.t.Fatal(err)
	}
}

// present sends rt to the provider as a client would.
func (w *world) present(rt string) int { return w.presentTo(w.sim, rt) }

func (w *world) presentTo(sim *providersim.Rotating, rt string) int {
	w.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, sim.URL(), strings.NewReader(url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("app", w.cs)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		w.t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func ids(vs []invariant.Violation) []string {
	var out []string
	for _, v := range vs {
		out = append(out, string(v.ID))
	}
	return slices.Compact(out) // one invariant may be broken in several ways
}

func violations(t *testing.T, in invariant.Input) []invariant.Violation {
	t.Helper()
	vs, err := invariant.Violations(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range vs {
		if strings.Contains(v.Detail, "rot_rt_") || strings.Contains(v.Detail, "rot_at_") {
			t.Errorf("violation %s names a token value", v.ID)
		}
	}
	return vs
}

func TestViolations(t *testing.T) {
	for _, tc := range []struct {
		name string
		act  func(w *world)
		want []string
	}{
		{"settled on the live token", func(w *world) { w.commit("a", w.seed, 0, ledger.StatusActive) }, nil},
		{"committed token spent by someone", func(w *world) {
			w.commit("a", w.seed, 0, ledger.StatusActive)
			w.rotate(w.seed)
		}, []string{"I2"}},
		{"re-spent: chain revoked", func(w *world) {
			w.commit("a", w.seed, 0, ledger.StatusActive)
			w.rotate(w.seed)
			w.rotate(w.seed)
		}, []string{"I1", "I2"}},
		{"another installation's simulator is not this one's concern", func(w *world) {
			w.commit("a", w.seed, 0, ledger.StatusActive)
			other := providersim.NewRotating(providersim.RotatingOptions{ClientID: "app", ClientSecret: w.cs})
			w.t.Cleanup(other.Close)
			w.in.Providers = append(w.in.Providers, other)
			rt := other.Seed("")
			w.presentTo(other, rt)
			w.presentTo(other, rt)
		}, nil},
		{"needs_reauth for a token never spent", func(w *world) {
			w.sim.Revoke(w.seed)
			w.commit("a", w.seed, 0, ledger.StatusNeedsReauth)
		}, nil},
		{"needs_reauth after spending the token", func(w *world) {
			w.commit("a", w.seed, 0, ledger.StatusNeedsReauth)
			w.rotate(w.seed)
		}, []string{"I2"}},
		{"access secret back a generation", func(w *world) {
			w.commit("a", w.seed, 0, ledger.StatusActive)
			w.publish("a", 2, time.Now().Add(time.Hour))
			w.publish("a", 1, time.Now().Add(time.Hour))
		}, []string{"I3"}},
		{"expired access token published as active", func(w *world) {
			w.commit("a", w.seed, 0, ledger.StatusActive)
			w.publish("a", 1, time.Now().Add(-time.Hour))
		}, []string{"I3"}},
		{"secret in the output", func(w *world) {
			w.commit("a", w.seed, 0, ledger.StatusActive)
			w.in.Output = []byte(`{"msg":"refreshed","token":"` + w.seed + `"}`)
		}, []string{"I4"}},
		{"refreshed without a commit", func(w *world) {
			w.commit("a", w.seed, 0, ledger.StatusActive)
			w.in.Runs = invariant.NewRuns(w.ledger, w.store, w.in.Prefix, nil)
			w.in.Runs.Begin().End(&refresher.Report{Tokens: []refresher.Row{{Name: "a", Outcome: refresher.OutcomeRefreshed}}})
		}, []string{"I5"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			tc.act(w)
			got := ids(violations(t, w.in))
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Errorf("violations: got %v, want %v", got, tc.want)
			}
		})
	}
}

func (w *world) rotate(rt string) {
	w.t.Helper()
	w.present(rt)
}

func (w *world) publish(name string, gen int64, expires time.Time) {
	w.t.Helper()
	raw, _ := token.Access{AccessToken: token.Secret("at-" + randID()), TokenType: "Bearer", ExpiresAt: expires, Generation: gen, Status: token.StatusActive}.Marshal()
	if _, err := w.store.PutCurrent(context.Background(), w.in.Prefix+"access/"+name, token.Secret(raw)); err != nil {
		if _, err := w.store.Create(context.Background(), w.in.Prefix+"access/"+name, token.Secret(raw)); err != nil {
			w.t.Fatal(err)
		}
	}
}
