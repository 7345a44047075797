package faultproxy

import (
	"slices"
	"time"
)

// DefaultWritesPerSecond is Secrets Manager's write quota per account and
// region, shared by the operations in SecretsManagerWrites.
const DefaultWritesPerSecond = 50

// SecretsManagerWrites are the operations Secrets Manager's shared write quota
// counts.
var SecretsManagerWrites = []string{
	"secretsmanager.PutSecretValue",
	"secretsmanager.UpdateSecretVersionStage",
	"secretsmanager.UpdateSecret",
}

// WriteLimit makes the proxy play Secrets Manager's write quota: a request of
// one of Ops beyond PerSecond in any trailing second is answered
// ThrottlingException (400) and never forwarded. Throttled requests do not
// count toward the limit.
type WriteLimit struct {
	PerSecond int      // default DefaultWritesPerSecond
	Ops       []string // default SecretsManagerWrites
	// Now is the clock the window is measured on; default time.Now.
	Now func() time.Time
}

// WriteSecond is what happened to the limited operations in one second.
type WriteSecond struct {
	Admitted  int // forwarded
	Throttled int // answered ThrottlingException
}

// WriteStats counts the limited operations since LimitWrites.
type WriteStats struct {
	Admitted  int
	Throttled int
	// Seconds has one entry per whole second since LimitWrites, up to the
	// last request seen.
	Seconds []WriteSecond
}

// PeakAdmitted is the most writes forwarded in one of Seconds.
func (s WriteStats) PeakAdmitted() int {
	peak := 0
	for _, sec := range s.Seconds {
		peak = max(peak, sec.Admitted)
	}
	return peak
}

// writeLimiter is the state of an active WriteLimit; the proxy's mutex
// guards it.
type writeLimiter struct {
	WriteLimit
	start    time.Time
	admitted []time.Time // within the trailing second, oldest first
	stats    WriteStats
}

// LimitWrites starts enforcing l, replacing any earlier limit and its
// counts. The returned function lifts the limit (its counts stay readable).
func (p *Proxy) LimitWrites(l WriteLimit) (remove func()) {
	if l.PerSecond <= 0 {
		l.PerSecond = DefaultWritesPerSecond
	}
	if len(l.Ops) == 0 {
		l.Ops = SecretsManagerWrites
	}
	l.Ops = slices.Clone(l.Ops)
	if l.Now == nil {
		l.Now = time.Now
	}
	wl := &writeLimiter{WriteLimit: l, start: l.Now()}
	p.mu.Lock()
	p.writeLimit = wl
	p.writeStats = &wl.stats
	p.mu.Unlock()
	return func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.writeLimit == wl {
			p.writeLimit = nil
		}
	}
}

// WriteStats returns the counts of the latest LimitWrites (zero before one).
func (p *Proxy) WriteStats() WriteStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.writeStats == nil {
		return WriteStats{}
	}
	s := *p.writeStats
	s.Seconds = slices.Clone(s.Seconds)
	return s
}

// admit reports whether a request of op may be forwarded now, and counts it.
// Called with the proxy's lock held.
func (w *writeLimiter) admit(op string) bool {
	if !slices.Contains(w.Ops, op) {
		return true
	}
	now := w.Now()
	cut := now.Add(-time.Second)
	drop := 0
	for drop < len(w.admitted) && !w.admitted[drop].After(cut) {
		drop++
	}
	w.admitted = w.admitted[drop:]
	sec := int(max(now.Sub(w.start), 0) / time.Second)
	for len(w.stats.Seconds) <= sec {
		w.stats.Seconds = append(w.stats.Seconds, WriteSecond{})
	}
	if len(w.admitted) >= w.PerSecond {
		w.stats.Throttled++
		w.stats.Seconds[sec].Throttled++
		return false
	}
	w.admitted = append(w.admitted, now)
	w.stats.Admitted++
	w.stats.Seconds[sec].Admitted++
	return true
}
