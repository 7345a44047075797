package main

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/seed-502fa48b/token-refresher/pkg/ledger"
)

// TestStatusShowEscrow: when a token's in-flight record holds an escrowed refresh token
// (the provider rotated, Secrets Manager refused the persist), status and show say so and
// since when, and print nothing of the escrowed bytes in any encoding.
func TestStatusShowEscrow(t *testing.T) {
	e := newAWSEnv(t)
	c := e.cli(t)
	c.mustRun("seed", "acme", "--file", writeFile(t, "acme.json", rotatingDoc(seedClientSecret)))
	c.mustRun("seed", "sahamati-prod", "--file", writeFile(t, "s.json", sahamatiDoc))
	ctx := context.Background()
	led := ledger.New(e.ddb, ledger.Options{Table: e.table, Now: func() time.Time { return c.now }})
	v1, _ := e.current(t, "acme")

	// acme: claimed for v1 -> v-next, then escrowed 20 s later; sahamati-prod: claimed, no escrow.
	if err := led.Create(ctx, ledger.Record{Name: "acme", VersionID: v1, Generation: 3, Status: ledger.StatusActive}); err != nil {
		t.Fatal(err)
	}
	leaseUntil := c.now.Add(time.Minute)
	if err := led.Claim(ctx, ledger.Claim{Name: "acme", Holder: "req-1", Generation: 3, From: v1, To: "v-next", LeaseUntil: leaseUntil}); err != nil {
		t.Fatal(err)
	}
	// Stands for what pkg/escrow seals; the test looks for it in every output.
	sealed := []byte("sealed-" + rotatedRefreshToken)
	escrowedAt := c.now.Add(20 * time.Second)
	if err := led.Escrow(ctx, ledger.EscrowWrite{Name: "acme", Holder: "req-1", Generation: 3, To: "v-next", Sealed: sealed, At: escrowedAt}); err != nil {
		t.Fatalf("Escrow: %v", err)
	}
	if err := led.Create(ctx, ledger.Record{Name: "sahamati-prod", VersionID: "v-s", Generation: 1, Status: ledger.StatusActive}); err != nil {
		t.Fatal(err)
	}
	if err := led.Claim(ctx, ledger.Claim{Name: "sahamati-prod", Holder: "req-2", Generation: 1, From: "v-s", To: "v-s2", LeaseUntil: leaseUntil}); err != nil {
		t.Fatal(err)
	}
	leaked := []string{string(sealed), rotatedRefreshToken, base64.StdEncoding.EncodeToString(sealed), hex.EncodeToString(sealed)}
	var outputs []string

	c.mustRun("status", "--json")
	outputs = append(outputs, c.out.String(), c.err.String())
	var rows []statusRow
	if err := json.Unmarshal(c.out.Bytes(), &rows); err != nil {
		t.Fatalf("status --json: %v\n%s", err, c.out.String())
	}
	if len(rows) != 2 {
		t.Fatalf("status --json: got %d rows, want 2:\n%s", len(rows), c.out.String())
	}
	tests := []struct {
		name         string
		row          statusRow
		wantEscrowed bool
		wantAt       *time.Time
	}{
		{"acme", rows[0], true, &escrowedAt},
		{"sahamati-prod", rows[1], false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := tt.row.Inflight
			if tt.row.Name != tt.name || in == nil {
				t.Fatalf("row: got %s with inflight %+v, want %s in flight", tt.row.Name, in, tt.name)
			}
			if in.Escrowed != tt.wantEscrowed {
				t.Errorf("escrowed: got %v, want %v", in.Escrowed, tt.wantEscrowed)
			}
			if (in.EscrowedAt == nil) != (tt.wantAt == nil) || (in.EscrowedAt != nil && !in.EscrowedAt.Equal(*tt.wantAt)) {
				t.Errorf("escrowed_at: got %v, want %v", in.EscrowedAt, tt.wantAt)
			}
		})
	}
	if strings.Count(c.out.String(), `"escrowed_at"`) != 1 || strings.Count(c.out.String(), `"escrowed": false`) != 1 {
		t.Errorf("status --json: want escrowed_at once and escrowed false once:\n%s", c.out.String())
	}

	c.mustRun("status")
	outputs = append(outputs, c.out.String(), c.err.String())
	for _, line := range strings.Split(strings.TrimSpace(c.out.String()), "\n")[1:] {
		name, _, _ := strings.Cut(line, " ")
		wantNote := name == "acme"
		if got := strings.Contains(line, "inflight, escrowed since "+formatTime(escrowedAt)); got != wantNote {
			t.Errorf("status table, %s: escrow note %v, want %v:\n%s", name, got, wantNote, line)
		}
		if !strings.Contains(line, "inflight") {
			t.Errorf("status table, %s: no inflight mark:\n%s", name, line)
		}
	}

	c.mustRun("show", "acme", "--json")
	outputs = append(outputs, c.out.String(), c.err.String())
	var out showOutput
	if err := json.Unmarshal(c.out.Bytes(), &out); err != nil {
		t.Fatalf("show --json: %v\n%s", err, c.out.String())
	}
	if r := out.Record; r == nil || r.Inflight == nil || r.Inflight.From != v1 || r.Inflight.To != "v-next" || !r.Inflight.Escrowed ||
		r.Inflight.EscrowedAt == nil || !r.Inflight.EscrowedAt.Equal(escrowedAt) {
		t.Errorf("show --json record: got %+v, want inflight %s -> v-next escrowed at %s", out.Record, v1, escrowedAt)
	}

	c.mustRun("show", "acme")
	outputs = append(outputs, c.out.String(), c.err.String())
	for _, want := range []string{"inflight: " + v1 + " -> v-next since " + formatTime(c.now),
		"escrow:  refresh token escrowed since " + formatTime(escrowedAt)} {
		if !strings.Contains(c.out.String(), want) {
			t.Errorf("show lacks %q:\n%s", want, c.out.String())
		}
	}
	c.mustRun("show", "sahamati-prod")
	outputs = append(outputs, c.out.String(), c.err.String())
	if !strings.Contains(c.out.String(), "inflight: v-s -> v-s2") || strings.Contains(c.out.String(), "escrow") {
		t.Errorf("show sahamati-prod: want the inflight line and no escrow line:\n%s", c.out.String())
	}

	assertNoSecrets(t, append(leaked, seededSecrets...), outputs...)
}
