package ledger_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/seed-502fa48b/token-refresher/pkg/ledger"
)

// BenchmarkClaimCommit measures one refresh's ledger writes (claim with a
// quota unit, then commit) against moto.
func BenchmarkClaimCommit(b *testing.B) {
	e := newEnvTB(b)
	if err := e.l.Create(e.ctx, ledger.Record{Name: "acme", VersionID: "v0"}); err != nil {
		b.Fatal(err)
	}
	q := &ledger.QuotaReservation{Key: "k", Day: day, Limit: 1 << 30}
	b.ResetTimer()
	for i := range b.N {
		g := int64(i)
		from, to := fmt.Sprintf("v%d", i), fmt.Sprintf("v%d", i+1)
		if err := e.l.Claim(e.ctx, ledger.Claim{Name: "acme", Holder: "bench", Generation: g, From: from, To: to, LeaseUntil: t0.Add(time.Minute), Quota: q}); err != nil {
			b.Fatal(err)
		}
		if _, err := e.l.Commit(e.ctx, ledger.Commit{Name: "acme", Holder: "bench", FromGeneration: g, From: from, To: to}); err != nil {
			b.Fatal(err)
		}
	}
}
