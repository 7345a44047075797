package secretstore_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/seed-502fa48b/token-refresher/pkg/secretstore"
	"github.com/seed-502fa48b/token-refresher/pkg/token"
)

// TestPutCurrentVersion checks the one-write persist against moto: the new
// version is AWSCURRENT, the old holder AWSPREVIOUS, a retry is a no-op and
// other content under the same id conflicts.
func TestPutCurrentVersion(t *testing.T) {
	e := newEnv(t)

	// byLabelMove: AWSCURRENT last moved by UpdateSecretVersionStage, the path
	// internal/awsemu/launcher.py patches in moto (its default version).
	setups := []struct {
		name  string
		setup func(t *testing.T, name string) (current string)
	}{
		{name: "after create", setup: func(t *testing.T, name string) string {
			return e.create(t, name, `{"refresh_token":"one"}`)
		}},
		{name: "after a label move", setup: func(t *testing.T, name string) string {
			v := e.create(t, name, `{"refresh_token":"one"}`)
			n := uuid.NewString()
			if err := e.store.PutPending(e.ctx, name, token.Secret(`{"refresh_token":"two"}`), n, "TR_PENDING"); err != nil {
				t.Fatalf("PutPending: %v", err)
			}
			if err := e.store.MoveCurrent(e.ctx, name, n, v); err != nil {
				t.Fatalf("MoveCurrent: %v", err)
			}
			return n
		}},
		{name: "after another PutCurrentVersion", setup: func(t *testing.T, name string) string {
			e.create(t, name, `{"refresh_token":"one"}`)
			n := uuid.NewString()
			if err := e.store.PutCurrentVersion(e.ctx, name, token.Secret(`{"refresh_token":"two"}`), n); err != nil {
				t.Fatalf("PutCurrentVersion: %v", err)
			}
			return n
		}},
	}
	for _, tc := range setups {
		t.Run(tc.name, func(t *testing.T) {
			name := uniqueName(t, "private")
			prev := tc.setup(t, name)
			n := uuid.NewString()
			const value = `{"refresh_token":"new-secret-value"}`
			if err := e.store.PutCurrentVersion(e.ctx, name, token.Secret(value), n); err != nil {
				t.Fatalf("PutCurrentVersion: %v", err)
			}
			cur, err := e.store.GetCurrent(e.ctx, name)
			if err != nil || cur.ID != n || cur.Value.Reveal() != value {
				t.Fatalf("GetCurrent = id %s, %v; want id %s with the written value", cur.ID, err, n)
			}
			stages := e.stages(t, name)
			if got := stages[prev]; !reflect.DeepEqual(got, []string{"AWSPREVIOUS"}) {
				t.Errorf("previous version %s stages = %v, want [AWSPREVIOUS]", prev, got)
			}
			if holders := holdersOf(stages, "AWSCURRENT"); !reflect.DeepEqual(holders, []string{n}) {
				t.Errorf("AWSCURRENT on %v, want only %s", holders, n)
			}
			before := len(versionIDs(t, e, name))

			// A retry of the same write (the answer was lost) succeeds and adds nothing.
			if err := e.store.PutCurrentVersion(e.ctx, name, token.Secret(value), n); err != nil {
				t.Fatalf("PutCurrentVersion retry: %v", err)
			}
			if got := e.stages(t, name); !reflect.DeepEqual(got, stages) {
				t.Errorf("stages after retry = %v, want unchanged %v", got, stages)
			}
			if after := len(versionIDs(t, e, name)); after != before {
				t.Errorf("versions after retry = %d, want %d", after, before)
			}

			// Another holder with the same deterministic id but other content loses.
			err = e.store.PutCurrentVersion(e.ctx, name, token.Secret(`{"refresh_token":"other-secret-value"}`), n)
			if !errors.Is(err, secretstore.ErrVersionConflict) {
				t.Fatalf("PutCurrentVersion(other content) err = %v, want ErrVersionConflict", err)
			}
			if strings.Contains(err.Error(), "secret-value") {
				t.Errorf("error string carries the secret value: %v", err)
			}
			if cur, _ := e.store.GetCurrent(e.ctx, name); cur.ID != n || cur.Value.Reveal() != value {
				t.Errorf("AWSCURRENT after a conflicting put = %s, want %s unchanged", cur.ID, n)
			}
		})
	}

	t.Run("retry after the label moved on leaves it", func(t *testing.T) {
		name := uniqueName(t, "private")
		e.create(t, name, "base")
		n := uuid.NewString()
		if err := e.store.PutCurrentVersion(e.ctx, name, token.Secret("ours"), n); err != nil {
			t.Fatalf("PutCurrentVersion: %v", err)
		}
		operator, err := e.store.PutCurrent(e.ctx, name, token.Secret("operator edit"))
		if err != nil {
			t.Fatalf("PutCurrent: %v", err)
		}
		if err := e.store.PutCurrentVersion(e.ctx, name, token.Secret("ours"), n); err != nil {
			t.Fatalf("PutCurrentVersion retry: %v", err)
		}
		if cur := e.currentID(t, name); cur != operator {
			t.Errorf("AWSCURRENT = %s after a late retry, want the operator's %s", cur, operator)
		}
	})

	errTests := []struct {
		name, secret, version string
		wantNotFound          bool
	}{
		{name: "missing secret", secret: uniqueName(t, "nope"), version: uuid.NewString(), wantNotFound: true},
		{name: "empty version is refused", secret: uniqueName(t, "nope"), version: ""},
	}
	for _, tc := range errTests {
		t.Run(tc.name, func(t *testing.T) {
			err := e.store.PutCurrentVersion(e.ctx, tc.secret, token.Secret("v"), tc.version)
			if err == nil {
				t.Fatal("PutCurrentVersion err = nil, want an error")
			}
			if got := errors.Is(err, secretstore.ErrNotFound); got != tc.wantNotFound {
				t.Errorf("errors.Is(err, ErrNotFound) = %v, want %v (err %v)", got, tc.wantNotFound, err)
			}
		})
	}
}

func holdersOf(stages map[string][]string, stage string) []string {
	var ids []string
	for id, ss := range stages {
		for _, s := range ss {
			if s == stage {
				ids = append(ids, id)
			}
		}
	}
	return ids
}

func versionIDs(t *testing.T, e env, name string) []string {
	t.Helper()
	vs, err := e.store.Versions(e.ctx, name)
	if err != nil {
		t.Fatalf("Versions(%s): %v", name, err)
	}
	ids := make([]string, len(vs))
	for i, v := range vs {
		ids[i] = v.ID
	}
	return ids
}
