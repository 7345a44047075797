package tokenclient_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	smtypes "github.com/aws/aws-sdk-go-v2/service/secretsmanager/types"

	"github.com/seed-502fa48b/token-refresher/internal/awsemu"
	"github.com/seed-502fa48b/token-refresher/internal/providersim"
)

func TestMain(m *testing.M) { os.Exit(awsemu.RunTests(m)) }

// countingSM wraps the real SDK client (talking to moto) and counts GetSecretValue
// calls. If gate is set, calls wait for it before going out, so a test can make sure
// every caller is already waiting when the first read is in flight.
type countingSM struct {
	sm      *secretsmanager.Client
	n       atomic.Int64
	gate    chan struct{}
	entered chan struct{} // if set, signalled (without blocking) when a call starts
}

func (c *countingSM) GetSecretValue(ctx context.Context, in *secretsmanager.GetSecretValueInput, optFns ...func(*secretsmanager.Options)) (*secretsmanager.GetSecretValueOutput, error) {
	c.n.Add(1)
	if c.entered != nil {
		select {
		case c.entered <- struct{}{}:
		default:
		}
	}
	if c.gate != nil {
		select {
		case <-c.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return c.sm.GetSecretValue(ctx, in, optFns...)
}

func (c *countingSM) calls() int64 { return c.n.Load() }

var t0 = time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)

// env is one test's view of moto: its own access secret and a counting client.
type env struct {
	t      *testing.T
	sm     *secretsmanager.Client
	count  *countingSM
	secret string
	name   string // token name: the part after "access/"
	mu     sync.Mutex
	issued []string
	logs   *syncBuffer
	log    *slog.Logger
}

var seq atomic.Int64

func newEnv(t *testing.T) *env {
	t.Helper()
	cfg := awsemu.Shared(t).AWSConfig(t)
	sm := secretsmanager.NewFromConfig(cfg)
	name := fmt.Sprintf("%s-%d", strings.NewReplacer("/", "-", " ", "_").Replace(t.Name()), seq.Add(1))
	e := &env{
		t:      t,
		sm:     sm,
		count:  &countingSM{sm: sm},
		secret: "token-refresher/access/" + name,
		name:   name,
		logs:   &syncBuffer{},
	}
	e.log = slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	// Every test ends with the leak check: no token it issued in any log line.
	t.Cleanup(func() {
		out := e.logs.String()
		for _, tok := range e.issuedTokens() {
			if strings.Contains(out, tok) {
				t.Errorf("log output contains an issued access token")
			}
		}
	})
	return e
}

// newToken returns a fresh random token value and remembers it for the leak checks.
func (e *env) newToken() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	tok := "at-" + hex.EncodeToString(b)
	e.mu.Lock()
	e.issued = append(e.issued, tok)
	e.mu.Unlock()
	return tok
}

func (e *env) issuedTokens() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.issued...)
}

type accessDoc struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresAt   string `json:"expires_at"`
	Scope       string `json:"scope"`
	Generation  int64  `json:"generation"`
	Status      string `json:"status"`
	Reason      string `json:"reason,omitempty"`
}

// publish writes the access secret as the refresher does: a new AWSCURRENT version.
func (e *env) publish(tok string, expiresAt time.Time, gen int64) {
	e.t.Helper()
	e.publishDoc(accessDoc{
		AccessToken: tok, TokenType: "Bearer", ExpiresAt: expiresAt.UTC().Format(time.RFC3339),
		Scope: "fund.read", Generation: gen, Status: "active",
	})
}

func (e *env) publishDoc(d accessDoc) {
	e.t.Helper()
	if err := e.tryPublish(d); err != nil {
		e.t.Fatal(err)
	}
}

// tryPublish is publishDoc for goroutines other than the test's, which must not Fatal.
func (e *env) tryPublish(d accessDoc) error {
	b, err := json.Marshal(d)
	if err != nil {
		return err
	}
	if err := putSecret(context.Background(), e.sm, e.secret, string(b)); err != nil {
		return fmt.Errorf("publish %s: %w", e.secret, err)
	}
	return nil
}

func (e *env) publishRaw(s string) {
	e.t.Helper()
	if err := putSecret(context.Background(), e.sm, e.secret, s); err != nil {
		e.t.Fatalf("publish %s: %v", e.secret, err)
	}
}

func putSecret(ctx context.Context, sm *secretsmanager.Client, name, value string) error {
	_, err := sm.PutSecretValue(ctx, &secretsmanager.PutSecretValueInput{SecretId: &name, SecretString: &value})
	var nf *smtypes.ResourceNotFoundException
	if errors.As(err, &nf) {
		_, err = sm.CreateSecret(ctx, &secretsmanager.CreateSecretInput{Name: &name, SecretString: &value})
	}
	return err
}

func (e *env) deleteSecret() {
	e.t.Helper()
	_, err := e.sm.DeleteSecret(context.Background(), &secretsmanager.DeleteSecretInput{
		SecretId: &e.secret, ForceDeleteWithoutRecovery: aws.Bool(true),
	})
	if err != nil {
		e.t.Fatalf("delete %s: %v", e.secret, err)
	}
}

// noLeak fails when an error text carries an issued token.
func (e *env) noLeak(err error) {
	e.t.Helper()
	if err == nil {
		return
	}
	for _, tok := range e.issuedTokens() {
		if strings.Contains(err.Error(), tok) || strings.Contains(fmt.Sprintf("%+v", err), tok) {
			e.t.Errorf("error %q carries an issued token", "[redacted by test]")
		}
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// newClock is an injected clock that moves only when told to.
func newClock(t time.Time) *providersim.Clock { return providersim.NewClock(t) }
