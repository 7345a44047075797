// Package awsemu runs moto's HTTP server as the stand-in for AWS (Secrets
// Manager, DynamoDB) in tests and the local demo, and builds SDK
// configurations that talk to it.
package awsemu

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/seed-502fa48b/token-refresher/internal/ci"
)

// Fixed identity of the emulated account; moto accepts any credentials.
const (
	Region          = "us-east-1"
	AccessKeyID     = "test"
	SecretAccessKey = "test"
)

// InstallCommand installs moto with the server extras it needs (flask, flask-cors).
const InstallCommand = "python3 -m pip install 'moto[server]'"

// ErrUnavailable means python3 or moto is not installed; callers branch on it
// to decide between skipping (developer machine) and failing (CI).
var ErrUnavailable = errors.New("awsemu: moto is not available (install it with: " + InstallCommand + ")")

// startTimeout bounds how long Start waits for moto to answer.
const startTimeout = 20 * time.Second

// errPortTaken is retried with another port: the free port we picked can be
// taken by someone else before moto binds it.
var errPortTaken = errors.New("awsemu: port already in use")

// Server is a running moto server.
type Server struct {
	URL string // http://127.0.0.1:PORT

	cmd     *exec.Cmd
	done    chan struct{} // closed when the process has been reaped
	waitErr error         // valid after done
	stderr  *tailBuffer

	closeOnce sync.Once
	closeErr  error
}

//go:embed launcher.py
var launcherPy string

// Start launches moto's server (`moto.server.main`, through launcher.py) on a free loopback port in its own
// process group and waits until it answers HTTP. ctx bounds only the start-up;
// the server runs until Close.
func Start(ctx context.Context) (*Server, error) {
	python, err := exec.LookPath("python3")
	if err != nil {
		return nil, fmt.Errorf("%w: python3 not found on PATH", ErrUnavailable)
	}
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	var lastErr error
	for range 3 {
		s, err := start(ctx, python)
		if err == nil {
			return s, nil
		}
		if !errors.Is(err, errPortTaken) {
			return nil, err
		}
		lastErr = err
	}
	return nil, lastErr
}

func start(ctx context.Context, python string) (*Server, error) {
	port, err := freePort()
	if err != nil {
		return nil, fmt.Errorf("awsemu: pick a port: %w", err)
	}
	// launcher.py is moto.server with two known gaps closed (see the file).
	cmd := exec.Command(python, "-c", launcherPy, "-H", "127.0.0.1", "-p", strconv.Itoa(port))
	cmd.SysProcAttr = procAttr()
	cmd.Stdout = io.Discard
	tail := &tailBuffer{max: 8 << 10}
	cmd.Stderr = tail
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("awsemu: start %s: %w", python, err)
	}
	s := &Server{
		URL:    "http://127.0.0.1:" + strconv.Itoa(port),
		cmd:    cmd,
		done:   make(chan struct{}),
		stderr: tail,
	}
	go func() {
		s.waitErr = cmd.Wait()
		close(s.done)
	}()
	if err := s.waitReady(ctx); err != nil {
		_ = s.Close()
		return nil, err
	}
	return s, nil
}

// waitReady polls until moto answers any HTTP request. Polling is the only
// readiness signal moto offers.
func (s *Server) waitReady(ctx context.Context) error {
	client := &http.Client{Timeout: time.Second}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+"/", nil)
		if err != nil {
			return fmt.Errorf("awsemu: %w", err)
		}
		if resp, err := client.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			return nil
		}
		select {
		case <-s.done:
			return s.exitError()
		case <-ctx.Done():
			return fmt.Errorf("awsemu: moto did not answer on %s: %w; stderr: %s", s.URL, ctx.Err(), s.stderr.String())
		case <-tick.C:
		}
	}
}

// exitError explains why moto exited during start-up.
func (s *Server) exitError() error {
	out := s.stderr.String()
	switch {
	case strings.Contains(out, "No module named"):
		return fmt.Errorf("%w: %s", ErrUnavailable, strings.TrimSpace(lastLine(out)))
	case strings.Contains(out, "Address already in use"):
		return errPortTaken
	default:
		return fmt.Errorf("awsemu: moto exited during start-up (%v); stderr: %s", s.waitErr, out)
	}
}

// Close kills moto's process group and waits for it to be reaped. It reports
// an error if moto had already died on its own.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		select {
		case <-s.done:
			s.closeErr = fmt.Errorf("awsemu: moto exited before Close (%v); stderr: %s", s.waitErr, s.stderr.String())
		default:
		}
		// Negative pid: the whole group, in case moto forked.
		if err := syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			_ = s.cmd.Process.Kill()
		}
		<-s.done
	})
	return s.closeErr
}

// AWSConfig returns an SDK configuration for this server; it fails the test
// if it cannot be built.
func (s *Server) AWSConfig(t testing.TB) aws.Config {
	t.Helper()
	cfg, err := AWSConfig(context.Background(), s.URL)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// Env returns the environment a child process (the Lambda bootstrap, a CLI)
// needs for config.LoadDefaultConfig to reach this server.
func (s *Server) Env() []string {
	return []string{
		"AWS_ENDPOINT_URL=" + s.URL,
		"AWS_REGION=" + Region,
		"AWS_DEFAULT_REGION=" + Region,
		"AWS_ACCESS_KEY_ID=" + AccessKeyID,
		"AWS_SECRET_ACCESS_KEY=" + SecretAccessKey,
		"AWS_EC2_METADATA_DISABLED=true",
	}
}

// AWSConfig builds the configuration for an emulator at endpoint. It is built
// by hand rather than with config.LoadDefaultConfig so that nothing from the
// environment or ~/.aws (profiles, per-service endpoint overrides, IMDS) can
// leak in and send a call to real AWS.
func AWSConfig(_ context.Context, endpoint string) (aws.Config, error) {
	u, err := url.Parse(endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return aws.Config{}, fmt.Errorf("awsemu: endpoint %q is not an absolute http(s) URL", endpoint)
	}
	return aws.Config{
		Region:       Region,
		Credentials:  aws.NewCredentialsCache(credentials.NewStaticCredentialsProvider(AccessKeyID, SecretAccessKey, "")),
		BaseEndpoint: aws.String(endpoint),
	}, nil
}

var (
	sharedMu sync.Mutex
	shared   *Server
)

// RunTests is for TestMain: it starts one server shared by the package's
// tests, runs them and stops it. Without moto the tests fail when CI is set
// and are not run (exit 0, with a notice) otherwise.
func RunTests(m *testing.M) int {
	return runTests(m, os.Stderr)
}

func runTests(m interface{ Run() int }, stderr io.Writer) int {
	s, err := Start(context.Background())
	if err != nil {
		if errors.Is(err, ErrUnavailable) && !ci.Enabled() {
			fmt.Fprintf(stderr, "awsemu: NOTICE: tests not run (set CI=true to fail instead): %v\n", err)
			return 0
		}
		fmt.Fprintf(stderr, "awsemu: FAIL: %v\nawsemu: install moto with: %s\n", err, InstallCommand)
		return 1
	}
	sharedMu.Lock()
	shared = s
	sharedMu.Unlock()

	code := m.Run()

	sharedMu.Lock()
	shared = nil
	sharedMu.Unlock()
	if err := s.Close(); err != nil {
		fmt.Fprintf(stderr, "awsemu: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// Shared returns the server RunTests started.
func Shared(t testing.TB) *Server {
	t.Helper()
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if shared == nil {
		t.Fatal("awsemu: no shared server: call os.Exit(awsemu.RunTests(m)) from TestMain")
	}
	return shared
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func lastLine(s string) string {
	s = strings.TrimRight(s, "\n")
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// tailBuffer keeps the last max bytes written: moto logs every request, and
// only the end matters for an error message.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if over := len(t.b) - t.max; over > 0 {
		t.b = append(t.b[:0], t.b[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}
