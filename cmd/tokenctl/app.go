package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/seed-502fa48b/token-refresher/pkg/ledger"
	"github.com/seed-502fa48b/token-refresher/pkg/secretstore"
)

// Exit codes.
const (
	exitOK    = 0
	exitFail  = 1 // bad document, AWS error, the function reported an error
	exitUsage = 2 // bad command line
)

const defaultPrefix = "token-refresher/"

// maxDocument is Secrets Manager's limit on a SecretString.
const maxDocument = 65536

// tokenName is the names the refresher accepts in a direct invoke
// (pkg/refresher/event.go); seeding any other name would make a token that
// `tokenctl refresh` cannot name.
var tokenName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@+=/-]{0,200}$`)

const usage = `usage: tokenctl [flags] COMMAND [ARGS]

commands:
  seed NAME --file DOC.json          validate DOC and store it as <prefix>private/NAME: a new secret,
                                     or a new AWSCURRENT version that the refresher adopts (--file - reads stdin)
  status [NAME...] [--json]          token records from the state table
  show NAME [--json]                 the private document with secrets redacted, and its versions
  refresh NAME... [--force] [--json] invoke the refresher now and print its report
  validate --file DOC.json           check a private document offline
  template GRANT                     print a starter document; GRANT is one of
                                     refresh_token, refresh_token-json, client_credentials, sahamati_entity

flags (before or after the command):
  --prefix P     secret name prefix (env SECRET_PREFIX, default token-refresher/)
  --table T      state table (env STATE_TABLE)
  --function F   refresher function name or ARN (env REFRESHER_FUNCTION)

AWS access uses the SDK's default configuration: AWS_PROFILE, AWS_REGION, AWS_ENDPOINT_URL, ...
`

// app is tokenctl with its surroundings injected, so tests can drive every command.
type app struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
	now            func() time.Time
	loadAWS        func(ctx context.Context) (aws.Config, error)

	cfg  *aws.Config
	opts settings
}

// settings are the flags every command accepts.
type settings struct {
	prefix, table, function string
}

func (a *app) run(ctx context.Context, args []string) int {
	a.opts = settings{
		prefix:   envOr(a.getenv, "SECRET_PREFIX", defaultPrefix),
		table:    a.getenv("STATE_TABLE"),
		function: a.getenv("REFRESHER_FUNCTION"),
	}
	global := a.flagSet("tokenctl")
	global.Usage = func() { fmt.Fprint(a.stderr, usage) }
	if err := global.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	rest := global.Args()
	if len(rest) == 0 {
		fmt.Fprint(a.stderr, usage)
		return exitUsage
	}
	cmd, args := rest[0], rest[1:]
	switch cmd {
	case "seed":
		return a.seed(ctx, args)
	case "status":
		return a.status(ctx, args)
	case "show":
		return a.show(ctx, args)
	case "refresh":
		return a.refresh(ctx, args)
	case "validate":
		return a.validate(args)
	case "template":
		return a.template(args)
	case "help", "-h", "--help":
		fmt.Fprint(a.stdout, usage)
		return exitOK
	default:
		fmt.Fprintf(a.stderr, "tokenctl: unknown command %q\n\n%s", cmd, usage)
		return exitUsage
	}
}

func envOr(getenv func(string) string, key, def string) string {
	if v := getenv(key); v != "" {
		return v
	}
	return def
}

// flagSet returns a flag set with the common flags, defaulting to what is set so far.
func (a *app) flagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(a.stderr)
	fs.StringVar(&a.opts.prefix, "prefix", a.opts.prefix, "secret name prefix (env SECRET_PREFIX)")
	fs.StringVar(&a.opts.table, "table", a.opts.table, "state table (env STATE_TABLE)")
	fs.StringVar(&a.opts.function, "function", a.opts.function, "refresher function name or ARN (env REFRESHER_FUNCTION)")
	return fs
}

// parse parses flags anywhere among the arguments ("seed NAME --file x" as well as
// "seed --file x NAME"); everything after "--" is positional. It returns the positional
// arguments and, when parsing ends the command, its exit code.
func parse(fs *flag.FlagSet, args []string, synopsis string) ([]string, int, bool) {
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: tokenctl %s\n", synopsis)
		fs.PrintDefaults()
	}
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, exitOK, false
			}
			return nil, exitUsage, false
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, 0, true
		}
		// Parse stops at "--" (consumed) or at the first positional argument.
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), 0, true
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

func (a *app) errorf(cmd, format string, args ...any) {
	fmt.Fprintf(a.stderr, "tokenctl %s: %s\n", cmd, fmt.Sprintf(format, args...))
}

func (a *app) awsConfig(ctx context.Context) (aws.Config, error) {
	if a.cfg == nil {
		cfg, err := a.loadAWS(ctx)
		if err != nil {
			return aws.Config{}, fmt.Errorf("load AWS configuration: %w", err)
		}
		a.cfg = &cfg
	}
	return *a.cfg, nil
}

func (a *app) store(ctx context.Context) (*secretstore.Store, error) {
	cfg, err := a.awsConfig(ctx)
	if err != nil {
		return nil, err
	}
	return secretstore.New(secretsmanager.NewFromConfig(cfg)), nil
}

func (a *app) ledger(ctx context.Context) (*ledger.Ledger, error) {
	if a.opts.table == "" {
		return nil, errors.New("no state table: pass --table or set STATE_TABLE")
	}
	cfg, err := a.awsConfig(ctx)
	if err != nil {
		return nil, err
	}
	return ledger.New(dynamodb.NewFromConfig(cfg), ledger.Options{Table: a.opts.table, Now: a.now}), nil
}

func (a *app) invoker(ctx context.Context) (invoker, error) {
	cfg, err := a.awsConfig(ctx)
	if err != nil {
		return nil, err
	}
	return lambda.NewFromConfig(cfg), nil
}

// privateName is the private secret of token name (DESIGN.md §2).
func (a *app) privateName(name string) string { return a.opts.prefix + "private/" + name }

func checkName(name string) error {
	if !tokenName.MatchString(name) {
		return fmt.Errorf("%q is not a token name: letters, digits and ._@+=/- (first a letter or digit), at most 201 characters", name)
	}
	return nil
}

// readDocument reads --file (a path, or "-" for stdin), refusing anything larger than a
// secret can hold.
func (a *app) readDocument(path string) ([]byte, error) {
	var r io.Reader
	switch path {
	case "":
		return nil, errors.New("--file is required (a path, or - for stdin)")
	case "-":
		r = a.stdin
	default:
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	raw, err := io.ReadAll(io.LimitReader(r, maxDocument+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(raw) > maxDocument {
		return nil, fmt.Errorf("document: larger than the %d bytes a secret can hold", maxDocument)
	}
	return raw, nil
}

// oneLine keeps a table cell on one line.
func oneLine(s string, max int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); max > 0 && len(r) > max {
		s = string(r[:max-1]) + "…"
	}
	return s
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}
