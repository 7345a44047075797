package main

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/seed-502fa48b/token-refresher/pkg/invocation"
	"github.com/seed-502fa48b/token-refresher/pkg/ledger"
	"github.com/seed-502fa48b/token-refresher/pkg/secretstore"
	"github.com/seed-502fa48b/token-refresher/pkg/token"
)

// seed validates a private document and stores it: CreateSecret for a new token (with the
// resource policy that fences it), else a new AWSCURRENT version — an operator edit, which
// the refresher adopts on its next run (docs/design.md §2). Nothing is written unless the
// document is valid and, for an existing token, does not bring back a refresh token the
// chain has moved past.
func (a *app) seed(ctx context.Context, args []string) int {
	fs := a.flagSet("seed")
	file := fs.String("file", "", "the private document (- for stdin)")
	replace := fs.Bool("replace-refresh-token", false, "store the document's refresh token even though the token's chain has moved past it, marked as a new authorisation (authorized_at now)")
	pos, code, ok := parse(fs, args, "seed NAME --file DOC.json [--replace-refresh-token]")
	if !ok {
		return code
	}
	if len(pos) != 1 {
		a.errorf("seed", "want one token NAME, got %d arguments", len(pos))
		return exitUsage
	}
	name := pos[0]
	if err := checkName(name); err != nil {
		a.errorf("seed", "%v", err)
		return exitUsage
	}
	if err := a.checkFence(); err != nil {
		a.errorf("seed", "%v", err)
		return exitUsage
	}
	raw, err := a.readDocument(*file)
	if err != nil {
		a.errorf("seed", "%v", err)
		return exitFail
	}
	p, notes, err := checkDocument(raw, a.now())
	if err != nil {
		a.errorf("seed", "%s: invalid document, nothing written: %v", name, err)
		return exitInvalid
	}
	a.printNotes("seed", notes)
	body, err := compact(raw)
	if err != nil { // checkDocument parsed it, so this is not expected
		a.errorf("seed", "%s: %v", name, err)
		return exitFail
	}
	sm, err := a.secretsClient(ctx)
	if err != nil {
		a.errorf("seed", "%s", a.explainAWS(err, a.secretResource(a.privateName(name))))
		return exitFail
	}
	store := secretstore.New(sm)
	secret := a.privateName(name)
	// A new token is a new authorisation: nothing it could be a stale copy of.
	created, err := markAuthorized(body, a.now())
	if err != nil {
		a.errorf("seed", "%s: %v", name, err)
		return exitFail
	}
	version, err := store.Create(ctx, secret, token.Secret(created))
	switch {
	case err == nil:
		fmt.Fprintf(a.stdout, "created %s (version %s): %s\n", secret, version, summary(p))
		if err := a.fence(ctx, "seed", sm, secret); err != nil {
			a.errorf("seed", "%s: created, but not fenced: %v", secret, err)
			return exitFail
		}
	case errors.Is(err, secretstore.ErrExists):
		base, err := a.committedState(ctx, store, name)
		if err != nil && !*replace {
			a.errorf("seed", "%s: nothing written: %v", name, err)
			return exitFail
		}
		if err != nil {
			// The operator says the refresh token is new; without the committed version to
			// compare with, mark the document so that the refresher adopts it.
			fmt.Fprintf(a.stderr, "tokenctl seed: warning: %s: %v; storing the document as a new authorisation (--replace-refresh-token)\n", name, err)
			base = committedState{}
		}
		if !*replace {
			if stale := base.staleReason(p); stale != "" {
				a.errorf("seed", "%s: refused, nothing written: %s. If this is a newly authorised refresh token, "+
					"pass --replace-refresh-token (or use tokenctl authorize); to change only settings, start from the live document "+
					"(tokenctl show %s) and keep its refresh token out of files", name, stale, name)
				return exitRefused
			}
		}
		switch {
		case *replace && base.bringsNewRefreshToken(p):
			if body, err = markAuthorized(body, authorizationTime(a.now(), base.doc)); err != nil {
				a.errorf("seed", "%s: %v", name, err)
				return exitFail
			}
			fmt.Fprintf(a.stderr, "tokenctl seed: %s: a new refresh token: authorized_at set to now, so the refresher adopts it over the live chain\n", name)
		case base.ignoredRefreshToken(p):
			fmt.Fprintf(a.stderr, "tokenctl seed: warning: %s: refresh_token is not the committed one and the document is not marked as a new authorisation, "+
				"so the refresher keeps the committed refresh token; if this one is newly authorised, run again with --replace-refresh-token\n", name)
		}
		version, err = store.PutCurrent(ctx, secret, token.Secret(body))
		if err != nil {
			a.errorf("seed", "%s: %s", name, a.explainAWS(err, a.secretResource(secret)))
			return exitFail
		}
		fmt.Fprintf(a.stdout, "updated %s: new AWSCURRENT version %s: %s\n", secret, version, summary(p))
	default:
		a.errorf("seed", "%s: %s", name, a.explainAWS(err, a.secretResource(secret)))
		return exitFail
	}
	if a.opts.function == "" {
		fmt.Fprintf(a.stdout, "the refresher adopts it on its next scheduled run; to adopt it now: tokenctl refresh %s (with --function / REFRESHER_FUNCTION)\n", name)
		return exitOK
	}
	// Adopt at once (issue 10): an unforced request adopts a new secret or an edit and
	// refreshes only what adoption makes due, so it never spends an extra rotation.
	fmt.Fprintf(a.stdout, "invoking %s so that the refresher adopts %s now:\n", a.opts.function, name)
	return a.invoke(ctx, "seed", invocation.Request{Tokens: []string{name}}, false)
}

// checkFence fails on half-given or malformed role ARNs before anything is written.
func (a *app) checkFence() error {
	if a.opts.refresherRole == "" && a.opts.adminRole == "" {
		return nil
	}
	_, err := privatePolicy(a.opts.refresherRole, a.opts.adminRole)
	return err
}

// committedState is what seed checks a document against: the committed version named by
// the token record, or AWSCURRENT when there is no record or no table.
type committedState struct {
	doc        *token.Private // nil: nothing committed, or not a readable document
	versionID  string
	generation int64
	recorded   bool // the state table holds the token's record
}

func (a *app) committedState(ctx context.Context, store *secretstore.Store, name string) (committedState, error) {
	secret := a.privateName(name)
	var st committedState
	var rec ledger.Record
	if a.opts.table != "" {
		led, err := a.ledger(ctx)
		if err != nil {
			return st, err
		}
		rec, err = led.Get(ctx, name)
		switch {
		case err == nil:
			st.recorded = true
		case errors.Is(err, ledger.ErrNotFound):
		default:
			return st, fmt.Errorf("%s", a.explainAWS(err, a.tableResource()))
		}
	} else {
		fmt.Fprintf(a.stderr, "tokenctl seed: warning: no state table (--table / STATE_TABLE): checking the refresh token against AWSCURRENT only\n")
	}
	var base secretstore.Version
	var err error
	if st.recorded && rec.VersionID != "" {
		base, err = store.GetVersion(ctx, secret, rec.VersionID)
	} else {
		base, err = store.GetCurrent(ctx, secret)
	}
	if err != nil {
		return st, fmt.Errorf("read the committed version: %s", a.explainAWS(err, a.secretResource(secret)))
	}
	st.versionID = base.ID
	committed, err := token.ParsePrivate([]byte(base.Value.Reveal()))
	if err != nil {
		// Nothing usable to protect: the operator is repairing a broken document.
		return st, nil
	}
	st.doc = committed
	st.generation = committed.Generation
	if st.recorded {
		st.generation = max(st.generation, rec.Generation)
	}
	return st, nil
}

// staleReason says why doc would bring back a refresh token the token's chain has already
// moved past ("" if it would not). A chain that has rotated (generation > 0) holds a
// refresh token no file has; a document that carries one of our version ids other than the
// committed one is a copy of an old version. A document whose authorized_at is later than
// the committed one's is a new authorisation the operator marked, which the refresher adopts.
func (st committedState) staleReason(doc *token.Private) string {
	if st.doc == nil || doc.NewAuthorizationOver(st.doc) {
		return ""
	}
	if doc.VersionID != "" && doc.VersionID != st.versionID {
		return fmt.Sprintf("the document is a copy of version %s, but the committed version is %s (generation %d)", doc.VersionID, st.versionID, st.generation)
	}
	if st.generation > 0 && st.differentRefreshToken(doc) {
		return fmt.Sprintf("the token has been refreshed %d time(s) since it was seeded and the document's refresh_token is not the committed one "+
			"(probably the onboarding file, whose refresh token the provider has already spent)", st.generation)
	}
	return ""
}

// differentRefreshToken reports whether doc brings a refresh token that is not the
// committed one. Sahamati documents carry none.
func (st committedState) differentRefreshToken(doc *token.Private) bool {
	return doc.Provider.Grant != token.GrantSahamatiEntity && !doc.RefreshToken.IsZero() && st.doc != nil &&
		subtle.ConstantTimeCompare([]byte(doc.RefreshToken.Reveal()), []byte(st.doc.RefreshToken.Reveal())) != 1
}

// bringsNewRefreshToken reports whether seed --replace-refresh-token marks doc as a new
// authorisation: it brings a refresh token that is not the committed one, or the token has
// no committed version (no record, or none readable) to compare with.
func (st committedState) bringsNewRefreshToken(doc *token.Private) bool {
	if doc.Provider.Grant == token.GrantSahamatiEntity || doc.RefreshToken.IsZero() {
		return false
	}
	return st.doc == nil || !st.recorded || st.differentRefreshToken(doc)
}

// ignoredRefreshToken reports whether the refresher will keep the committed refresh token
// in place of doc's: doc brings another one without marking itself as a new authorisation.
func (st committedState) ignoredRefreshToken(doc *token.Private) bool {
	return st.recorded && st.differentRefreshToken(doc) && !doc.NewAuthorizationOver(st.doc)
}

// authorizationTime is the authorized_at that marks a new authorisation made at now over
// the document it supersedes (nil: none): now, or just after that document's mark when now
// is not later (a clock behind, or a mark written in the future), so that the refresher
// always adopts it.
func authorizationTime(now time.Time, over *token.Private) time.Time {
	at := now.UTC()
	if over != nil && !at.After(over.AuthorizedAt) {
		at = over.AuthorizedAt.UTC().Add(time.Nanosecond)
	}
	return at
}

// markAuthorized sets authorized_at in a compact document, leaving the rest as the
// operator wrote it (a new field goes at the end). body is a valid JSON object without
// duplicate fields (checkDocument).
func markAuthorized(body []byte, at time.Time) ([]byte, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil {
		return nil, fmt.Errorf("document: %w", err)
	}
	v, err := json.Marshal(at.UTC().Format(time.RFC3339Nano))
	if err != nil {
		return nil, err
	}
	if _, ok := top["authorized_at"]; ok {
		top["authorized_at"] = v
		return json.Marshal(top)
	}
	out := bytes.TrimSuffix(bytes.TrimSpace(body), []byte("}"))
	out = append([]byte(nil), out...)
	if len(top) > 0 {
		out = append(out, ',')
	}
	out = append(out, `"authorized_at":`...)
	out = append(out, v...)
	return append(out, '}'), nil
}
