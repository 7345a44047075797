package main

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"

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
	replace := fs.Bool("replace-refresh-token", false, "store the document's refresh token even though the token's chain has moved past it")
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
	version, err := store.Create(ctx, secret, token.Secret(body))
	switch {
	case err == nil:
		fmt.Fprintf(a.stdout, "created %s (version %s): %s\n", secret, version, summary(p))
		if err := a.fence(ctx, "seed", sm, secret); err != nil {
			a.errorf("seed", "%s: created, but not fenced: %v", secret, err)
			return exitFail
		}
	case errors.Is(err, secretstore.ErrExists):
		if !*replace {
			stale, err := a.staleRefreshToken(ctx, store, name, p)
			if err != nil {
				a.errorf("seed", "%s: nothing written: %v", name, err)
				return exitFail
			}
			if stale != "" {
				a.errorf("seed", "%s: refused, nothing written: %s. If this is a newly authorised refresh token, "+
					"pass --replace-refresh-token (or use tokenctl authorize); to change only settings, start from the live document "+
					"(tokenctl show %s) and keep its refresh token out of files", name, stale, name)
				return exitRefused
			}
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

// staleRefreshToken says why doc would bring back a refresh token the token's chain has
// already moved past ("" if it would not): the base is the committed version named by the
// token record, or AWSCURRENT when there is no record or no table. A chain that has
// rotated (generation > 0) holds a refresh token no file has; a document that carries one
// of our version ids other than the committed one is a copy of an old version.
func (a *app) staleRefreshToken(ctx context.Context, store *secretstore.Store, name string, doc *token.Private) (string, error) {
	secret := a.privateName(name)
	var base secretstore.Version
	var err error
	var rec ledger.Record
	haveRecord := false
	if a.opts.table != "" {
		led, lerr := a.ledger(ctx)
		if lerr != nil {
			return "", lerr
		}
		rec, err = led.Get(ctx, name)
		switch {
		case err == nil:
			haveRecord = true
		case errors.Is(err, ledger.ErrNotFound):
		default:
			return "", fmt.Errorf("%s", a.explainAWS(err, a.tableResource()))
		}
	} else {
		fmt.Fprintf(a.stderr, "tokenctl seed: warning: no state table (--table / STATE_TABLE): checking the refresh token against AWSCURRENT only\n")
	}
	if haveRecord && rec.VersionID != "" {
		base, err = store.GetVersion(ctx, secret, rec.VersionID)
	} else {
		base, err = store.GetCurrent(ctx, secret)
	}
	if err != nil {
		return "", fmt.Errorf("read the committed version: %s", a.explainAWS(err, a.secretResource(secret)))
	}
	committed, err := token.ParsePrivate([]byte(base.Value.Reveal()))
	if err != nil {
		// Nothing usable to protect: the operator is repairing a broken document.
		return "", nil
	}
	committedID := base.ID
	generation := committed.Generation
	if haveRecord {
		generation = max(generation, rec.Generation)
	}
	if doc.VersionID != "" && doc.VersionID != committedID {
		return fmt.Sprintf("the document is a copy of version %s, but the committed version is %s (generation %d)", doc.VersionID, committedID, generation), nil
	}
	if generation > 0 && doc.Provider.Grant != token.GrantSahamatiEntity && !doc.RefreshToken.IsZero() &&
		subtle.ConstantTimeCompare([]byte(doc.RefreshToken.Reveal()), []byte(committed.RefreshToken.Reveal())) != 1 {
		return fmt.Sprintf("the token has been refreshed %d time(s) since it was seeded and the document's refresh_token is not the committed one "+
			"(probably the onboarding file, whose refresh token the provider has already spent)", generation), nil
	}
	return "", nil
}
