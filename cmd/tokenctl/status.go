package main

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/seed-502fa48b/token-refresher/pkg/ledger"
)

// Lease states shown by status.
const (
	leaseFree    = "free"
	leaseHeld    = "held"
	leaseExpired = "expired" // a holder crashed or is late; the next run recovers it
)

// statusRow is one token in `tokenctl status`. It holds no secret: the ledger has none.
type statusRow struct {
	Name                string        `json:"name"`
	Adopted             bool          `json:"adopted"` // false: a private secret the refresher has not seen yet
	Status              string        `json:"status,omitempty"`
	StatusReason        string        `json:"status_reason,omitempty"`
	Generation          int64         `json:"generation"`
	PublishedGeneration int64         `json:"published_generation"`
	VersionID           string        `json:"version_id,omitempty"`
	ExpiresAt           *time.Time    `json:"expires_at,omitempty"`
	NextDueAt           *time.Time    `json:"next_due_at,omitempty"`
	Lease               string        `json:"lease"`
	LeaseHolder         string        `json:"lease_holder,omitempty"`
	LeaseUntil          *time.Time    `json:"lease_until,omitempty"`
	Inflight            *inflightView `json:"inflight,omitempty"`
	ConsecutiveFailures int           `json:"consecutive_failures"`
	LastError           string        `json:"last_error,omitempty"`
}

type inflightView struct {
	From      string    `json:"from_version"`
	To        string    `json:"to_version"`
	StartedAt time.Time `json:"started_at"`
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
	if r.Inflight != nil {
		row.Inflight = &inflightView{From: r.Inflight.From, To: r.Inflight.To, StartedAt: r.Inflight.StartedAt.UTC()}
	}
	return row
}

// status lists token records, plus private secrets the refresher has not adopted yet.
func (a *app) status(ctx context.Context, args []string) int {
	fs := a.flagSet("status")
	asJSON := fs.Bool("json", false, "print JSON")
	names, code, ok := parse(fs, args, "status [NAME...] [--json]")
	if !ok {
		return code
	}
	led, err := a.ledger(ctx)
	if err != nil {
		a.errorf("status", "%v", err)
		return exitUsage
	}
	recs, err := led.List(ctx)
	if err != nil {
		a.errorf("status", "%v", err)
		return exitFail
	}
	now := a.now()
	rows := map[string]statusRow{}
	for _, r := range recs {
		rows[r.Name] = newStatusRow(r, now)
	}
	// Seeded but not adopted yet: reading the secret list may not be allowed; the
	// records alone are still worth showing.
	if store, err := a.store(ctx); err == nil {
		prefix := a.privateName("")
		secrets, err := store.List(ctx, prefix)
		if err != nil {
			fmt.Fprintf(a.stderr, "tokenctl status: warning: cannot list %s*: %v\n", prefix, err)
		}
		for _, s := range secrets {
			name := strings.TrimPrefix(s, prefix)
			if _, ok := rows[name]; !ok {
				rows[name] = statusRow{Name: name, Lease: leaseFree}
			}
		}
	}

	var out []statusRow
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

	if *asJSON {
		if out == nil {
			out = []statusRow{}
		}
		enc := json.NewEncoder(a.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			a.errorf("status", "%v", err)
			return exitFail
		}
	} else {
		writeStatusTable(a.stdout, out)
	}
	if missing > 0 {
		return exitFail
	}
	return exitOK
}

func writeStatusTable(w interface{ Write([]byte) (int, error) }, rows []statusRow) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSTATUS\tGEN\tPUBLISHED\tEXPIRES_AT\tNEXT_DUE_AT\tLEASE\tINFLIGHT\tFAILURES\tLAST_ERROR\tREASON")
	for _, r := range rows {
		status := r.Status
		if !r.Adopted {
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
		inflight := "no"
		if r.Inflight != nil {
			inflight = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n",
			r.Name, dash(status), gen(r, r.Generation), gen(r, r.PublishedGeneration),
			formatTimePtr(r.ExpiresAt), formatTimePtr(r.NextDueAt), lease, inflight,
			r.ConsecutiveFailures, dash(oneLine(r.LastError, 60)), dash(oneLine(r.StatusReason, 60)))
	}
	_ = tw.Flush()
}

func gen(r statusRow, g int64) string {
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
