// Package loadtest drives the engine (pkg/refresher) at scale from outside: N tokens of a
// rotating provider that revokes a token family on reuse, all due at once, on moto behind
// internal/faultproxy playing Secrets Manager's write quota. Each invocation is one sweep
// with a real-time deadline, the simulated clock moving one sweep interval between them.
// It reports per invocation refreshes/s, throttled answers, tokens left, lost chains
// (committed refresh token != the provider's live one) and refresh tokens presented twice.
// Loopback only; every loop is bounded; nothing it prints holds a token.
package loadtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"golang.org/x/sync/errgroup"

	"github.com/seed-502fa48b/token-refresher/internal/awsemu"
	"github.com/seed-502fa48b/token-refresher/internal/faultproxy"
	"github.com/seed-502fa48b/token-refresher/internal/providersim"
	"github.com/seed-502fa48b/token-refresher/pkg/ledger"
	"github.com/seed-502fa48b/token-refresher/pkg/refresher"
	"github.com/seed-502fa48b/token-refresher/pkg/secretstore"
	"github.com/seed-502fa48b/token-refresher/pkg/token"
)

// Config is one load test. Zero values take the defaults noted.
type Config struct {
	MotoURL        string        // a running moto (internal/awsemu); required
	Tokens         int           // default 1000
	WriteLimit     int           // writes/s the proxy allows (Secrets Manager's quota); default 50
	Pace           float64       // client-side writes/s (secretstore.Options.WritesPerSecond); 0: unpaced (the function paces at WRITE_RATE, default 40)
	Concurrency    int           // the engine's CONCURRENCY; default 32
	Deadline       time.Duration // real time one invocation may run; default 60s
	SweepInterval  time.Duration // simulated time between two invocations; default 5m
	MaxInvocations int           // bound on the schedule; default 30
	// ProviderLatency is how long the provider takes to answer; default 0.
	ProviderLatency time.Duration
	// Progress, if set, gets one line per phase and per invocation as they finish.
	Progress io.Writer
}

func (c *Config) defaults() error {
	if c.MotoURL == "" {
		return errors.New("loadtest: MotoURL is required")
	}
	if c.Tokens <= 0 {
		c.Tokens = 1000
	}
	if c.WriteLimit <= 0 {
		c.WriteLimit = faultproxy.DefaultWritesPerSecond
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 32
	}
	if c.Deadline <= 0 {
		c.Deadline = 60 * time.Second
	}
	if c.SweepInterval <= 0 {
		c.SweepInterval = 5 * time.Minute
	}
	if c.MaxInvocations <= 0 {
		c.MaxInvocations = 30
	}
	if c.Progress == nil {
		c.Progress = io.Discard
	}
	return nil
}

// Invocation is what one sweep invocation did.
type Invocation struct {
	N             int
	Duration      time.Duration // real time Run took
	Refreshed     int           // rows with outcome refreshed
	PerSecond     float64       // Refreshed / Duration
	Writes        int           // Secrets Manager writes the proxy forwarded
	PeakWrites    int           // most writes forwarded in one second
	Throttled     int           // writes the proxy answered ThrottlingException
	ProviderCalls int
	AWSCalls      int // every AWS request (Secrets Manager and DynamoDB) the proxy saw: moto's load
	// AWSBusy is how long at least one AWS request was outstanding: close to Duration,
	// moto (one request at a time) set the pace. AWSSlowest names the operations that
	// took the most of it, with their mean answer time.
	AWSBusy        time.Duration
	AWSSlowest     string
	Summary        map[string]int // rows by outcome
	LambdaError    bool           // Run returned an error (the function would fail the invocation)
	ThrottleFailed int            // failed rows whose cause is a throttled AWS call
	FirstErrors    []string       // up to three distinct failed-row causes
	Left           int            // tokens not refreshed since they fell due
	InFlight       int            // the live refresh token is in a written, not yet committed version (recovery rolls it forward)
	Lost           int            // the live refresh token is in neither the committed nor the in-flight version
	LostDetail     []string       // the first three lost tokens with their record's state
	Twice          int            // refresh-token presentations seen before (cumulative)
}

// Result is a whole schedule.
type Result struct {
	Config      Config
	Setup       time.Duration // creating and adopting the tokens (no write limit)
	Invocations []Invocation
	Left        int
	InFlight    int
	Lost        int
	Twice       int
	NeedsReauth int
}

// SweepMinutes is the simulated time the schedule took: one sweep interval per invocation.
func (r Result) SweepMinutes() float64 {
	return float64(len(r.Invocations)) * r.Config.SweepInterval.Minutes()
}

// Refreshed is every refresh of the schedule.
func (r Result) Refreshed() int {
	n := 0
	for _, inv := range r.Invocations {
		n += inv.Refreshed
	}
	return n
}

// Run sets up the tokens, makes them all due and runs sweeps until none is left or
// MaxInvocations is reached.
func Run(ctx context.Context, cfg Config) (Result, error) {
	if err := cfg.defaults(); err != nil {
		return Result{}, err
	}
	res := Result{Config: cfg}
	start := time.Now()
	b, err := newBed(ctx, cfg)
	if err != nil {
		return res, err
	}
	defer b.close()
	if err := b.adopt(ctx); err != nil {
		return res, err
	}
	res.Setup = time.Since(start)
	fmt.Fprintf(cfg.Progress, "setup: %d tokens created and adopted in %s\n", cfg.Tokens, res.Setup.Round(time.Millisecond))

	// Every token is refreshed at half its 24 h lifetime, its due time spread up to a tenth
	// of the 12 h margin later (docs/design.md §3): past that, all are due at once.
	b.clock.Advance(12*time.Hour + 12*time.Hour/token.SpreadFraction + time.Minute)
	gen, err := b.generations(ctx)
	if err != nil {
		return res, err
	}
	b.proxy.LimitWrites(faultproxy.WriteLimit{PerSecond: cfg.WriteLimit})
	for i := 1; i <= cfg.MaxInvocations; i++ {
		if i > 1 {
			b.clock.Advance(cfg.SweepInterval)
		}
		inv, err := b.invoke(ctx, i, gen)
		if err != nil {
			return res, err
		}
		res.Invocations = append(res.Invocations, inv)
		fmt.Fprintln(cfg.Progress, inv.line())
		if inv.Left == 0 && inv.InFlight == 0 {
			break
		}
	}
	last := res.Invocations[len(res.Invocations)-1]
	res.Left, res.InFlight, res.Lost, res.Twice = last.Left, last.InFlight, last.Lost, last.Twice
	res.NeedsReauth, err = b.needsReauth(ctx)
	return res, err
}

// bed is the installation under test.
type bed struct {
	cfg    Config
	proxy  *faultproxy.Proxy
	sim    *providersim.Rotating
	front  *presentations
	meter  *awsMeter
	clock  *providersim.Clock
	direct *secretstore.Store // straight to moto: the checks are not writes the proxy counts
	ledger *ledger.Ledger
	engine *refresher.Engine
	prefix string
	seeds  map[string]string // token name → the family's first refresh token
}

func newBed(ctx context.Context, cfg Config) (*bed, error) {
	proxy, err := faultproxy.New(cfg.MotoURL)
	if err != nil {
		return nil, err
	}
	b := &bed{cfg: cfg, proxy: proxy, clock: providersim.NewClock(time.Now()), prefix: "lt-" + randID() + "/", seeds: map[string]string{}}
	viaProxy, err := awsemu.AWSConfig(ctx, proxy.URL())
	if err != nil {
		b.close()
		return nil, err
	}
	// As many idle connections as workers: the default two would make the client, not
	// moto or the write limit, a bottleneck.
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = max(cfg.Concurrency, 2) * 2
	b.meter = newAWSMeter(tr)
	viaProxy.HTTPClient = &http.Client{Transport: b.meter}
	direct, err := awsemu.AWSConfig(ctx, cfg.MotoURL)
	if err != nil {
		b.close()
		return nil, err
	}
	clientSecret := "cs-" + randID()
	b.sim = providersim.NewRotating(providersim.RotatingOptions{
		ClientID: "loadtest", ClientSecret: clientSecret, AccessTTL: 24 * time.Hour, Now: b.clock.Now,
	})
	b.sim.SetLatency(cfg.ProviderLatency)
	b.front = newPresentations(b.sim.URL())

	table := "lt-" + randID()
	ddb := dynamodb.NewFromConfig(viaProxy)
	if err := ledger.CreateTable(ctx, dynamodb.NewFromConfig(direct), table); err != nil {
		b.close()
		return nil, fmt.Errorf("loadtest: create table: %w", err)
	}
	b.ledger = ledger.New(ddb, ledger.Options{Table: table, Now: b.clock.Now})
	b.direct = secretstore.New(secretsmanager.NewFromConfig(direct))
	store := secretstore.NewWithOptions(secretsmanager.NewFromConfig(viaProxy), secretstore.Options{WritesPerSecond: cfg.Pace})
	b.engine, err = refresher.New(refresher.Options{
		Secrets: store, Ledger: b.ledger, Prefix: b.prefix, Concurrency: cfg.Concurrency,
		SweepInterval: cfg.SweepInterval, Now: b.clock.Now,
		Logger: slog.New(slog.NewJSONHandler(io.Discard, nil)), Metrics: io.Discard,
	})
	if err != nil {
		b.close()
		return nil, err
	}

	// The tokens, written straight to moto: setup is not what is measured.
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	var mu sync.Mutex
	for i := range cfg.Tokens {
		name := fmt.Sprintf("t%05d", i)
		seed := b.sim.Seed("offline_access")
		mu.Lock()
		b.seeds[name] = seed
		mu.Unlock()
		g.Go(func() error {
			raw, err := json.Marshal(map[string]any{
				"provider": map[string]any{
					"grant": "refresh_token", "body": "form", "token_url": b.front.url(),
					"client_id": "loadtest", "client_secret": clientSecret, "client_auth": "basic",
				},
				"refresh_token": seed,
			})
			if err != nil {
				return err
			}
			_, err = b.direct.Create(gctx, b.prefix+"private/"+name, token.Secret(raw))
			return err
		})
	}
	if err := g.Wait(); err != nil {
		b.close()
		return nil, fmt.Errorf("loadtest: create tokens: %w", err)
	}
	return b, nil
}

func (b *bed) close() {
	if b.front != nil {
		b.front.close()
	}
	if b.sim != nil {
		b.sim.Close()
	}
	b.proxy.Close()
}

// adopt runs reconciles (no write limit yet) until every token has a record and a first
// refresh; bounded.
func (b *bed) adopt(ctx context.Context) error {
	var last map[string]int
	for range 5 {
		rep, err := b.engine.Run(ctx, refresher.Request{})
		if rep == nil {
			return fmt.Errorf("loadtest: adopt: %w", err)
		}
		last = rep.Summary
		recs, lerr := b.ledger.List(ctx)
		if lerr != nil {
			return fmt.Errorf("loadtest: adopt: %w", lerr)
		}
		active := 0
		for _, r := range recs {
			if r.Generation > 0 && r.Status == ledger.StatusActive && r.Inflight == nil {
				active++
			}
		}
		if active == b.cfg.Tokens {
			return nil
		}
	}
	return fmt.Errorf("loadtest: adopt: not every token adopted after 5 reconciles (last %v)", last)
}

// generations is each token's generation once all are due: a token is left while its
// generation has not moved past it.
func (b *bed) generations(ctx context.Context) (map[string]int64, error) {
	recs, err := b.ledger.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("loadtest: list records: %w", err)
	}
	gen := make(map[string]int64, len(recs))
	for _, r := range recs {
		gen[r.Name] = r.Generation
	}
	return gen, nil
}

func (b *bed) invoke(ctx context.Context, n int, dueGen map[string]int64) (Invocation, error) {
	inv := Invocation{N: n}
	ws0, calls0, aws0, m0 := b.proxy.WriteStats(), b.front.requests(), b.proxy.Count(""), b.meter.snapshot()
	ictx, cancel := context.WithTimeout(ctx, b.cfg.Deadline)
	start := time.Now()
	rep, err := b.engine.Run(ictx, refresher.Request{Sweep: true})
	inv.Duration = time.Since(start)
	cancel()
	if ctx.Err() != nil {
		return inv, ctx.Err()
	}
	inv.LambdaError = err != nil
	if rep == nil {
		// The run failed before it started any token (listing): count it and go on.
		inv.Summary = map[string]int{}
		inv.FirstErrors = []string{firstLine(err)}
	} else {
		inv.Summary = rep.Summary
		inv.Refreshed = rep.Summary[refresher.OutcomeRefreshed]
		seen := map[string]bool{}
		for _, row := range rep.Failed() {
			if strings.Contains(strings.ToLower(row.Error), "throttl") {
				inv.ThrottleFailed++
			}
			cause := firstLine(errors.New(row.Error))
			// One example per kind of cause: names and figures differ between rows.
			kind := strings.Map(func(r rune) rune {
				if r >= '0' && r <= '9' {
					return -1
				}
				return r
			}, cause)
			if i := strings.Index(kind, b.prefix); i >= 0 {
				kind = kind[:i]
			}
			if !seen[kind] && len(inv.FirstErrors) < 3 {
				seen[kind] = true
				inv.FirstErrors = append(inv.FirstErrors, cause)
			}
		}
	}
	if s := inv.Duration.Seconds(); s > 0 {
		inv.PerSecond = float64(inv.Refreshed) / s
	}
	ws := b.proxy.WriteStats()
	inv.Writes = ws.Admitted - ws0.Admitted
	inv.Throttled = ws.Throttled - ws0.Throttled
	inv.PeakWrites = peakSince(ws, ws0)
	inv.ProviderCalls = b.front.requests() - calls0
	inv.AWSCalls = b.proxy.Count("") - aws0
	inv.AWSBusy, inv.AWSSlowest = b.meter.snapshot().since(m0)
	inv.Twice = b.front.twice()

	inv.Left, inv.InFlight, inv.Lost, inv.LostDetail, err = b.check(ctx, dueGen)
	if err != nil {
		return inv, err
	}
	return inv, nil
}

// peakSince is the most writes forwarded in one second among the seconds that ws has and
// ws0 had not finished.
func peakSince(ws, ws0 faultproxy.WriteStats) int {
	from := max(len(ws0.Seconds)-1, 0)
	peak := 0
	for i := from; i < len(ws.Seconds); i++ {
		peak = max(peak, ws.Seconds[i].Admitted)
	}
	return peak
}

// check counts the tokens still due (generation not past dueGen) and the chains not held
// by the committed private version: in flight when the provider's live refresh token is
// in the version the record's in-flight entry names (the next run's recovery rolls it
// forward), lost when it is in neither (the family was revoked, or the provider's new
// token was thrown away).
func (b *bed) check(ctx context.Context, dueGen map[string]int64) (left, inFlight, lost int, lostDetail []string, err error) {
	recs, err := b.ledger.List(ctx)
	if err != nil {
		return 0, 0, 0, nil, fmt.Errorf("loadtest: list records: %w", err)
	}
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for _, r := range recs {
		if r.Generation <= dueGen[r.Name] {
			left++
		}
		g.Go(func() error {
			live := b.sim.Live(b.seeds[r.Name])
			rt, err := b.refreshToken(gctx, r.Name, r.VersionID)
			if err != nil || (live != "" && rt == live) {
				return err
			}
			if r.Inflight != nil && live != "" {
				next, err := b.refreshToken(gctx, r.Name, r.Inflight.To)
				if err != nil && !errors.Is(err, secretstore.ErrNotFound) {
					return err
				}
				if next == live {
					mu.Lock()
					inFlight++
					mu.Unlock()
					return nil
				}
			}
			detail := fmt.Sprintf("%s (generation %d, status %s, in flight %v, family revoked %v, last error %q)",
				r.Name, r.Generation, r.Status, r.Inflight != nil, live == "", firstLine(errors.New(r.LastError)))
			mu.Lock()
			lost++
			lostDetail = append(lostDetail, detail)
			mu.Unlock()
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return 0, 0, 0, nil, err
	}
	sort.Strings(lostDetail)
	lostDetail = lostDetail[:min(3, len(lostDetail))]
	// A token with no record at all was never adopted: it is left, and not counted lost.
	left += b.cfg.Tokens - len(recs)
	return left, inFlight, lost, lostDetail, nil
}

// refreshToken reads the refresh token in one private version, straight from moto.
func (b *bed) refreshToken(ctx context.Context, name, versionID string) (string, error) {
	v, err := b.direct.GetVersion(ctx, b.prefix+"private/"+name, versionID)
	if err != nil {
		return "", fmt.Errorf("loadtest: read version of %s: %w", name, err)
	}
	var doc struct {
		RefreshToken string `json:"refresh_token"`
	}
	if err := json.Unmarshal([]byte(v.Value.Reveal()), &doc); err != nil {
		return "", fmt.Errorf("loadtest: version of %s is not JSON", name)
	}
	return doc.RefreshToken, nil
}

func (b *bed) needsReauth(ctx context.Context) (int, error) {
	recs, err := b.ledger.List(ctx)
	if err != nil {
		return 0, fmt.Errorf("loadtest: list records: %w", err)
	}
	n := 0
	for _, r := range recs {
		if r.Status == ledger.StatusNeedsReauth {
			n++
		}
	}
	return n, nil
}

// firstLine shortens an error for the table: the part before the first "; " (the engine's
// report joins rows so), at most 160 bytes. Errors never carry a token (engine contract).
func firstLine(err error) string {
	if err == nil {
		return ""
	}
	s, _, _ := strings.Cut(err.Error(), "; ")
	if len(s) > 160 {
		s = s[:160] + "…"
	}
	return s
}

func randID() string {
	var b [5]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// presentations sits in front of the provider and counts every refresh token presented
// more than once; it keeps only hashes of them.
type presentations struct {
	srv   *httptest.Server
	path  string
	mu    sync.Mutex
	seen  map[[32]byte]bool
	again int
	calls int
}

func newPresentations(target string) *presentations {
	u, err := url.Parse(target)
	if err != nil {
		panic(err) // the simulator's own URL
	}
	p := &presentations{path: u.Path, seen: map[[32]byte]bool{}}
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: u.Scheme, Host: u.Host})
	rp.ErrorLog = log.New(io.Discard, "", 0) // quiet: the counts say what happened
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			http.Error(w, "read", http.StatusBadRequest)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		form, _ := url.ParseQuery(string(body))
		p.mu.Lock()
		p.calls++
		if rt := form.Get("refresh_token"); rt != "" {
			h := sha256.Sum256([]byte(rt))
			if p.seen[h] {
				p.again++
			}
			p.seen[h] = true
		}
		p.mu.Unlock()
		rp.ServeHTTP(w, r)
	}))
	return p
}

func (p *presentations) url() string { return p.srv.URL + p.path }

func (p *presentations) close() { p.srv.Close() }

func (p *presentations) twice() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.again
}

func (p *presentations) requests() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.calls
}

// line is one invocation as the table prints it.
func (inv Invocation) line() string {
	keys := make([]string, 0, len(inv.Summary))
	for k := range inv.Summary {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%d", k, inv.Summary[k]))
	}
	s := fmt.Sprintf("invocation %d: %s, refreshed %d (%.1f/s), SM writes %d (peak %d/s), throttled %d (failed rows by throttling %d), AWS calls %d (%.0f/s), provider calls %d, left %d, in flight %d, lost %d, presented twice %d, lambda error %v [%s]",
		inv.N, inv.Duration.Round(time.Millisecond), inv.Refreshed, inv.PerSecond, inv.Writes, inv.PeakWrites, inv.Throttled, inv.ThrottleFailed,
		inv.AWSCalls, float64(inv.AWSCalls)/max(inv.Duration.Seconds(), 0.001), inv.ProviderCalls, inv.Left, inv.InFlight, inv.Lost, inv.Twice, inv.LambdaError, strings.Join(parts, " "))
	s += fmt.Sprintf("\n    AWS busy %s (%.0f%% of the invocation): %s", inv.AWSBusy.Round(time.Millisecond),
		100*inv.AWSBusy.Seconds()/max(inv.Duration.Seconds(), 0.001), inv.AWSSlowest)
	if len(inv.LostDetail) > 0 {
		s += "\n    first lost: " + strings.Join(inv.LostDetail, " | ")
	}
	if len(inv.FirstErrors) > 0 {
		s += "\n    first errors: " + strings.Join(inv.FirstErrors, " | ")
	}
	return s
}

// Print writes the summary of a schedule.
func (r Result) Print(w io.Writer) {
	c := r.Config
	fmt.Fprintf(w, "load test: %d tokens, write limit %d/s, pace %s, CONCURRENCY %d, invocation deadline %s, sweep every %s (simulated)\n",
		c.Tokens, c.WriteLimit, paceString(c.Pace), c.Concurrency, c.Deadline, c.SweepInterval)
	fmt.Fprintf(w, "setup (create + adopt, no limit): %s\n", r.Setup.Round(time.Millisecond))
	for _, inv := range r.Invocations {
		fmt.Fprintln(w, inv.line())
	}
	var busy time.Duration
	lambdaErrors, throttled := 0, 0
	for _, inv := range r.Invocations {
		busy += inv.Duration
		throttled += inv.Throttled
		if inv.LambdaError {
			lambdaErrors++
		}
	}
	rate := 0.0
	if busy > 0 {
		rate = float64(r.Refreshed()) / busy.Seconds()
	}
	fmt.Fprintf(w, "schedule: %d invocations = %.0f minutes of sweeps; %d refreshed in %s of invocation time (%.1f/s while running, %.2f/s over the schedule); throttled %d; lambda errors %d; left %d; in flight %d; lost %d; presented twice %d; needs_reauth %d\n",
		len(r.Invocations), r.SweepMinutes(), r.Refreshed(), busy.Round(time.Millisecond), rate,
		float64(r.Refreshed())/max(r.SweepMinutes()*60, 1), throttled, lambdaErrors, r.Left, r.InFlight, r.Lost, r.Twice, r.NeedsReauth)
}

func paceString(p float64) string {
	if p <= 0 {
		return "off"
	}
	return fmt.Sprintf("%g/s", p)
}
