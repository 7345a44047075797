package secretstore_test

import (
	"context"
	"errors"
	"os"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/google/uuid"

	"github.com/seed-502fa48b/token-refresher/internal/awsemu"
	"github.com/seed-502fa48b/token-refresher/pkg/secretstore"
	"github.com/seed-502fa48b/token-refresher/pkg/token"
)

func TestMain(m *testing.M) { os.Exit(awsemu.RunTests(m)) }

// env is one test's view of moto: the raw client (to check what the adapter
// wrote) and the Store under test.
type env struct {
	raw   *secretsmanager.Client
	store *secretstore.Store
	ctx   context.Context
}

func newEnv(t *testing.T) env {
	t.Helper()
	cfg := awsemu.Shared(t).AWSConfig(t)
	raw := secretsmanager.NewFromConfig(cfg)
	return env{raw: raw, store: secretstore.New(raw), ctx: context.Background()}
}

// uniqueName isolates tests sharing one moto server.
func uniqueName(t *testing.T, kind string) string {
	t.Helper()
	clean := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			return r
		}
		return '-'
	}, t.Name())
	return "test/" + clean + "/" + uuid.NewString()[:8] + "/" + kind
}

func (e env) create(t *testing.T, name, value string) string {
	t.Helper()
	id, err := e.store.Create(e.ctx, name, token.Secret(value))
	if err != nil {
		t.Fatalf("Create(%s): %v", name, err)
	}
	if id == "" {
		t.Fatalf("Create(%s) returned an empty version id", name)
	}
	return id
}

func (e env) currentID(t *testing.T, name string) string {
	t.Helper()
	v, err := e.store.GetCurrent(e.ctx, name)
	if err != nil {
		t.Fatalf("GetCurrent(%s): %v", name, err)
	}
	return v.ID
}

func (e env) stages(t *testing.T, name string) map[string][]string {
	t.Helper()
	out, err := e.raw.DescribeSecret(e.ctx, &secretsmanager.DescribeSecretInput{SecretId: aws.String(name)})
	if err != nil {
		t.Fatalf("DescribeSecret(%s): %v", name, err)
	}
	return out.VersionIdsToStages
}

func TestGetVersion(t *testing.T) {
	e := newEnv(t)
	name := uniqueName(t, "private")
	v1 := e.create(t, name, `{"refresh_token":"one"}`)
	v2, err := e.store.PutCurrent(e.ctx, name, token.Secret(`{"refresh_token":"two"}`))
	if err != nil {
		t.Fatalf("PutCurrent: %v", err)
	}

	tests := []struct {
		name, secret, version string
		want                  string
		wantStage             string
		wantErr               error
	}{
		{name: "old version by id", secret: name, version: v1, want: `{"refresh_token":"one"}`, wantStage: "AWSPREVIOUS"},
		{name: "current version by id", secret: name, version: v2, want: `{"refresh_token":"two"}`, wantStage: "AWSCURRENT"},
		{name: "missing version", secret: name, version: uuid.NewString(), wantErr: secretstore.ErrNotFound},
		{name: "missing secret", secret: name + "-nope", version: v1, wantErr: secretstore.ErrNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := e.store.GetVersion(e.ctx, tc.secret, tc.version)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("GetVersion err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("GetVersion: %v", err)
			}
			if got.ID != tc.version || got.Value.Reveal() != tc.want {
				t.Errorf("GetVersion = id %s value %q, want id %s value %q", got.ID, got.Value.Reveal(), tc.version, tc.want)
			}
			if !got.HasStage(tc.wantStage) {
				t.Errorf("stages = %v, want %s among them", got.Stages, tc.wantStage)
			}
			if got.Created.IsZero() {
				t.Error("Created is zero")
			}
		})
	}

	cur, err := e.store.GetCurrent(e.ctx, name)
	if err != nil || cur.ID != v2 {
		t.Fatalf("GetCurrent = %s, %v; want %s", cur.ID, err, v2)
	}
	if _, err := e.store.GetCurrent(e.ctx, name+"-nope"); !errors.Is(err, secretstore.ErrNotFound) {
		t.Errorf("GetCurrent(missing) err = %v, want ErrNotFound", err)
	}
}

func TestPutPending(t *testing.T) {
	e := newEnv(t)
	name := uniqueName(t, "private")
	v1 := e.create(t, name, `{"refresh_token":"old"}`)
	n := uuid.NewString()
	const value = `{"refresh_token":"new-secret-value"}`

	if err := e.store.PutPending(e.ctx, name, token.Secret(value), n, "TR_PENDING"); err != nil {
		t.Fatalf("PutPending: %v", err)
	}
	// A retry of the same write (the response was lost) must succeed and add nothing.
	if err := e.store.PutPending(e.ctx, name, token.Secret(value), n, "TR_PENDING"); err != nil {
		t.Fatalf("PutPending retry: %v", err)
	}
	got := e.stages(t, name)
	want := map[string][]string{v1: {"AWSCURRENT"}, n: {"TR_PENDING"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("stages after PutPending = %v, want %v (AWSCURRENT must not move)", got, want)
	}
	if cur := e.currentID(t, name); cur != v1 {
		t.Errorf("AWSCURRENT = %s, want %s", cur, v1)
	}
	v, err := e.store.GetVersion(e.ctx, name, n)
	if err != nil || v.Value.Reveal() != value {
		t.Fatalf("GetVersion(pending) = %q, %v; want the written value", v.Value.Reveal(), err)
	}

	// Another holder with the same deterministic id but other content loses.
	err = e.store.PutPending(e.ctx, name, token.Secret(`{"refresh_token":"other-secret-value"}`), n, "TR_PENDING")
	if !errors.Is(err, secretstore.ErrVersionConflict) {
		t.Fatalf("PutPending(other content) err = %v, want ErrVersionConflict", err)
	}
	if strings.Contains(err.Error(), "other-secret-value") {
		t.Errorf("error string carries the secret value: %v", err)
	}
	if v, _ := e.store.GetVersion(e.ctx, name, n); v.Value.Reveal() != value {
		t.Errorf("version %s changed after a conflicting put", n)
	}

	// A second pending version takes the label over; AWSCURRENT still stays.
	n2 := uuid.NewString()
	if err := e.store.PutPending(e.ctx, name, token.Secret(`{"x":2}`), n2, "TR_PENDING"); err != nil {
		t.Fatalf("PutPending second: %v", err)
	}
	got = e.stages(t, name)
	if !reflect.DeepEqual(got[n2], []string{"TR_PENDING"}) || !reflect.DeepEqual(got[v1], []string{"AWSCURRENT"}) {
		t.Errorf("stages after second PutPending = %v, want TR_PENDING on %s and AWSCURRENT on %s", got, n2, v1)
	}

	errTests := []struct {
		name, secret, version, stage string
		wantNotFound                 bool
	}{
		{name: "missing secret", secret: name + "-nope", version: uuid.NewString(), stage: "TR_PENDING", wantNotFound: true},
		{name: "empty stage is refused", secret: name, version: uuid.NewString(), stage: ""},
		{name: "empty version is refused", secret: name, version: "", stage: "TR_PENDING"},
	}
	for _, tc := range errTests {
		t.Run(tc.name, func(t *testing.T) {
			err := e.store.PutPending(e.ctx, tc.secret, token.Secret("v"), tc.version, tc.stage)
			if err == nil {
				t.Fatal("PutPending err = nil, want an error")
			}
			if got := errors.Is(err, secretstore.ErrNotFound); got != tc.wantNotFound {
				t.Errorf("errors.Is(err, ErrNotFound) = %v, want %v (err %v)", got, tc.wantNotFound, err)
			}
		})
	}
	if cur := e.currentID(t, name); cur != v1 {
		t.Errorf("AWSCURRENT = %s after refused puts, want %s", cur, v1)
	}
}

func TestMoveCurrent(t *testing.T) {
	e := newEnv(t)

	// setup returns a secret with AWSCURRENT on v and a pending version n.
	setup := func(t *testing.T) (name, v, n string) {
		name = uniqueName(t, "private")
		v = e.create(t, name, "base")
		n = uuid.NewString()
		if err := e.store.PutPending(e.ctx, name, token.Secret("next"), n, "TR_PENDING"); err != nil {
			t.Fatalf("PutPending: %v", err)
		}
		return name, v, n
	}

	t.Run("on from: moved", func(t *testing.T) {
		name, v, n := setup(t)
		if err := e.store.MoveCurrent(e.ctx, name, n, v); err != nil {
			t.Fatalf("MoveCurrent: %v", err)
		}
		if cur := e.currentID(t, name); cur != n {
			t.Errorf("AWSCURRENT = %s, want %s", cur, n)
		}
		if st := e.stages(t, name)[v]; !reflect.DeepEqual(st, []string{"AWSPREVIOUS"}) {
			t.Errorf("old version stages = %v, want [AWSPREVIOUS]", st)
		}
	})
	t.Run("already on to: nil", func(t *testing.T) {
		name, v, n := setup(t)
		for i := range 2 {
			if err := e.store.MoveCurrent(e.ctx, name, n, v); err != nil {
				t.Fatalf("MoveCurrent call %d: %v", i+1, err)
			}
		}
		if cur := e.currentID(t, name); cur != n {
			t.Errorf("AWSCURRENT = %s, want %s", cur, n)
		}
	})
	t.Run("on a third version: ErrStageMoved", func(t *testing.T) {
		name, v, n := setup(t)
		operator, err := e.store.PutCurrent(e.ctx, name, token.Secret("operator edit"))
		if err != nil {
			t.Fatalf("PutCurrent: %v", err)
		}
		err = e.store.MoveCurrent(e.ctx, name, n, v)
		if !errors.Is(err, secretstore.ErrStageMoved) {
			t.Fatalf("MoveCurrent err = %v, want ErrStageMoved", err)
		}
		if cur := e.currentID(t, name); cur != operator {
			t.Errorf("AWSCURRENT = %s, want the operator's %s left in place", cur, operator)
		}
	})
	t.Run("missing secret: ErrNotFound", func(t *testing.T) {
		err := e.store.MoveCurrent(e.ctx, uniqueName(t, "nope"), uuid.NewString(), uuid.NewString())
		if !errors.Is(err, secretstore.ErrNotFound) {
			t.Fatalf("MoveCurrent err = %v, want ErrNotFound", err)
		}
	})
}

func TestPublish(t *testing.T) {
	e := newEnv(t)
	name := uniqueName(t, "access")
	tok1 := uuid.NewString()
	const first = `{"access_token":"at-one"}`

	// Create path: the secret does not exist yet.
	if err := e.store.Publish(e.ctx, name, token.Secret(first), tok1); err != nil {
		t.Fatalf("Publish (create): %v", err)
	}
	desc, err := e.raw.DescribeSecret(e.ctx, &secretsmanager.DescribeSecretInput{SecretId: aws.String(name)})
	if err != nil {
		t.Fatalf("DescribeSecret: %v", err)
	}
	if got := aws.ToString(desc.Description); got != "token-refresher access token (consumers read this)" {
		t.Errorf("description = %q", got)
	}
	tags := map[string]string{}
	for _, tg := range desc.Tags {
		tags[aws.ToString(tg.Key)] = aws.ToString(tg.Value)
	}
	if tags["managed-by"] != "token-refresher" {
		t.Errorf("tags = %v, want managed-by=token-refresher", tags)
	}
	cur, err := e.store.GetCurrent(e.ctx, name)
	if err != nil || cur.ID != tok1 || cur.Value.Reveal() != first {
		t.Fatalf("after create: current = %s %q %v, want %s and the published value", cur.ID, cur.Value.Reveal(), err, tok1)
	}

	// Idempotent retry of the create.
	if err := e.store.Publish(e.ctx, name, token.Secret(first), tok1); err != nil {
		t.Fatalf("Publish retry: %v", err)
	}

	// Put path: a new generation becomes AWSCURRENT.
	tok2 := uuid.NewString()
	const second = `{"access_token":"at-two"}`
	if err := e.store.Publish(e.ctx, name, token.Secret(second), tok2); err != nil {
		t.Fatalf("Publish (put): %v", err)
	}
	if err := e.store.Publish(e.ctx, name, token.Secret(second), tok2); err != nil {
		t.Fatalf("Publish (put) retry: %v", err)
	}
	cur, err = e.store.GetCurrent(e.ctx, name)
	if err != nil || cur.ID != tok2 || cur.Value.Reveal() != second {
		t.Fatalf("after put: current = %s %q %v, want %s and the second value", cur.ID, cur.Value.Reveal(), err, tok2)
	}
	vs, err := e.store.Versions(e.ctx, name)
	if err != nil || len(vs) != 2 {
		t.Fatalf("Versions = %d, %v; want 2 (retries add none)", len(vs), err)
	}

	// Conflict: the same token with other content.
	err = e.store.Publish(e.ctx, name, token.Secret(`{"access_token":"at-three"}`), tok2)
	if !errors.Is(err, secretstore.ErrVersionConflict) {
		t.Fatalf("Publish(other content) err = %v, want ErrVersionConflict", err)
	}
	if strings.Contains(err.Error(), "at-three") {
		t.Errorf("error string carries the secret value: %v", err)
	}
	// Conflict on the create path too: the secret exists and the token is
	// taken with other content.
	err = e.store.Publish(e.ctx, name, token.Secret(`{"access_token":"at-four"}`), tok1)
	if !errors.Is(err, secretstore.ErrVersionConflict) {
		t.Fatalf("Publish(old token, other content) err = %v, want ErrVersionConflict", err)
	}
	if cur := e.currentID(t, name); cur != tok2 {
		t.Errorf("AWSCURRENT = %s after conflicts, want %s", cur, tok2)
	}
}

// TestPublishCreateRace has several invocations publish the same first
// version of a secret that does not exist yet: every one must succeed.
func TestPublishCreateRace(t *testing.T) {
	e := newEnv(t)
	name := uniqueName(t, "access")
	tok := uuid.NewString()
	const value = `{"access_token":"race"}`
	const n = 6
	errs := make(chan error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs <- e.store.Publish(e.ctx, name, token.Secret(value), tok)
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("Publish: %v", err)
		}
	}
	cur, err := e.store.GetCurrent(e.ctx, name)
	if err != nil || cur.ID != tok || cur.Value.Reveal() != value {
		t.Fatalf("current = %s %v, want %s", cur.ID, err, tok)
	}
}

// TestPublishCreateRaceDistinct: two generations are published at once to a
// secret that does not exist yet; the loser of the create must fall back to
// a put, so both versions exist and one of them is current.
func TestPublishCreateRaceDistinct(t *testing.T) {
	e := newEnv(t)
	name := uniqueName(t, "access")
	toks := []string{uuid.NewString(), uuid.NewString(), uuid.NewString()}
	errs := make([]error, len(toks))
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i, tok := range toks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs[i] = e.store.Publish(e.ctx, name, token.Secret(`{"access_token":"`+tok+`"}`), tok)
		}()
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Publish %d: %v", i, err)
		}
	}
	vs, err := e.store.Versions(e.ctx, name)
	if err != nil {
		t.Fatalf("Versions: %v", err)
	}
	ids := map[string]bool{}
	for _, v := range vs {
		ids[v.ID] = true
	}
	for _, tok := range toks {
		if !ids[tok] {
			t.Errorf("version %s missing; versions %v", tok, ids)
		}
	}
	cur, err := e.store.GetCurrent(e.ctx, name)
	if err != nil || !ids[cur.ID] || cur.Value.Reveal() != `{"access_token":"`+cur.ID+`"}` {
		t.Errorf("current = %s %v, want one of the published versions with its own value", cur.ID, err)
	}
}

func TestCreateExists(t *testing.T) {
	e := newEnv(t)
	name := uniqueName(t, "private")
	e.create(t, name, "a")
	if _, err := e.store.Create(e.ctx, name, token.Secret("b")); !errors.Is(err, secretstore.ErrExists) {
		t.Fatalf("Create(existing) err = %v, want ErrExists", err)
	}
	if _, err := e.store.PutCurrent(e.ctx, name+"-nope", token.Secret("b")); !errors.Is(err, secretstore.ErrNotFound) {
		t.Fatalf("PutCurrent(missing) err = %v, want ErrNotFound", err)
	}
}

func TestList(t *testing.T) {
	e := newEnv(t)
	base := uniqueName(t, "")           // test/TestList/xxxxxxxx/
	prefix := base + "token-refresher/" // the prefix under test
	for _, n := range []string{
		prefix + "private/b",
		prefix + "private/a",
		prefix + "access/a",
		base + "token-refresher-other/private/a", // shares the prefix without its slash
		base + "Token-refresher/private/a",       // other case
		base + "x/" + prefix,                     // prefix in the middle
		prefix + "private/deleted",
	} {
		e.create(t, n, "v")
	}
	if _, err := e.raw.DeleteSecret(e.ctx, &secretsmanager.DeleteSecretInput{SecretId: aws.String(prefix + "private/deleted")}); err != nil {
		t.Fatalf("DeleteSecret: %v", err)
	}

	tests := []struct {
		prefix string
		want   []string
	}{
		{prefix: prefix, want: []string{prefix + "access/a", prefix + "private/a", prefix + "private/b"}},
		{prefix: prefix + "private/", want: []string{prefix + "private/a", prefix + "private/b"}},
		{prefix: prefix + "nothing/", want: nil},
	}
	for _, tc := range tests {
		t.Run(strings.TrimPrefix(tc.prefix, base), func(t *testing.T) {
			got, err := e.store.List(e.ctx, tc.prefix)
			if err != nil {
				t.Fatalf("List: %v", err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("List(%q) = %v, want %v", tc.prefix, got, tc.want)
			}
		})
	}
}

func TestListPaginates(t *testing.T) {
	e := newEnv(t)
	prefix := uniqueName(t, "")
	// ListSecrets returns 100 per page by default; go past one page.
	const n = 105
	var want []string
	for i := range n {
		name := prefix + string(rune('a'+i/26)) + string(rune('a'+i%26))
		e.create(t, name, "v")
		want = append(want, name)
	}
	got, err := e.store.List(e.ctx, prefix)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("List returned %d names, want %d in order", len(got), len(want))
	}
}

func TestVersions(t *testing.T) {
	e := newEnv(t)
	name := uniqueName(t, "private")
	// The service stores dates in whole seconds.
	before := time.Now().Truncate(time.Second)
	v1 := e.create(t, name, "one")
	v2, err := e.store.PutCurrent(e.ctx, name, token.Secret("two"))
	if err != nil {
		t.Fatalf("PutCurrent: %v", err)
	}
	v3, err := e.store.PutCurrent(e.ctx, name, token.Secret("three"))
	if err != nil {
		t.Fatalf("PutCurrent: %v", err)
	}
	n := uuid.NewString()
	if err := e.store.PutPending(e.ctx, name, token.Secret("four"), n, "TR_PENDING"); err != nil {
		t.Fatalf("PutPending: %v", err)
	}
	after := time.Now().Add(time.Second)

	vs, err := e.store.Versions(e.ctx, name)
	if err != nil {
		t.Fatalf("Versions: %v", err)
	}
	got := map[string][]string{}
	for _, v := range vs {
		got[v.ID] = v.Stages
		if v.Created.Before(before) || v.Created.After(after) {
			t.Errorf("version %s Created = %v, want within [%v, %v]", v.ID, v.Created, before, after)
		}
	}
	// v1 has no label left (deprecated) and must still be listed.
	want := map[string][]string{v1: nil, v2: {"AWSPREVIOUS"}, v3: {"AWSCURRENT"}, n: {"TR_PENDING"}}
	if len(got) != len(want) {
		t.Fatalf("Versions = %v, want %v", got, want)
	}
	for id, st := range want {
		gotSt, ok := got[id]
		if !ok || len(gotSt) != len(st) || (len(st) > 0 && !reflect.DeepEqual(gotSt, st)) {
			t.Errorf("version %s stages = %v (listed %v), want %v", id, gotSt, ok, st)
		}
	}
	for i := 1; i < len(vs); i++ {
		if vs[i].Created.Before(vs[i-1].Created) {
			t.Errorf("Versions not ordered oldest first: %v before %v", vs[i-1].Created, vs[i].Created)
		}
	}
}
