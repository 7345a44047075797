package refresher

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/seed-502fa48b/token-refresher/pkg/notify"
	"github.com/seed-502fa48b/token-refresher/pkg/token"
)

// MetricsNamespace is the CloudWatch namespace of the Embedded Metric Format lines
// (docs/design.md §5).
const MetricsNamespace = "TokenRefresher"

// BacklogMetric is the run-level count of tokens deferred to the next run (due, not started
// before the deadline): the backlog alarm watches it; deferred never fires Errors.
const BacklogMetric = "Backlog"

// Expiry warnings that raise a notification.
const (
	credentialsWarning = 14 * 24 * time.Hour
)

type metricWriter struct {
	mu sync.Mutex
	w  io.Writer
}

type emfMetric struct {
	Name string `json:"Name"`
	Unit string `json:"Unit"`
}

type emfDirective struct {
	Namespace  string      `json:"Namespace"`
	Dimensions [][]string  `json:"Dimensions"`
	Metrics    []emfMetric `json:"Metrics"`
}

// emit writes one EMF document: a directive per dimension set, values as top-level fields.
// Only names, outcomes and numbers go in: never a token.
func (m *metricWriter) emit(ts time.Time, fields map[string]any, directives []emfDirective) {
	doc := map[string]any{}
	for k, v := range fields {
		doc[k] = v
	}
	doc["_aws"] = map[string]any{"Timestamp": ts.UnixMilli(), "CloudWatchMetrics": directives}
	b, err := json.Marshal(doc)
	if err != nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	_, _ = m.w.Write(append(b, '\n'))
}

func directive(dims [][]string, ms ...emfMetric) emfDirective {
	return emfDirective{Namespace: MetricsNamespace, Dimensions: dims, Metrics: ms}
}

// alarmMetric is the dimensionless count an outcome adds to (one alarm covers every token).
var alarmMetric = map[string]string{
	OutcomeNeedsReauth: "NeedsReauth", OutcomeThrottled: "Throttled", OutcomeQuotaExhausted: "QuotaExhausted",
	OutcomeFailed: "Failed", OutcomeInvalidConfig: "InvalidConfig", OutcomeDeferred: "Deferred",
}

// finishRow completes the row (outcome.go), logs it, emits its metrics and notifications.
// Everything comes from the record and the run: no read per token.
func (e *Engine) finishRow(ctx context.Context, st *runState, t *tokenRun, row *Row) {
	t.completeRow(row)
	now := e.now()
	fields := map[string]any{"Token": t.name, "Outcome": row.Outcome, "Outcomes": 1, "Trigger": st.trigger.String()}
	ds := []emfDirective{directive([][]string{{"Outcome"}}, emfMetric{"Outcomes", "Count"})}
	var alarms []emfMetric
	if name, ok := alarmMetric[row.Outcome]; ok {
		fields[name] = 1
		alarms = append(alarms, emfMetric{name, "Count"})
	}
	if t.invalidEdit && row.Outcome != OutcomeInvalidConfig {
		fields["InvalidConfig"] = 1
		alarms = append(alarms, emfMetric{"InvalidConfig", "Count"})
	}
	if len(alarms) > 0 {
		ds = append(ds, directive([][]string{{}}, alarms...))
	}
	if t.hasRec {
		var gauges []emfMetric
		r := t.rec
		if !r.ExpiresAt.IsZero() {
			fields["SecondsToExpiry"] = int64(r.ExpiresAt.Sub(now) / time.Second)
			gauges = append(gauges, emfMetric{"SecondsToExpiry", "Seconds"})
		}
		if !r.CredentialsExpireAt.IsZero() {
			fields["DaysToCredentialExpiry"] = days(r.CredentialsExpireAt.Sub(now))
			gauges = append(gauges, emfMetric{"DaysToCredentialExpiry", "None"})
		}
		if !r.RefreshExpiresAt.IsZero() {
			fields["DaysToRefreshTokenExpiry"] = days(r.RefreshExpiresAt.Sub(now))
			gauges = append(gauges, emfMetric{"DaysToRefreshTokenExpiry", "None"})
		}
		fields["WriteBudgetUsedPercent"] = 100 * float64(r.WritesSince(now.Add(-24*time.Hour))) / float64(maxWrites(&r))
		gauges = append(gauges, emfMetric{"WriteBudgetUsedPercent", "Percent"})
		// Both dimension sets: per token, and one series whose Minimum/Maximum covers all.
		ds = append(ds, directive([][]string{{"Token"}, {}}, gauges...))
	}
	e.metrics.emit(now, fields, ds)

	attrs := []any{"outcome", row.Outcome, "generation", row.Generation, "trigger", st.trigger.String()}
	if row.Error != "" {
		attrs = append(attrs, "error", row.Error)
	}
	level := slog.LevelInfo
	switch row.Outcome {
	case OutcomeFailed, OutcomeNeedsReauth, OutcomeInvalidConfig:
		level = slog.LevelError
	case OutcomeThrottled, OutcomeQuotaExhausted, OutcomeDeferred:
		level = slog.LevelWarn
	}
	t.log.Log(ctx, level, "token done", attrs...)
	e.notify(ctx, t, *row, now)
}

func days(d time.Duration) float64 { return float64(d) / float64(24*time.Hour) }

// notify publishes the events a person should see (pkg/notify); never a secret.
func (e *Engine) notify(ctx context.Context, t *tokenRun, row Row, now time.Time) {
	if e.opts.Notifier == nil {
		return
	}
	ev := func(detail, reason string) notify.Event {
		return notify.Event{DetailType: detail, Token: t.name, Outcome: row.Outcome, Reason: reason, Time: now}
	}
	var evs []notify.Event
	switch {
	case row.Outcome == OutcomeNeedsReauth && t.movedToReauth:
		evs = append(evs, ev(notify.DetailNeedsReauth, row.Error))
	case row.Outcome == OutcomeInvalidConfig || t.invalidEdit:
		evs = append(evs, ev(notify.DetailInvalidConfig, row.Error))
	case t.wasReauth && row.Outcome == OutcomeRefreshed:
		evs = append(evs, ev(notify.DetailRecovered, "re-authorised"))
	}
	if t.hasRec && row.Outcome == OutcomeRefreshed {
		if c := t.rec.CredentialsExpireAt; !c.IsZero() && c.Sub(now) < credentialsWarning {
			evs = append(evs, ev(notify.DetailCredentialsExpiring, "provider credentials expire at "+c.UTC().Format(time.RFC3339)))
		}
		if r := t.rec.RefreshExpiresAt; !r.IsZero() && r.Sub(now) < token.RefreshTokenWarning {
			evs = append(evs, ev(notify.DetailRefreshTokenExpiring, "refresh token expires at "+r.UTC().Format(time.RFC3339)))
		}
	}
	if len(evs) == 0 {
		return
	}
	if err := e.opts.Notifier.Publish(ctx, evs...); err != nil {
		t.log.WarnContext(ctx, "publishing notifications failed", "error", err.Error())
	}
}

// emitRun writes the run-level metrics: the heartbeat, the backlog (tokens deferred to the
// next run, written by every sweep and reconcile, 0 included, so its alarm has data),
// Secrets Manager throttling, and the quota of every key this run spent (one read per key,
// not per token).
func (e *Engine) emitRun(ctx context.Context, s *runState, deferred int) {
	now := e.now()
	fields := map[string]any{"Trigger": s.trigger.String()}
	var counts []emfMetric
	switch s.trigger {
	case triggerReconcile:
		fields["Reconciled"] = 1
		counts = append(counts, emfMetric{"Reconciled", "Count"})
	case triggerSweep:
		fields["Swept"] = 1
		counts = append(counts, emfMetric{"Swept", "Count"})
	}
	if s.trigger == triggerReconcile || s.trigger == triggerSweep || deferred > 0 {
		fields[BacklogMetric] = deferred
		counts = append(counts, emfMetric{BacklogMetric, "Count"})
	}
	if n := s.smThrottles.Load(); n > 0 {
		fields["SecretsManagerThrottled"] = n
		counts = append(counts, emfMetric{"SecretsManagerThrottled", "Count"})
	}
	if len(counts) > 0 {
		e.metrics.emit(now, fields, []emfDirective{directive([][]string{{}}, counts...)})
	}
	for _, q := range s.quotaKeys {
		b, err := e.opts.Ledger.Quota(ctx, q.key, q.day)
		if err != nil {
			continue
		}
		limit := q.limit
		if b.Limit > 0 {
			limit = b.Limit
		}
		e.metrics.emit(now, map[string]any{"QuotaKey": q.key, "QuotaUsed": b.Used, "QuotaUsedPercent": 100 * float64(b.Used) / float64(limit)},
			[]emfDirective{
				directive([][]string{{"QuotaKey"}}, emfMetric{"QuotaUsed", "Count"}, emfMetric{"QuotaUsedPercent", "Percent"}),
				directive([][]string{{}}, emfMetric{"QuotaUsedPercent", "Percent"}),
			})
	}
}
