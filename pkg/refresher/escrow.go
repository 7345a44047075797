package refresher

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/seed-502fa48b/token-refresher/pkg/escrow"
	"github.com/seed-502fa48b/token-refresher/pkg/ledger"
	"github.com/seed-502fa48b/token-refresher/pkg/secretstore"
	"github.com/seed-502fa48b/token-refresher/pkg/token"
)

// The escrow (docs/design.md §4, "a rotated token always has a durable home"): when Secrets
// Manager refuses the persist after the provider rotated, the whole new private document is
// sealed with KMS for (token, N) and written into the in-flight record, fenced by holder and
// generation. The next run's recovery opens it, finishes the persist and commits, which
// removes it. While it exists the old refresh token is never presented.

// escrowWriteTime bounds the escrow write when the run's own deadline has already passed:
// the record is the token's last durable home, so it is tried even then.
const escrowWriteTime = 2 * time.Second

// escrow seals raw (the marshalled new version to) and writes it into the in-flight record.
func (t *tokenRun) escrow(raw token.Secret, to string) error {
	if t.e.opts.Sealer == nil {
		return errors.New("no escrow key configured (ESCROW_KEY_ID)")
	}
	if t.claimedBy == "" {
		return errors.New("no claim to fence the escrow by")
	}
	ctx := t.ctx
	if ctx.Err() != nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.WithoutCancel(t.ctx), escrowWriteTime)
		defer cancel()
	}
	sealed, err := t.e.opts.Sealer.Seal(ctx, t.name, to, raw)
	if err != nil {
		return fmt.Errorf("seal: %w", err)
	}
	err = t.e.opts.Ledger.Escrow(ctx, ledger.EscrowWrite{
		Name: t.name, Holder: t.claimedBy, Generation: t.rec.Generation, To: to, Sealed: sealed, At: t.e.now(),
	})
	if err != nil {
		return fmt.Errorf("write: %w", err)
	}
	t.escrowed = true
	t.log.WarnContext(t.ctx, "the rotated token is escrowed in the state table; the next run finishes the persist", "version", to)
	return nil
}

// fromEscrow finishes an escrowed refresh (recovery, version `to` absent): it opens the
// sealed document and persists it as `to` with the same write a refresh uses. It never
// falls back to the old refresh token: a sealed value that does not open fails loudly.
func (t *tokenRun) fromEscrow(to string) (*token.Private, error) {
	if t.e.opts.Sealer == nil {
		t.log.ErrorContext(t.ctx, "an escrowed refresh needs the escrow key (ESCROW_KEY_ID) to finish", "version", to)
		return nil, fmt.Errorf("a rotated token for version %s is escrowed in the state table but no escrow key is configured (set ESCROW_KEY_ID); the old refresh token is not presented", to)
	}
	plain, err := t.e.opts.Sealer.Open(t.ctx, t.name, to, t.rec.Inflight.Escrow)
	if errors.Is(err, escrow.ErrInvalid) {
		t.log.ErrorContext(t.ctx, "the escrowed token does not open; an operator must re-authorise", "version", to)
		return nil, fmt.Errorf("the escrowed token for version %s does not open (%v); the old refresh token is not presented: re-authorise the token", to, err)
	}
	if err != nil {
		return nil, fmt.Errorf("open the escrowed token for version %s (kept; the next run tries again): %w", to, err)
	}
	doc, err := token.ParsePrivate([]byte(plain.Reveal()))
	if err != nil {
		t.log.ErrorContext(t.ctx, "the escrowed document does not parse; an operator must look", "version", to)
		return nil, fmt.Errorf("the escrowed document for version %s does not parse; the old refresh token is not presented: %w", to, err)
	}
	t.escrowed = true
	t.log.InfoContext(t.ctx, "finishing an escrowed refresh", "version", to)
	if err := t.persist(doc, to); err != nil {
		if !errors.Is(err, secretstore.ErrVersionConflict) {
			return nil, err // the escrow stays for the next run
		}
		found, ferr := t.findVersion(to)
		if ferr != nil {
			return nil, ferr
		}
		if found == nil {
			return nil, fmt.Errorf("version %s exists with other content but cannot be read", to)
		}
		doc = found
	}
	return doc, nil
}
