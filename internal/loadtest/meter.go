package loadtest

import (
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"
)

// awsMeter times the AWS requests the engine sends: how long at least one was
// outstanding (moto serves one request at a time, so near 100 % of an invocation
// means moto, not the write limit, set the pace) and the mean answer time per
// operation (queueing in moto included).
type awsMeter struct {
	next http.RoundTripper

	mu       sync.Mutex
	inflight int
	since    time.Time
	busy     time.Duration
	ops      map[string]*opTime
}

type opTime struct {
	n     int
	total time.Duration
}

func newAWSMeter(next http.RoundTripper) *awsMeter {
	return &awsMeter{next: next, ops: map[string]*opTime{}}
}

func (m *awsMeter) RoundTrip(r *http.Request) (*http.Response, error) {
	op := r.Header.Get("X-Amz-Target")
	start := time.Now()
	m.mu.Lock()
	if m.inflight == 0 {
		m.since = start
	}
	m.inflight++
	m.mu.Unlock()
	resp, err := m.next.RoundTrip(r)
	end := time.Now()
	m.mu.Lock()
	m.inflight--
	if m.inflight == 0 {
		m.busy += end.Sub(m.since)
	}
	t := m.ops[op]
	if t == nil {
		t = &opTime{}
		m.ops[op] = t
	}
	t.n++
	t.total += end.Sub(start)
	m.mu.Unlock()
	return resp, err
}

// meterSnapshot is the meter at one moment.
type meterSnapshot struct {
	busy time.Duration
	ops  map[string]opTime
}

func (m *awsMeter) snapshot() meterSnapshot {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := meterSnapshot{busy: m.busy, ops: make(map[string]opTime, len(m.ops))}
	if m.inflight > 0 {
		s.busy += time.Since(m.since)
	}
	for k, v := range m.ops {
		s.ops[k] = *v
	}
	return s
}

// since describes what happened between s0 and s: busy time and the three
// operations that took the most time, with their mean answer time.
func (s meterSnapshot) since(s0 meterSnapshot) (time.Duration, string) {
	type row struct {
		op    string
		n     int
		total time.Duration
	}
	var rows []row
	for op, t := range s.ops {
		d := row{op: op, n: t.n - s0.ops[op].n, total: t.total - s0.ops[op].total}
		if d.n > 0 {
			rows = append(rows, d)
		}
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].total > rows[j].total })
	parts := make([]string, 0, 3)
	for _, r := range rows[:min(3, len(rows))] {
		_, name, _ := strings.Cut(r.op, ".")
		parts = append(parts, fmt.Sprintf("%s %d× %s", name, r.n, (r.total/time.Duration(r.n)).Round(100*time.Microsecond)))
	}
	return s.busy - s0.busy, strings.Join(parts, ", ")
}
