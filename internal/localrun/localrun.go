// Package localrun stands up the whole system on this machine: moto for Secrets Manager and
// DynamoDB, the state table as the template declares it, the three seed-provider
// simulators, and the real bootstrap under AWS's Lambda Runtime Interface Emulator with the
// template's environment. `make local`, `make invoke` and `make demo` use it.
package localrun

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/seed-502fa48b/token-refresher/internal/awsemu"
	"github.com/seed-502fa48b/token-refresher/internal/bootstrapbin"
	"github.com/seed-502fa48b/token-refresher/internal/providersim"
	"github.com/seed-502fa48b/token-refresher/internal/rie"
	"github.com/seed-502fa48b/token-refresher/pkg/ledger"
	"github.com/seed-502fa48b/token-refresher/pkg/secretname"
	"github.com/seed-502fa48b/token-refresher/pkg/secretstore"
	"github.com/seed-502fa48b/token-refresher/pkg/token"
)

// Defaults of the stack, matching template.yaml's parameter defaults.
const (
	DefaultTable  = "token-refresher-state"
	DefaultPrefix = secretname.DefaultPrefix
	// DefaultTimeout is the template's function Timeout.
	DefaultTimeout = 300 * time.Second
)

// Simulator credentials. They open only the local simulators, so they may be printed.
const (
	SahamatiEntityID     = "FIU-LOCAL"
	SahamatiEntitySecret = "local-entity-secret"
	RotatingClientID     = "local-app"
	RotatingClientSecret = "local-client-secret"
	RotatingScope        = "offline_access fund.read target:b/acme"
)

// Options configures a Stack. The zero value is the template's defaults.
type Options struct {
	Table, Prefix string
	Timeout       time.Duration // function timeout; default DefaultTimeout
	// Progress receives one line per step ("building the bootstrap…"); default discarded.
	Progress io.Writer
	// FunctionLog receives the function's output and the emulator's START/END/REPORT
	// lines; EmulatorLog the emulator's own log. Default discarded.
	FunctionLog, EmulatorLog io.Writer
	// RIEAddr fixes the invoke listener (host:port); default a free loopback port.
	RIEAddr string
	// Env is appended to the function's environment (later entries win).
	Env []string
	// Bootstrap and RIE are the binaries Build returned; when empty, Start calls Build.
	Bootstrap, RIE string
}

// Stack is a running local system. Close stops all of it.
type Stack struct {
	Table, Prefix string
	EscrowKey     string // the KMS key ARN the function escrows refused refresh tokens with
	AWS           *awsemu.Server
	AWSConfig     aws.Config
	Secrets       *secretstore.Store
	Function      *rie.Emulator
	Sahamati      *providersim.Sahamati
	Vault         *providersim.Vault
	Rotating      *providersim.Rotating

	closers []func() error
}

// Build compiles the bootstrap and installs the pinned emulator, saying what it does. It
// takes no deadline: on an empty module and build cache it downloads and compiles the AWS
// SDK, which takes minutes on a small machine, and a deadline there would only turn a slow
// first run into a failed one. Start calls it; callers that time their own steps call it
// first.
func Build(ctx context.Context, progress io.Writer) (bootstrap, emulator string, err error) {
	progress = orDiscard(progress)
	fmt.Fprintln(progress, "▶ building the bootstrap (go build ./functions/refresher for this machine; with an empty Go cache this downloads and compiles the AWS SDK first)…")
	started := time.Now()
	if bootstrap, err = bootstrapbin.Path(ctx); err != nil {
		return "", "", err
	}
	fmt.Fprintf(progress, "  built %s in %.1fs\n", bootstrap, time.Since(started).Seconds())
	fmt.Fprintf(progress, "▶ installing AWS's Lambda Runtime Interface Emulator (go install %s@%s, first run only)…\n", rie.Module, rie.Version)
	started = time.Now()
	if emulator, err = rie.Path(ctx); err != nil {
		return "", "", err
	}
	fmt.Fprintf(progress, "  ready: %s in %.1fs\n", emulator, time.Since(started).Seconds())
	return bootstrap, emulator, nil
}

// Start builds what it needs, then starts moto, creates the state table, starts the
// simulators and the function. On error everything already started is stopped.
func Start(ctx context.Context, o Options) (_ *Stack, err error) {
	if o.Table == "" {
		o.Table = DefaultTable
	}
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	progress := orDiscard(o.Progress)
	boot, emu := o.Bootstrap, o.RIE
	if boot == "" || emu == "" {
		if boot, emu, err = Build(ctx, progress); err != nil {
			return nil, err
		}
	}

	s := &Stack{Table: o.Table, Prefix: o.Prefix}
	defer func() {
		if err != nil {
			_ = s.Close()
		}
	}()
	fmt.Fprintln(progress, "▶ starting moto (the AWS stand-in: Secrets Manager, DynamoDB, KMS)…")
	if s.AWS, err = awsemu.Start(ctx); err != nil {
		return nil, err
	}
	s.closers = append(s.closers, s.AWS.Close)
	if s.AWSConfig, err = awsemu.AWSConfig(ctx, s.AWS.URL); err != nil {
		return nil, err
	}
	s.Secrets = secretstore.New(secretsmanager.NewFromConfig(s.AWSConfig))
	if err := ledger.CreateTable(ctx, dynamodb.NewFromConfig(s.AWSConfig), s.Table); err != nil {
		return nil, err
	}
	// The template always gives the function an escrow key (docs/design.md §4); so does this.
	key, err := kms.NewFromConfig(s.AWSConfig).CreateKey(ctx, &kms.CreateKeyInput{Description: aws.String("token-refresher escrow (local)")})
	if err != nil {
		return nil, fmt.Errorf("localrun: create the escrow key: %w", err)
	}
	s.EscrowKey = aws.ToString(key.KeyMetadata.Arn)
	fmt.Fprintf(progress, "  %s; state table %s and escrow key created\n", s.AWS.URL, s.Table)

	fmt.Fprintln(progress, "▶ starting the seed-provider simulators (Sahamati, vault.ist, rotating OAuth)…")
	s.Sahamati = providersim.NewSahamati(providersim.SahamatiOptions{EntityID: SahamatiEntityID, Secret: SahamatiEntitySecret})
	s.Vault = providersim.NewVault(providersim.VaultOptions{})
	s.Rotating = providersim.NewRotating(providersim.RotatingOptions{
		ClientID: RotatingClientID, ClientSecret: RotatingClientSecret, ReuseGrace: time.Minute,
	})
	s.closers = append(s.closers, closeErr(s.Sahamati.Close), closeErr(s.Vault.Close), closeErr(s.Rotating.Close))

	fmt.Fprintln(progress, "▶ starting the function under aws-lambda-rie (the template's environment)…")
	s.Function, err = rie.Start(ctx, rie.Options{
		RIE:       emu,
		Bootstrap: boot,
		Env:       append(append(s.AWS.Env(), FunctionEnv(s.Table, s.Prefix, s.EscrowKey)...), o.Env...),
		Timeout:   o.Timeout,
		Addr:      o.RIEAddr,
		Stdout:    o.FunctionLog,
		Stderr:    o.EmulatorLog,
	})
	if err != nil {
		return nil, err
	}
	s.closers = append(s.closers, s.Function.Close)
	fmt.Fprintf(progress, "  invoke: POST %s\n", s.Function.InvokeURL())
	return s, nil
}

// FunctionEnv is the function's environment as template.yaml sets it with its default
// parameters (TestFunctionEnvMatchesTemplate keeps the two in step): the Variables, and what
// Lambda derives from the function's MemorySize and LoggingConfig.
func FunctionEnv(table, prefix, escrowKey string) []string {
	return []string{
		"STATE_TABLE=" + table,
		"SECRET_PREFIX=" + prefix,
		"SCHEDULE_INTERVAL=12h",
		"SWEEP_INTERVAL=5m",
		"CONCURRENCY=8",
		"WRITE_RATE=40",
		"EVENT_BUS_NAME=default",
		"KMS_KEY_ID=", // no customer-managed key by default
		"ESCROW_KEY_ID=" + escrowKey,
		"AWS_LAMBDA_FUNCTION_MEMORY_SIZE=256",
		"AWS_LAMBDA_LOG_FORMAT=JSON",
		"AWS_LAMBDA_LOG_LEVEL=INFO",
	}
}

// Close stops the function, the simulators and moto, in reverse order of start.
func (s *Stack) Close() error {
	var errs []error
	for i := len(s.closers) - 1; i >= 0; i-- {
		errs = append(errs, s.closers[i]())
	}
	s.closers = nil
	return errors.Join(errs...)
}

// DemoTokens are the names SeedDemoTokens creates, one per seed profile.
var DemoTokens = []string{"sahamati-prod", "vault-ist", "acme-business"}

// SeedDemoTokens creates one private secret per seed profile, each pointing at its
// simulator, with default policies (no refresh_margin): the refresher decides when each is
// due from the token's own lifetime.
func (s *Stack) SeedDemoTokens(ctx context.Context) error {
	now := time.Now().UTC()
	docs := map[string]map[string]any{
		"sahamati-prod": {
			"provider": map[string]any{
				"grant": "sahamati_entity", "token_url": s.Sahamati.URL(),
				"entity_id": SahamatiEntityID, "entity_secret": SahamatiEntitySecret,
				// The simulator's secret is valid for 60 days from its start, as after a reset.
				"credentials_expire_at": now.Add(60 * 24 * time.Hour).Format(time.RFC3339),
			},
		},
		"vault-ist": {
			"provider":      map[string]any{"grant": "refresh_token", "body": "json", "token_url": s.Vault.URL(), "client_auth": "none"},
			"refresh_token": s.Vault.Seed(),
		},
		"acme-business": {
			"provider": map[string]any{
				"grant": "refresh_token", "body": "form", "token_url": s.Rotating.URL(),
				"client_id": RotatingClientID, "client_secret": RotatingClientSecret, "client_auth": "basic",
				"scope": RotatingScope, "reuse_grace": "60s",
			},
			"refresh_token": s.Rotating.Seed(RotatingScope),
		},
	}
	for _, name := range DemoTokens {
		raw, err := json.Marshal(docs[name])
		if err != nil {
			return fmt.Errorf("localrun: seed %s: %w", name, err)
		}
		if _, err := s.Secrets.Create(ctx, secretname.Private(s.Prefix, name), token.Secret(raw)); err != nil {
			return fmt.Errorf("localrun: seed %s: %w", name, err)
		}
	}
	return nil
}

// Exports are the shell lines that point the aws CLI, tokenctl and the SDKs at this stack.
func (s *Stack) Exports() []string {
	return []string{
		fmt.Sprintf("export AWS_REGION=%s AWS_DEFAULT_REGION=%s AWS_ACCESS_KEY_ID=%s AWS_SECRET_ACCESS_KEY=%s AWS_EC2_METADATA_DISABLED=true",
			awsemu.Region, awsemu.Region, awsemu.AccessKeyID, awsemu.SecretAccessKey),
		"unset AWS_PROFILE AWS_SESSION_TOKEN",
		"export AWS_ENDPOINT_URL=" + s.AWS.URL,
		"export AWS_ENDPOINT_URL_LAMBDA=" + s.Function.URL,
		fmt.Sprintf("export STATE_TABLE=%s SECRET_PREFIX=%s REFRESHER_FUNCTION=%s", s.Table, s.Prefix, rie.FunctionName),
	}
}

func orDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}

func closeErr(f func()) func() error {
	return func() error { f(); return nil }
}
