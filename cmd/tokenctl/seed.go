package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/seed-502fa48b/token-refresher/pkg/secretstore"
	"github.com/seed-502fa48b/token-refresher/pkg/token"
)

// seed validates a private document and stores it: CreateSecret for a new token, else a
// new AWSCURRENT version — an operator edit, which the refresher adopts on its next run
// (DESIGN.md §2). Nothing is written unless the document is valid.
func (a *app) seed(ctx context.Context, args []string) int {
	fs := a.flagSet("seed")
	file := fs.String("file", "", "the private document (- for stdin)")
	pos, code, ok := parse(fs, args, "seed NAME --file DOC.json")
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
	raw, err := a.readDocument(*file)
	if err != nil {
		a.errorf("seed", "%v", err)
		return exitFail
	}
	p, err := checkDocument(raw)
	if err != nil {
		a.errorf("seed", "%s: invalid document, nothing written: %v", name, err)
		return exitFail
	}
	body, err := compact(raw)
	if err != nil { // checkDocument parsed it, so this is not expected
		a.errorf("seed", "%s: %v", name, err)
		return exitFail
	}
	store, err := a.store(ctx)
	if err != nil {
		a.errorf("seed", "%v", err)
		return exitFail
	}
	secret := a.privateName(name)
	version, err := store.Create(ctx, secret, token.Secret(body))
	switch {
	case err == nil:
		fmt.Fprintf(a.stdout, "created %s (version %s): %s\n", secret, version, summary(p))
	case errors.Is(err, secretstore.ErrExists):
		version, err = store.PutCurrent(ctx, secret, token.Secret(body))
		if err != nil {
			a.errorf("seed", "%s: %v", name, err)
			return exitFail
		}
		fmt.Fprintf(a.stdout, "updated %s: new AWSCURRENT version %s: %s\n", secret, version, summary(p))
	default:
		a.errorf("seed", "%s: %v", name, err)
		return exitFail
	}
	fmt.Fprintf(a.stdout, "the refresher adopts it on its next run; to do it now: tokenctl refresh %s\n", name)
	return exitOK
}
