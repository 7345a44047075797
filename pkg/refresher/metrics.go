package refresher

import (
	"encoding/json"
	"io"
	"sync"
	"time"

	"github.com/seed-502fa48b/token-refresher/pkg/ledger"
)

// MetricsNamespace is the CloudWatch namespace of the Embedded Metric Format lines; the
// template's alarms watch NeedsReauth, Throttled and QuotaExhausted in it.
const MetricsNamespace = "TokenRefresher"

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

func (t *tokenRun) emitMetrics(row Row) {
	now := t.now()
	fields := map[string]any{"Token": t.name, "Outcome": row.Outcome, "Outcomes": 1}
	ds := []emfDirective{{
		Namespace: MetricsNamespace, Dimensions: [][]string{{"Outcome"}},
		Metrics: []emfMetric{{Name: "Outcomes", Unit: "Count"}},
	}}
	// Alarm metrics without dimensions: one alarm covers every token.
	alarm := map[string]string{OutcomeNeedsReauth: "NeedsReauth", OutcomeThrottled: "Throttled", OutcomeQuotaExhausted: "QuotaExhausted", OutcomeFailed: "Failed"}
	if name, ok := alarm[row.Outcome]; ok {
		fields[name] = 1
		ds = append(ds, emfDirective{Namespace: MetricsNamespace, Dimensions: [][]string{{}}, Metrics: []emfMetric{{Name: name, Unit: "Count"}}})
	}
	var perToken []emfMetric
	if t.doc != nil && !t.doc.ExpiresAt.IsZero() {
		fields["SecondsToExpiry"] = int64(t.doc.ExpiresAt.Sub(now) / time.Second)
		perToken = append(perToken, emfMetric{Name: "SecondsToExpiry", Unit: "Seconds"})
	}
	if t.doc != nil && !t.doc.Provider.CredentialsExpireAt.IsZero() {
		fields["DaysToCredentialExpiry"] = float64(t.doc.Provider.CredentialsExpireAt.Sub(now)) / float64(24*time.Hour)
		perToken = append(perToken, emfMetric{Name: "DaysToCredentialExpiry", Unit: "None"})
	}
	if len(perToken) > 0 {
		ds = append(ds, emfDirective{Namespace: MetricsNamespace, Dimensions: [][]string{{"Token"}}, Metrics: perToken})
	}
	if t.hasQuota && (t.reserved > 0 || row.Outcome == OutcomeQuotaExhausted || row.Outcome == OutcomeThrottled) {
		if b, err := t.e.opts.Ledger.Quota(t.ctx, t.quota.Key, ledger.Day(now, t.quota.Location)); err == nil {
			fields["QuotaKey"] = t.quota.Key
			fields["QuotaUsed"] = b.Used
			ds = append(ds, emfDirective{Namespace: MetricsNamespace, Dimensions: [][]string{{"QuotaKey"}}, Metrics: []emfMetric{{Name: "QuotaUsed", Unit: "Count"}}})
		}
	}
	t.e.metrics.emit(now, fields, ds)
}
