package refresher_test

import (
	"fmt"
	"os"
	"sort"
	"testing"
	"time"

	"github.com/seed-502fa48b/token-refresher/internal/providersim"
	"github.com/seed-502fa48b/token-refresher/pkg/refresher"
)

// weekProfile is one token kind of the simulated week.
type weekProfile struct {
	name  string
	start func(t *testing.T, clock *providersim.Clock) (doc map[string]any, valid func(string) bool, requests func() int)
	// ensure: a consumer asks {"ensure":[name]} every 2 minutes in working hours (09:00–17:00)
	// and uses the token if the answer's expires_at is still ahead. Its published token is
	// not kept valid between requests (that is the point), so minValid is not a goal.
	ensure bool
	// goals (issue 10 §5)
	maxCallsPerDay float64
	minValid       float64 // fraction of minutes the published token is valid (0: not a goal)
}

var weekProfiles = []weekProfile{
	{name: "sahamati (24 h)", maxCallsPerDay: 2, minValid: 1, start: func(t *testing.T, clock *providersim.Clock) (map[string]any, func(string) bool, func() int) {
		sim := newSahamati(t, "fiu-week", clock)
		return sahamatiDoc(sim.URL(), "fiu-week", simSecret(sim)), sim.Valid, sim.Requests
	}},
	{name: "vault.ist (24 h)", maxCallsPerDay: 2, minValid: 1, start: func(t *testing.T, clock *providersim.Clock) (map[string]any, func(string) bool, func() int) {
		sim := providersim.NewVault(providersim.VaultOptions{Now: clock.Now})
		t.Cleanup(sim.Close)
		registerIssuer(sim)
		return vaultDoc(sim.URL(), sim.Seed()), sim.Valid, sim.Requests
	}},
	{name: "rotating (1 h)", maxCallsPerDay: 48, minValid: 1, start: func(t *testing.T, clock *providersim.Clock) (map[string]any, func(string) bool, func() int) {
		sim, cs := newRotatingTTL(t, clock, time.Hour)
		return rotatingDoc(sim.URL(), "app", cs, sim.Seed("offline_access"), ""), sim.Valid, sim.Requests
	}},
	{name: "rotating (15 min, on demand)", ensure: true, maxCallsPerDay: 90, start: func(t *testing.T, clock *providersim.Clock) (map[string]any, func(string) bool, func() int) {
		sim, cs := newRotating(t, clock)
		return rotatingDoc(sim.URL(), "app", cs, sim.Seed("offline_access"), ""), sim.Valid, sim.Requests
	}},
}

// weekResult is one profile's figures.
type weekResult struct {
	callsPerDay     float64
	maxVersions24h  int
	validMinutes    float64
	ensureValid     float64
	ensureRequests  int
	refreshesByKind map[string]int
}

// TestSimulatedWeek runs each seed profile and a 1 h token for 7 simulated days with the
// template's defaults — a reconcile every 12 h, a sweep every 5 min — against moto and the
// provider simulators, and checks the goals of issue 10 §5: Sahamati and vault.ist 2
// provider calls a day and valid every minute; the 1 h token valid every minute with at
// most 48 rotations a day; every token inside its write budget; the 15-minute token valid
// for every ensure request.
func TestSimulatedWeek(t *testing.T) {
	// The full week under `make soak` (TR_SOAK=1, the README's figures); one day otherwise,
	// which already crosses every schedule boundary and fills a 24 h write window.
	days := 1
	if os.Getenv("TR_SOAK") != "" {
		days = 7
	}
	for _, p := range weekProfiles {
		t.Run(p.name, func(t *testing.T) {
			r := simulateWeek(t, p, days)
			t.Logf("figure: %d days: %-30s | %5.2f provider calls/day | max %3d private versions in 24 h | valid %6.2f%% of minutes | ensure: %d requests, %6.2f%% answered valid",
				days, p.name, r.callsPerDay, r.maxVersions24h, 100*r.validMinutes, r.ensureRequests, 100*r.ensureValid)
			if r.callsPerDay > p.maxCallsPerDay+0.01 {
				t.Errorf("%.2f provider calls a day, want at most %v", r.callsPerDay, p.maxCallsPerDay)
			}
			if r.maxVersions24h > 90 {
				t.Errorf("%d private versions in 24 h, want at most the write budget of 90", r.maxVersions24h)
			}
			if p.minValid > 0 && r.validMinutes < p.minValid {
				t.Errorf("published token valid %.4f of minutes, want %v", r.validMinutes, p.minValid)
			}
			if p.ensure && r.ensureValid < 1 {
				t.Errorf("ensure answered valid %.4f of requests, want all", r.ensureValid)
			}
		})
	}
}

func simulateWeek(t *testing.T, p weekProfile, days int) weekResult {
	clock := providersim.NewClock(time.Date(2026, 11, 23, 6, 0, 0, 0, ist))
	doc, valid, requests := p.start(t, clock)
	e := newEnv(t, clock.Now, nil) // defaults: 12 h reconcile, 5 min sweep, budget 90/day
	const name = "week"
	e.seed(name, doc)

	res := weekResult{refreshesByKind: map[string]int{}}
	var refreshedAt []time.Time
	var published struct {
		token   string
		expires time.Time
	}
	readAccess := func() {
		if !e.accessExists(name) {
			return
		}
		a := e.accessRaw(name)
		published.token, _ = a["access_token"].(string)
		published.expires, _ = time.Parse(time.RFC3339, fmt.Sprint(a["expires_at"]))
	}
	note := func(kind string, rep *refresher.Report) {
		if rep == nil {
			return
		}
		for _, r := range rep.Tokens {
			if r.Outcome == refresher.OutcomeRefreshed {
				res.refreshesByKind[kind]++
				refreshedAt = append(refreshedAt, clock.Now())
				readAccess()
			}
		}
	}
	start := clock.Now()
	minutes, validMinutes, ensureValid := 0, 0, 0
	for m := 0; m < days*24*60; m++ {
		now := start.Add(time.Duration(m) * time.Minute)
		clock.Set(now)
		if m%(12*60) == 0 {
			note("reconcile", mustRun(t, e, refresher.Request{}))
		}
		if m%5 == 0 {
			note("sweep", mustRun(t, e, refresher.Request{Sweep: true}))
		}
		if p.ensure {
			if h := now.In(ist).Hour(); h >= 9 && h < 17 && m%2 == 0 {
				rep := mustRun(t, e, refresher.Request{Ensure: []string{name}})
				note("ensure", rep)
				res.ensureRequests++
				exp, err := time.Parse(time.RFC3339, row(t, rep, name).ExpiresAt)
				if err == nil && now.Before(exp) && valid(published.token) {
					ensureValid++
				}
			}
		}
		minutes++
		if published.token != "" && now.Before(published.expires) && valid(published.token) {
			validMinutes++
		}
	}
	res.callsPerDay = float64(requests()) / float64(days)
	if minutes > 0 {
		res.validMinutes = float64(validMinutes) / float64(minutes)
	}
	if res.ensureRequests > 0 {
		res.ensureValid = float64(ensureValid) / float64(res.ensureRequests)
	}
	sort.Slice(refreshedAt, func(i, j int) bool { return refreshedAt[i].Before(refreshedAt[j]) })
	for i := range refreshedAt {
		n := 0
		for j := i; j < len(refreshedAt) && refreshedAt[j].Sub(refreshedAt[i]) < 24*time.Hour; j++ {
			n++
		}
		res.maxVersions24h = max(res.maxVersions24h, n)
	}
	return res
}
