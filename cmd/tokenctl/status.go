package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/seed-502fa48b/token-refresher/pkg/invocation"
	"github.com/seed-502fa48b/token-refresher/pkg/ledger"
	"github.com/seed-502fa48b/token-refresher/pkg/secretstore"
	"github.com/seed-502fa48b/token-refresher/pkg/token"
)

// Lease states shown by status.
const (
	leaseFree    = "free"
	leaseHeld    = "held"
	leaseExpired = "expired" // a holder crashed or is late; the next run recovers it
)

// statusRow is one token in `tokenctl status --json`; the field names are a stable
// interface (docs/tokenctl.md "`tokenctl status --json`"). It holds no secret: the ledger has none,
// and of the private document only settings are read.
type statusRow struct {
	Name    string `json:"name"`
	Adopted bool   `json:"adopted"` // false: a private secret without a token record
	// NotAdoptedReason says why a secret without a record will never be adopted as it is
	// (invalid name, invalid document); empty when the next run adopts it.
	NotAdoptedReason    string        `json:"not_adopted_reason,omitempty"`
	Status              string        `json:"status,omitempty"`
	StatusReason        string        `json:"status_reason,omitempty"`
	Generation          int64         `json:"generation"`
	PublishedGeneration int64         `json:"published_generation"`
	VersionID           string        `json:"version_id,omitempty"`
	ExpiresAt           *time.Time    `json:"expires_at,omitempty"`
	NextDueAt           *time.Time    `json:"next_due_at,omitempty"`
	RefreshExpiresAt    *time.Time    `json:"refresh_expires_at,omitempty"`
	WritesLast24h       int           `json:"writes_last_24h"`
	MaxWritesPerDay     int           `json:"max_writes_per_day"`
	WriteBudgetUsedPct  float64       `json:"write_budget_used_percent"`
	Quota               *quotaToday   `json:"quota,omitempty"`
	Lease               string        `json:"lease"`
	LeaseHolder         string        `json:"lease_holder,omitempty"`
	LeaseUntil          *time.Time    `json:"lease_until,omitempty"`
	Inflight            *inflightView `json:"inflight,omitempty"`
	ConsecutiveFailures int           `json:"consecutive_failures"`
	LastError           string        `json:"last_error,omitempty"`
}

// quotaToday is a token's quota bucket for the current quota day.
type quotaToday struct {
	Key   string `json:"key"`
	Day   string `json:"day"`
	Used  int    `json:"used"`
	Limit int    `json:"limit"`
}

type inflightView struct {
	From      string    `json:"from_version"`
	To        string    `json:"to_version"`
	StartedAt time.Time `json:"started_at"`
	// Escrowed: the provider rotated, Secrets Manager refused the new refresh token, and it
	// waits (KMS-sealed) in this record for the next run to store. Never the bytes.
	Escrowed   bool       `json:"escrowed"`
	EscrowedAt *time.Time `json:"escrowed_at,omitempty"`
	// PresentedAt: the refresh token may have reached the provider from then on; recovery
	// presents it again only inside the provider's reuse grace. Absent: never sent.
	PresentedAt *time.Time `json:"presented_at,omitempty"`
}

func newInflightView(in *ledger.Inflight) *inflightView {
	if in == nil {
		return nil
	}
	v := &inflightView{From: in.From, To: in.To, StartedAt: in.StartedAt.UTC(), Escrowed: len(in.Escrow) > 0}
	if v.Escrowed {
		v.EscrowedAt = timePtr(in.EscrowedAt)
	}
	if at, ok := in.Presented(); ok {
		v.PresentedAt = timePtr(at)
	}
	return v
}

// escrowNote is how the tables say an in-flight record holds an escrowed refresh token.
func (v *inflightView) escrowNote() string {
	if v == nil || !v.Escrowed {
		return ""
	}
	if v.EscrowedAt == nil {
		return "escrowed"
	}
	return "escrowed since " + formatTime(*v.EscrowedAt)
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}

func newStatusRow(r ledger.Record, now time.Time) statusRow {
	row := statusRow{
		Name:                r.Name,
		Adopted:             true,
		Status:              r.Status,
		StatusReason:        r.StatusReason,
		Generation:          r.Generation,
		PublishedGeneration: r.PublishedGeneration,
		VersionID:           r.VersionID,
		ExpiresAt:           timePtr(r.ExpiresAt),
		NextDueAt:           timePtr(r.NextDueAt),
		RefreshExpiresAt:    timePtr(r.RefreshExpiresAt),
		WritesLast24h:       r.WritesSince(now.Add(-24 * time.Hour)),
		MaxWritesPerDay:     token.DefaultMaxWritesPerDay,
		Lease:               leaseFree,
		LeaseHolder:         r.LeaseHolder,
		LeaseUntil:          timePtr(r.LeaseUntil),
		ConsecutiveFailures: r.ConsecutiveFailures,
		LastError:           r.LastError,
	}
	switch {
	case r.LeaseUntil.After(now):
		row.Lease = leaseHeld
	case r.LeaseHolder != "" || !r.LeaseUntil.IsZero():
		row.Lease = leaseExpired
	}
	row.Inflight = newInflightView(r.Inflight)
	row.setBudget()
	return row
}

func (r *statusRow) setBudget() {
	if r.MaxWritesPerDay > 0 {
		r.WriteBudgetUsedPct = float64(int(float64(r.WritesLast24h)*1000/float64(r.MaxWritesPerDay))) / 10
	}
}

// status lists token records, plus private secrets the refresher has not adopted (yet),
// with what only the private document knows: the write budget and today's quota.
func (a *app) status(ctx context.Context, args []string) int {
	fs := a.flagSet("status")
	asJSON := fs.Bool("json", false, "print JSON")
	names, code, ok := parse(fs, args, "status [NAME...] [--json]")
	if !ok {
		return code
	}
	if a.opts.table == "" {
		a.errorf("status", "no state table: pass --table or set STATE_TABLE")
		return exitUsage
	}
	led, err := a.ledger(ctx)
	if err != nil {
		a.errorf("status", "%s", a.explainAWS(err, a.tableResource()))
		return exitFail
	}
	recs, err := led.List(ctx)
	if err != nil {
		a.errorf("status", "%s", a.explainAWS(err, a.tableResource()))
		return exitFail
	}
	now := a.now()
	rows := map[string]*statusRow{}
	for _, r := range recs {
		row := newStatusRow(r, now)
		rows[r.Name] = &row
	}
	// Reading the secrets may not be allowed; the records alone are still worth showing.
	store, err := a.store(ctx)
	if err != nil {
		a.errorf("status", "%s", a.explainAWS(err, a.tableResource()))
		return exitFail
	}
	prefix := a.privateName("")
	secrets, err := store.List(ctx, prefix)
	if err != nil {
		fmt.Fprintf(a.stderr, "tokenctl status: warning: cannot list %s*: %s\n", prefix, a.explainAWS(err, a.secretResource(prefix+"*")))
	}
	for _, s := range secrets {
		name := strings.TrimPrefix(s, prefix)
		if _, ok := rows[name]; !ok {
			rows[name] = &statusRow{Name: name, Lease: leaseFree, MaxWritesPerDay: token.DefaultMaxWritesPerDay}
		}
	}

	var out []*statusRow
	missing := 0
	if len(names) > 0 {
		for _, n := range names {
			row, ok := rows[n]
			if !ok {
				a.errorf("status", "%s: no token record and no private secret %s", n, a.privateName(n))
				missing++
				continue
			}
			out = append(out, row)
		}
	} else {
		for _, row := range rows {
			out = append(out, row)
		}
		sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	}
	a.addDocumentFacts(ctx, store, led, out, now)

	if *asJSON {
		list := make([]statusRow, 0, len(out))
		for _, r := range out {
			list = append(list, *r)
		}
		enc := json.NewEncoder(a.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(list); err != nil {
			a.errorf("status", "%v", err)
			return exitFail
		}
	} else {
		writeStatusTable(a.stdout, out, now)
	}
	code = exitOK
	if missing > 0 {
		code = exitNotFound
	}
	for _, r := range out {
		switch {
		case r.Status == ledger.StatusNeedsReauth:
			code = worse(code, exitNeedsReauth)
		case r.Status == ledger.StatusInvalidConfig || r.NotAdoptedReason != "":
			code = worse(code, exitInvalid)
		}
	}
	return code
}

// addDocumentFacts reads each token's private document (the committed version when there
// is a record) for its write budget and quota, and says why an unadopted secret will not
// be adopted. Secret values are parsed in memory and dropped.
func (a *app) addDocumentFacts(ctx context.Context, store *secretstore.Store, led *ledger.Ledger, rows []*statusRow, now time.Time) {
	buckets := map[string]ledger.Bucket{}
	warned := false
	for _, r := range rows {
		if !invocation.ValidName(r.Name) {
			r.NotAdoptedReason = "not a valid token name (letters, digits and ._@+=/-): rename the secret"
			continue
		}
		secret := a.privateName(r.Name)
		var v secretstore.Version
		var err error
		if r.VersionID != "" {
			v, err = store.GetVersion(ctx, secret, r.VersionID)
		} else {
			v, err = store.GetCurrent(ctx, secret)
		}
		if err != nil {
			if !errors.Is(err, secretstore.ErrNotFound) && !warned {
				warned = true
				fmt.Fprintf(a.stderr, "tokenctl status: warning: cannot read private documents (quota and write budget not shown): %s\n", a.explainAWS(err, a.secretResource(secret)))
			}
			continue
		}
		p, err := token.ParsePrivate([]byte(v.Value.Reveal()))
		if err == nil {
			err = p.Validate()
		}
		if err != nil {
			if !r.Adopted {
				r.NotAdoptedReason = "invalid document: " + err.Error() + " (fix it with tokenctl seed)"
			}
			continue
		}
		r.MaxWritesPerDay = p.MaxWrites()
		r.setBudget()
		q, ok := p.Quota()
		if !ok || !r.Adopted {
			continue
		}
		day := ledger.Day(now, q.Location)
		k := q.Key + "#" + day
		b, seen := buckets[k]
		if !seen {
			if b, err = led.Quota(ctx, q.Key, day); err != nil {
				fmt.Fprintf(a.stderr, "tokenctl status: warning: quota %s: %s\n", q.Key, a.explainAWS(err, a.tableResource()))
				continue
			}
			buckets[k] = b
		}
		limit := b.Limit
		if limit == 0 {
			limit = q.Limit
		}
		r.Quota = &quotaToday{Key: q.Key, Day: day, Used: b.Used, Limit: limit}
	}
}

func writeStatusTable(w io.Writer, rows []*statusRow, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSTATUS\tGEN\tEXPIRES_AT\tNEXT_DUE\tREFRESH_TOKEN_EXPIRES\tWRITES_24H\tQUOTA_TODAY\tLEASE\tFAILURES\tLAST_ERROR\tREASON")
	for _, r := range rows {
		status, reason := r.Status, r.StatusReason
		switch {
		case !r.Adopted && r.NotAdoptedReason != "":
			status, reason = "(will not be adopted)", r.NotAdoptedReason
		case !r.Adopted:
			status = "(not adopted yet)"
		}
		lease := r.Lease
		switch r.Lease {
		case leaseHeld:
			lease = "held until " + formatTime(*r.LeaseUntil)
		case leaseExpired:
			lease = "expired"
			if r.LeaseUntil != nil {
				lease += " " + formatTime(*r.LeaseUntil)
			}
		}
		if r.Inflight != nil {
			lease += ", inflight"
			if note := r.Inflight.escrowNote(); note != "" {
				lease += ", " + note
			}
		}
		writes, quota := "-", "-"
		if r.Adopted {
			writes = fmt.Sprintf("%d/%d (%.0f%%)", r.WritesLast24h, r.MaxWritesPerDay, r.WriteBudgetUsedPct)
		}
		if r.Quota != nil {
			quota = fmt.Sprintf("%d/%d %s", r.Quota.Used, r.Quota.Limit, r.Quota.Key)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n",
			r.Name, dash(status), gen(r, r.Generation),
			formatTimePtr(r.ExpiresAt), relTime(r.NextDueAt, now), formatTimePtr(r.RefreshExpiresAt), writes, quota, lease,
			r.ConsecutiveFailures, dash(oneLine(r.LastError, 60)), dash(oneLine(reason, 80)))
	}
	_ = tw.Flush()
}

// relTime shows a time with how far it is from now, e.g. "2026-11-22T06:00:00Z (in 5h0m)".
func relTime(t *time.Time, now time.Time) string {
	if t == nil {
		return "-"
	}
	d := t.Sub(now).Round(time.Minute)
	switch {
	case d > 0:
		return fmt.Sprintf("%s (in %s)", formatTime(*t), shortDuration(d))
	case d < 0:
		return fmt.Sprintf("%s (%s ago)", formatTime(*t), shortDuration(-d))
	}
	return formatTime(*t) + " (now)"
}

func shortDuration(d time.Duration) string {
	s := d.String() // d is whole minutes: "5h0m0s", "30m0s"
	s = strings.TrimSuffix(s, "0s")
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func gen(r *statusRow, g int64) string {
	if !r.Adopted {
		return "-"
	}
	return strconv.FormatInt(g, 10)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func formatTimePtr(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return formatTime(*t)
}
