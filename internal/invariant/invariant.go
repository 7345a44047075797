// Package invariant checks, after an engine or reliability test, the properties no fault
// may break (issue 17): I1 no refresh token presented twice outside the provider's
// grace; I2 the committed refresh token is the provider's live one, or the token is
// needs_reauth because the provider rejected a token we never spent; I3 the access
// secret never goes back a generation and never publishes an expired access token as
// active; I4 no secret value in what the test captured; I5 a run reports refreshed only
// for a committed refresh. It reads moto directly (never through a fault proxy) and
// never prints a secret: tokens are named by token name, family and issue order.
package invariant

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/seed-502fa48b/token-refresher/internal/leakscan"
	"github.com/seed-502fa48b/token-refresher/internal/providersim"
	"github.com/seed-502fa48b/token-refresher/pkg/ledger"
	"github.com/seed-502fa48b/token-refresher/pkg/secretstore"
	"github.com/seed-502fa48b/token-refresher/pkg/token"
)

// ID names one invariant.
type ID string

// The invariants of issue 17.
const (
	NoRespend            ID = "I1" // no refresh token presented twice outside the grace
	CommittedLive        ID = "I2" // the committed refresh token is live, or needs_reauth for a token never spent
	AccessForward        ID = "I3" // the access secret never goes back, never publishes expired as active
	NoLeak               ID = "I4" // no secret in logs, errors, events, metrics
	RefreshedIsCommitted ID = "I5" // refreshed only for a committed refresh
)

// Input is what one test leaves behind. Everything is optional except Ledger, Store
// and Prefix; an invariant whose input is missing is not checked (I1 and I2 need
// Providers, I4 Output, I5 Runs).
type Input struct {
	// Providers are rotating simulators; those the installation's tokens point at (by
	// token_url) are checked, so a suite may pass all of its simulators.
	Providers []*providersim.Rotating
	// Ledger and Store read the state table and Secrets Manager directly.
	Ledger *ledger.Ledger
	Store  *secretstore.Store
	Prefix string
	// Runs are the runs the test made, observed by Runs.Begin/End.
	Runs *Runs
	// Output is everything the test captured from the code under test: log lines,
	// metric lines, reports, error strings, events.
	Output []byte
	// Secrets are values besides those the providers issued and the private and access
	// versions hold (client secrets, entity secrets) that must not appear in Output.
	Secrets []string
	// Wall: the engine read the wall clock, so a version's creation time in Secrets
	// Manager is when it was published (I3 then checks every version, not only those
	// the observed runs published).
	Wall bool
	// Waive turns invariants off for a test that breaks one on purpose, with the reason.
	Waive map[ID]string
}

// Violation is one broken invariant; Detail never holds a secret.
type Violation struct {
	ID     ID
	Token  string // token name, if about one
	Detail string
}

func (v Violation) String() string {
	if v.Token != "" {
		return fmt.Sprintf("%s %s: %s", v.ID, v.Token, v.Detail)
	}
	return fmt.Sprintf("%s: %s", v.ID, v.Detail)
}

// Check asserts I1–I5 after a test: each violation is a t.Errorf.
func Check(t testing.TB, in Input) {
	t.Helper()
	for id, why := range in.Waive {
		t.Logf("invariant %s waived: %s", id, why)
	}
	vs, err := Violations(context.Background(), in)
	if err != nil {
		t.Errorf("invariant: %v", err)
	}
	for _, v := range vs {
		t.Errorf("invariant %s", v)
	}
}

// Violations returns every broken invariant, in order I1..I5, then by token.
func Violations(ctx context.Context, in Input) ([]Violation, error) {
	if in.Ledger == nil || in.Store == nil {
		return nil, errors.New("invariant: Ledger and Store are required")
	}
	recs, err := in.Ledger.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("invariant: %w", err)
	}
	var vs []Violation
	add := func(v ...Violation) {
		for _, x := range v {
			if _, waived := in.Waive[x.ID]; !waived {
				vs = append(vs, x)
			}
		}
	}
	var values []string // every secret value in the state, for I4
	urls := map[string]bool{}
	var errs []error
	var i2 []Violation
	for _, rec := range recs {
		v, vals, err := committedLive(ctx, in, rec, urls)
		i2 = append(i2, v...)
		values = append(values, vals...)
		errs = append(errs, err)
	}
	add(noRespend(in, urls)...)
	add(i2...)
	for _, rec := range recs {
		v, vals, err := accessForward(ctx, in, rec.Name)
		add(v...)
		values = append(values, vals...)
		errs = append(errs, err)
	}
	if in.Output != nil {
		add(noLeak(in, values)...)
	}
	if in.Runs != nil {
		add(in.Runs.violations()...)
	}
	return vs, errors.Join(errs...)
}

// I1, over the providers a token of this installation points at (Providers may hold a
// whole suite's simulators).
func noRespend(in Input, urls map[string]bool) []Violation {
	var vs []Violation
	for pi, p := range in.Providers {
		if !urls[p.URL()] {
			continue
		}
		for _, a := range p.Audit() {
			if n := a.Respent(); n > 0 {
				var res []string
				for _, pr := range a.Presentations {
					res = append(res, pr.Result)
				}
				vs = append(vs, Violation{ID: NoRespend, Detail: fmt.Sprintf(
					"provider %d family %d: a refresh token issued at %s was presented %d times outside the grace of %s after it was spent (answers %s; family revoked %v)",
					pi, a.Family, a.IssuedAt.Format(time.RFC3339Nano), n, p.Grace(), strings.Join(res, ","), a.Revoked)})
			}
		}
	}
	return vs
}

func (in Input) providerFor(url string) *providersim.Rotating {
	for _, p := range in.Providers {
		if p.URL() == url {
			return p
		}
	}
	return nil
}

// I2. It also returns the secret values of every private version, for I4.
func committedLive(ctx context.Context, in Input, rec ledger.Record, urls map[string]bool) ([]Violation, []string, error) {
	name := in.Prefix + "private/" + rec.Name
	values, err := privateValues(ctx, in.Store, name, urls)
	if err != nil || rec.VersionID == "" {
		return nil, values, err
	}
	if _, waived := in.Waive[CommittedLive]; waived || len(in.Providers) == 0 {
		return nil, values, nil
	}
	doc, err := readPrivate(ctx, in.Store, name, rec.VersionID)
	if err != nil {
		return nil, values, err
	}
	p := in.providerFor(doc.Provider.TokenURL)
	if p == nil || doc.RefreshToken.IsZero() {
		return nil, values, nil // not a rotating token of this test
	}
	v := func(format string, a ...any) []Violation {
		return []Violation{{ID: CommittedLive, Token: rec.Name, Detail: fmt.Sprintf(format, a...)}}
	}
	rt := doc.RefreshToken.Reveal()
	a, known := p.AuditOf(rt)
	if known && a.Live {
		return nil, values, nil
	}
	// A refresh left in flight is not a loss while its saved version holds the live
	// token: the next run rolls it forward.
	if rec.Inflight != nil {
		if saved, err := readPrivate(ctx, in.Store, name, rec.Inflight.To); err == nil {
			if s, ok := p.AuditOf(saved.RefreshToken.Reveal()); ok && s.Live {
				return nil, values, nil
			}
		}
	}
	if rec.Status == ledger.StatusNeedsReauth {
		if !known {
			return nil, values, nil // the provider never issued it: rejected, never spent
		}
		for _, pr := range a.Presentations {
			if pr.Result == providersim.PresentRotated || pr.Result == providersim.PresentGrace {
				return v("needs_reauth with a refresh token we had spent (generation %d, version %s): the live chain was lost", rec.Generation, rec.VersionID), values, nil
			}
		}
		return nil, values, nil
	}
	switch {
	case !known:
		return v("status %s with a refresh token the provider never issued (generation %d)", rec.Status, rec.Generation), values, nil
	case a.Revoked:
		return v("status %s but the committed refresh token's family %d is revoked (generation %d, version %s)", rec.Status, a.Family, rec.Generation, rec.VersionID), values, nil
	default:
		return v("status %s but the committed refresh token (family %d, issued %s) is not the live one: it was spent (generation %d, version %s)", rec.Status, a.Family, a.IssuedAt.Format(time.RFC3339Nano), rec.Generation, rec.VersionID), values, nil
	}
}

func readPrivate(ctx context.Context, s *secretstore.Store, name, id string) (*token.Private, error) {
	v, err := s.GetVersion(ctx, name, id)
	if err != nil {
		return nil, fmt.Errorf("invariant: %w", err)
	}
	doc, err := token.ParsePrivate([]byte(v.Value.Reveal()))
	if err != nil {
		return nil, fmt.Errorf("invariant: private %s@%s: %w", name, id, err)
	}
	return doc, nil
}

// privateValues returns the secret fields of every private version and notes the token
// URLs they name in urls.
func privateValues(ctx context.Context, s *secretstore.Store, name string, urls map[string]bool) ([]string, error) {
	if ok, err := exists(ctx, s, name); !ok {
		return nil, err
	}
	vs, err := s.Versions(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("invariant: %w", err)
	}
	var out []string
	for _, info := range vs {
		doc, err := readPrivate(ctx, s, name, info.ID)
		if err != nil {
			continue // not a document (a bad-input test): nothing to scan for
		}
		urls[doc.Provider.TokenURL] = true
		out = append(out, doc.RefreshToken.Reveal(), doc.AccessToken.Reveal(), doc.Provider.ClientSecret.Reveal(), doc.Provider.EntitySecret.Reveal())
	}
	return out, nil
}

// exists asks with GetSecretValue, which answers a missing secret with not-found (moto
// answers ListSecretVersionIds on a missing secret with a 500).
func exists(ctx context.Context, s *secretstore.Store, name string) (bool, error) {
	_, err := s.GetCurrent(ctx, name)
	switch {
	case errors.Is(err, secretstore.ErrNotFound):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("invariant: %w", err)
	}
	return true, nil
}

type accessVersion struct {
	info secretstore.VersionInfo
	doc  token.Access
}

func readAccess(ctx context.Context, s *secretstore.Store, name string) ([]accessVersion, error) {
	if ok, err := exists(ctx, s, name); !ok {
		return nil, err
	}
	infos, err := s.Versions(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("invariant: %w", err)
	}
	var out []accessVersion
	for _, info := range infos {
		v, err := s.GetVersion(ctx, name, info.ID)
		if err != nil {
			return nil, fmt.Errorf("invariant: %w", err)
		}
		doc, err := token.ParseAccess([]byte(v.Value.Reveal()))
		if err != nil {
			return nil, fmt.Errorf("invariant: access %s@%s: %w", name, info.ID, err)
		}
		out = append(out, accessVersion{info, doc})
	}
	return out, nil
}

// wallSlack absorbs Secrets Manager's (and moto's) whole-second creation times.
const wallSlack = time.Second

// I3 over the versions of the access secret (the runs' part is in Runs).
func accessForward(ctx context.Context, in Input, tokenName string) ([]Violation, []string, error) {
	vs, err := readAccess(ctx, in.Store, in.Prefix+"access/"+tokenName)
	if err != nil || len(vs) == 0 {
		return nil, nil, err
	}
	var values []string
	var out []Violation
	v := func(format string, a ...any) {
		out = append(out, Violation{ID: AccessForward, Token: tokenName, Detail: fmt.Sprintf(format, a...)})
	}
	var current *accessVersion
	maxGen := int64(0)
	for i := range vs {
		values = append(values, vs[i].doc.AccessToken.Reveal())
		maxGen = max(maxGen, vs[i].doc.Generation)
		if vs[i].info.HasStage("AWSCURRENT") {
			current = &vs[i]
		}
		// Versions are oldest first; creation times are whole seconds, so only versions
		// created in different seconds are ordered.
		for j := range i {
			if vs[j].info.Created.Before(vs[i].info.Created) && vs[j].doc.Generation > vs[i].doc.Generation {
				v("version %s (generation %d) was published after version %s (generation %d)", vs[i].info.ID, vs[i].doc.Generation, vs[j].info.ID, vs[j].doc.Generation)
			}
		}
		if in.Wall && vs[i].doc.Status == token.StatusActive && !vs[i].doc.ExpiresAt.IsZero() &&
			!vs[i].doc.ExpiresAt.After(vs[i].info.Created.Add(-wallSlack)) {
			v("version %s (generation %d) is active with an access token that expired at %s, before it was published at %s", vs[i].info.ID, vs[i].doc.Generation, vs[i].doc.ExpiresAt.Format(time.RFC3339), vs[i].info.Created.Format(time.RFC3339))
		}
	}
	if current != nil && current.doc.Generation < maxGen {
		v("AWSCURRENT carries generation %d, behind generation %d published earlier", current.doc.Generation, maxGen)
	}
	return out, values, nil
}

// I4.
func noLeak(in Input, values []string) []Violation {
	s := leakscan.New()
	s.Register(in.Secrets...)
	s.Register(values...)
	for _, p := range in.Providers {
		s.RegisterIssuer(p)
	}
	_, _ = s.Write(in.Output)
	var summary bytes.Buffer
	if n := s.Check(&summary); n > 0 {
		lines := slices.DeleteFunc(strings.Split(strings.TrimSpace(summary.String()), "\n"), func(l string) bool { return !strings.HasPrefix(l, "LEAK") })
		return []Violation{{ID: NoLeak, Detail: fmt.Sprintf("%d secret values appear in the captured output: %s", n, strings.Join(lines, "; "))}}
	}
	return nil
}
