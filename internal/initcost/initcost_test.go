package initcost

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/seed-502fa48b/token-refresher/internal/bootstrapbin"
)

var traceOnce sync.Once

// lambdaFlags are the Lambda build's (Makefile LAMBDA_BUILD), for the benchmark's figures.
var lambdaFlags = []string{"-tags", "lambda.norpc", "-trimpath", "-ldflags=-s -w"}

// bootstrap is the binary every other test runs (bootstrapbin.Path, built once per process).
// bootstrapbin keeps only the Lambda tag, so the tests share the build cache with every other
// test binary instead of compiling the AWS SDK once more (-trimpath and CGO_ENABLED change
// every package's cache key).
func bootstrap(tb testing.TB) string {
	tb.Helper()
	bin, err := bootstrapbin.Path(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	return bin
}

// build compiles pkg (relative to the module root) into dir/name.
func build(tb testing.TB, flags []string, dir, name, pkg string, env ...string) string {
	tb.Helper()
	out := filepath.Join(dir, name)
	args := append(append([]string{"build"}, flags...), "-o", out, pkg)
	cmd := exec.Command("go", args...)
	cmd.Dir = "../.."
	cmd.Env = append(os.Environ(), env...)
	if msg, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("go build %s: %v\n%s", pkg, err, msg)
	}
	return out
}

// runtimeAPI is a Runtime API that only notes when the first GET …/next arrives and holds it.
type runtimeAPI struct {
	srv  *httptest.Server
	next chan time.Time
}

func newRuntimeAPI(tb testing.TB) *runtimeAPI {
	r := &runtimeAPI{next: make(chan time.Time, 1)}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if strings.HasSuffix(req.URL.Path, "/invocation/next") {
			select {
			case r.next <- time.Now():
			default:
			}
			<-req.Context().Done() // hold it: the process is killed next
			return
		}
		http.NotFound(w, req)
	}))
	tb.Cleanup(r.srv.Close)
	return r
}

// awsEndpoint counts requests: init must not make any.
type awsEndpoint struct {
	srv   *httptest.Server
	calls atomic.Int64
}

func newAWSEndpoint(tb testing.TB) *awsEndpoint {
	a := &awsEndpoint{}
	a.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		a.calls.Add(1)
		http.Error(w, "no calls expected at init", http.StatusTeapot)
	}))
	tb.Cleanup(a.srv.Close)
	return a
}

func env(api *runtimeAPI, aws *awsEndpoint, extra ...string) []string {
	return append([]string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + os.Getenv("HOME"),
		"AWS_LAMBDA_RUNTIME_API=" + strings.TrimPrefix(api.srv.URL, "http://"),
		"AWS_REGION=us-east-1",
		"AWS_ACCESS_KEY_ID=test",
		"AWS_SECRET_ACCESS_KEY=test",
		"AWS_EC2_METADATA_DISABLED=true",
		"AWS_ENDPOINT_URL=" + aws.srv.URL,
		"AWS_LAMBDA_FUNCTION_NAME=initcost",
		"STATE_TABLE=initcost",
	}, extra...)
}

// initTime starts bin and returns the time until its first GET …/next, then kills it.
func initTime(tb testing.TB, bin string, environ []string, api *runtimeAPI) time.Duration {
	tb.Helper()
	cmd := exec.Command(bin)
	cmd.Env = environ
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	started := time.Now()
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Kill()
		<-exited
	}()
	select {
	case at := <-api.next:
		return at.Sub(started)
	case err := <-exited:
		exited <- err
		tb.Fatalf("%s exited before asking for an event: %v\n%s", filepath.Base(bin), err, stderr.String())
	case <-time.After(30 * time.Second):
		tb.Fatalf("%s did not ask for an event within 30s\n%s", filepath.Base(bin), stderr.String())
	}
	return 0
}

// TestInitReachesRuntimeAPIWithoutNetwork: the bootstrap and the baseline both get to their
// first GET …/next, and neither calls AWS during init.
func TestInitReachesRuntimeAPIWithoutNetwork(t *testing.T) {
	boot := bootstrap(t)
	// The baseline, built the same way beside it.
	hello, err := bootstrapbin.BuildPackageInto(context.Background(), "./internal/initcost/testdata/hello", filepath.Dir(boot), "initcost-hello")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, bin string }{
		{"bootstrap", boot},
		{"hello", hello},
	} {
		t.Run(tc.name, func(t *testing.T) {
			api, aws := newRuntimeAPI(t), newAWSEndpoint(t)
			initTime(t, tc.bin, env(api, aws), api)
			if n := aws.calls.Load(); n != 0 {
				t.Errorf("got %d AWS calls during init, want 0", n)
			}
		})
	}
}

// TestOwnPackagesInitIsLight: none of this module's packages does real work at init (a
// compiled regexp, a parsed template, a built table): each allocates at most a few objects
// (GODEBUG=inittrace=1 counts them; counts, unlike times, do not depend on machine load).
func TestOwnPackagesInitIsLight(t *testing.T) {
	const maxAllocs, maxBytes = 32, 16 << 10
	bin := bootstrap(t)
	api, aws := newRuntimeAPI(t), newAWSEndpoint(t)
	inits := initTrace(t, bin, env(api, aws, "GODEBUG=inittrace=1"))
	own := 0
	for _, in := range inits {
		if !strings.HasPrefix(in.name, "github.com/seed-502fa48b/token-refresher/") {
			continue
		}
		own++
		if in.allocs > maxAllocs || in.bytes > maxBytes {
			t.Errorf("%s: init allocates %d objects, %d bytes; want at most %d and %d (move the work into a function or sync.OnceValue)",
				in.name, in.allocs, in.bytes, maxAllocs, maxBytes)
		}
	}
	if own == 0 {
		t.Fatalf("no package of this module in the init trace (%d packages), want at least pkg/refresher", len(inits))
	}
}

// BenchmarkInitCost reports, per iteration one cold start of each binary (alternating, so
// machine load hits both alike): init time to the first GET …/next for the bootstrap and
// the hello-world baseline and their ratio (goal ≤ 1.1), the host binaries' sizes and the
// linux/arm64 sizes that Lambda runs, and the slowest package initialisers of the bootstrap
// (GODEBUG=inittrace=1).
func BenchmarkInitCost(b *testing.B) {
	dir := b.TempDir()
	lambda := []string{"CGO_ENABLED=0"}
	boot := build(b, lambdaFlags, dir, "bootstrap", "./functions/refresher", lambda...)
	hello := build(b, lambdaFlags, dir, "hello", "./internal/initcost/testdata/hello", lambda...)
	arm := []string{"CGO_ENABLED=0", "GOOS=linux", "GOARCH=arm64"}
	bootARM := build(b, lambdaFlags, dir, "bootstrap-arm64", "./functions/refresher", arm...)
	helloARM := build(b, lambdaFlags, dir, "hello-arm64", "./internal/initcost/testdata/hello", arm...)
	api, aws := newRuntimeAPI(b), newAWSEndpoint(b)
	environ := env(api, aws)
	// The benchmark function runs once per round (b.N = 1 first); the trace once is enough.
	traceOnce.Do(func() {
		b.Logf("bootstrap's slowest package inits: %s", slowestInits(b, boot, env(api, aws, "GODEBUG=inittrace=1"), 5))
	})

	var tBoot, tHello time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		tBoot += initTime(b, boot, environ, api)
		tHello += initTime(b, hello, environ, api)
	}
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(float64(tBoot.Microseconds())/n/1000, "bootstrap-init-ms")
	b.ReportMetric(float64(tHello.Microseconds())/n/1000, "hello-init-ms")
	b.ReportMetric(float64(tBoot)/float64(tHello), "init-ratio")
	b.ReportMetric(mb(b, boot), "bootstrap-MB")
	b.ReportMetric(mb(b, hello), "hello-MB")
	b.ReportMetric(mb(b, bootARM)/mb(b, helloARM), "arm64-size-ratio")
	b.ReportMetric(mb(b, bootARM), "bootstrap-arm64-MB")
	b.ReportMetric(mb(b, helloARM), "hello-arm64-MB")
	b.ReportMetric(0, "ns/op")
}

func mb(tb testing.TB, path string) float64 {
	fi, err := os.Stat(path)
	if err != nil {
		tb.Fatal(err)
	}
	return float64(fi.Size()) / 1e6
}

// pkgInit is one line of GODEBUG=inittrace=1:
// "init <pkg> @<t> ms, <clock> ms clock, <bytes> bytes, <n> allocs".
type pkgInit struct {
	name          string
	ms            float64
	bytes, allocs int
}

// initTrace runs bin with GODEBUG=inittrace=1 until its first GET …/next and parses the trace.
func initTrace(tb testing.TB, bin string, environ []string) []pkgInit {
	tb.Helper()
	api := newRuntimeAPI(tb)
	cmd := exec.Command(bin)
	for _, kv := range environ {
		if strings.HasPrefix(kv, "AWS_LAMBDA_RUNTIME_API=") {
			kv = "AWS_LAMBDA_RUNTIME_API=" + strings.TrimPrefix(api.srv.URL, "http://")
		}
		cmd.Env = append(cmd.Env, kv)
	}
	var trace bytes.Buffer
	cmd.Stderr = &trace
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	select {
	case <-api.next:
	case <-time.After(30 * time.Second):
		tb.Errorf("%s did not ask for an event within 30s", filepath.Base(bin))
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()

	var inits []pkgInit
	sc := bufio.NewScanner(&trace)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 10 || f[0] != "init" || f[6] != "clock," || f[8] != "bytes," {
			continue
		}
		ms, err1 := strconv.ParseFloat(f[4], 64)
		b, err2 := strconv.Atoi(f[7])
		n, err3 := strconv.Atoi(f[9])
		if err1 == nil && err2 == nil && err3 == nil {
			inits = append(inits, pkgInit{name: f[1], ms: ms, bytes: b, allocs: n})
		}
	}
	return inits
}

// slowestInits lists the n package initialisers of bin with the most wall time.
func slowestInits(tb testing.TB, bin string, environ []string, n int) string {
	tb.Helper()
	inits := initTrace(tb, bin, environ)
	sort.Slice(inits, func(i, j int) bool { return inits[i].ms > inits[j].ms })
	var parts []string
	for i := 0; i < len(inits) && i < n; i++ {
		parts = append(parts, fmt.Sprintf("%s %.2fms", inits[i].name, inits[i].ms))
	}
	return strings.Join(parts, ", ")
}
