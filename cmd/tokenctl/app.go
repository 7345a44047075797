package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/seed-502fa48b/token-refresher/pkg/invocation"
	"github.com/seed-502fa48b/token-refresher/pkg/ledger"
	"github.com/seed-502fa48b/token-refresher/pkg/secretname"
	"github.com/seed-502fa48b/token-refresher/pkg/secretstore"
)

// Exit codes (docs/tokenctl.md "Exit codes"). When several apply, the first in the
// order exitFail, exitNotFound, exitNeedsReauth, exitInvalid is returned.
const (
	exitOK          = 0
	exitFail        = 1 // AWS error, I/O error, the function failed or a token's outcome is failed
	exitUsage       = 2 // bad command line
	exitInvalid     = 3 // invalid document, or a token's outcome/status is invalid_config
	exitNeedsReauth = 4 // a token's outcome/status is needs_reauth: a person must re-authorise
	exitNotFound    = 5 // a named token has no private secret (and no record)
	exitRefused     = 6 // seed refused to replace a refresh token the chain has moved past
)

// maxDocument is Secrets Manager's limit on a SecretString.
const maxDocument = 65536

const usage = `usage: tokenctl [flags] COMMAND [ARGS]

commands:
  seed NAME --file DOC.json          validate DOC and store it as <prefix>private/NAME: a new secret,
                                     or a new AWSCURRENT version that the refresher adopts (--file - reads stdin);
                                     refuses a refresh token the chain has moved past unless --replace-refresh-token
  authorize NAME [--business CODE]   authorisation-code flow with PKCE for a refresh_token provider: prints the
                                     URL, catches the redirect on 127.0.0.1, stores the refresh token, invokes the refresher
  status [NAME...] [--json]          per token: status, next due, expiries, write budget, quota today, last error
  show NAME [--json]                 the private document with secrets redacted, and its versions
  refresh NAME... [--force] [--json] invoke the refresher now and print its report
  validate --file DOC.json           check a private document offline (strict: unknown fields, profile rules)
  template GRANT                     print a starter document; GRANT is one of
                                     refresh_token, refresh_token-json, client_credentials, sahamati_entity
  policy private                     print the resource policy tokenctl puts on private secrets
  policy table                       print the state table's resource policy (as the stack sets it)
  grant CONSUMER TOKEN... [--ensure] print an IAM policy letting role CONSUMER read exactly those access secrets

flags (before or after the command):
  --prefix P               secret name prefix (env SECRET_PREFIX, default token-refresher/)
  --table T                state table (env STATE_TABLE)
  --function F             refresher function name or ARN (env REFRESHER_FUNCTION)
  --refresher-role-arn A   the refresher's role (env TR_REFRESHER_ROLE_ARN) } private secrets tokenctl creates
  --admin-role-arn A       the administrators' role (env TR_ADMIN_ROLE_ARN) } are readable only by these two

exit codes: 0 ok, 1 error or a token failed, 2 usage, 3 invalid document or invalid_config,
4 needs_reauth, 5 unknown token, 6 refused (stale refresh token)

AWS access uses the SDK's default configuration: AWS_PROFILE, AWS_REGION, AWS_ENDPOINT_URL,
AWS_ENDPOINT_URL_LAMBDA, ...
`

// app is tokenctl with its surroundings injected, so tests can drive every command.
type app struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
	now            func() time.Time
	loadAWS        func(ctx context.Context) (aws.Config, error)

	// openBrowser shows a URL to the person at the keyboard; nil: print it only.
	openBrowser func(url string) error

	cfg  *aws.Config
	opts settings
}

// settings are the flags every command accepts.
type settings struct {
	prefix, table, function  string
	refresherRole, adminRole string
}

func (a *app) run(ctx context.Context, args []string) int {
	a.opts = a.envSettings()
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
	case "authorize":
		return a.authorize(ctx, args)
	case "policy":
		return a.policy(args)
	case "grant":
		return a.grant(args)
	case "help", "-h", "--help":
		fmt.Fprint(a.stdout, usage)
		return exitOK
	default:
		fmt.Fprintf(a.stderr, "tokenctl: unknown command %q\n\n%s", cmd, usage)
		return exitUsage
	}
}

// envSettings are the settings' defaults from the environment; flags override them.
func (a *app) envSettings() settings {
	return settings{
		prefix:        envOr(a.getenv, "SECRET_PREFIX", secretname.DefaultPrefix),
		table:         a.getenv("STATE_TABLE"),
		function:      a.getenv("REFRESHER_FUNCTION"),
		refresherRole: a.getenv("TR_REFRESHER_ROLE_ARN"),
		adminRole:     a.getenv("TR_ADMIN_ROLE_ARN"),
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
	fs.StringVar(&a.opts.refresherRole, "refresher-role-arn", a.opts.refresherRole, "the refresher's role ARN, for the resource policy of private secrets and the state table (env TR_REFRESHER_ROLE_ARN)")
	fs.StringVar(&a.opts.adminRole, "admin-role-arn", a.opts.adminRole, "the administrators' role ARN, for the resource policy of private secrets and the state table (env TR_ADMIN_ROLE_ARN)")
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

// awsConfig loads the SDK configuration once and checks the two things the SDK would
// otherwise report late and obscurely: a region and credentials.
func (a *app) awsConfig(ctx context.Context) (aws.Config, error) {
	if a.cfg == nil {
		cfg, err := a.loadAWS(ctx)
		if err != nil {
			return aws.Config{}, fmt.Errorf("load AWS configuration (AWS_PROFILE, AWS_CONFIG_FILE): %w", err)
		}
		if cfg.Region == "" {
			return aws.Config{}, errNoRegion
		}
		if cfg.Credentials == nil {
			return aws.Config{}, errNoCredentials
		}
		if _, err := cfg.Credentials.Retrieve(ctx); err != nil {
			return aws.Config{}, fmt.Errorf("%w (%s)", errNoCredentials, oneLine(err.Error(), 200))
		}
		a.cfg = &cfg
	}
	return *a.cfg, nil
}

func (a *app) secretsClient(ctx context.Context) (*secretsmanager.Client, error) {
	cfg, err := a.awsConfig(ctx)
	if err != nil {
		return nil, err
	}
	return secretsmanager.NewFromConfig(cfg), nil
}

func (a *app) store(ctx context.Context) (*secretstore.Store, error) {
	sm, err := a.secretsClient(ctx)
	if err != nil {
		return nil, err
	}
	return secretstore.New(sm), nil
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

// privateName is the private secret of token name (docs/design.md §2).
func (a *app) privateName(name string) string { return secretname.Private(a.opts.prefix, name) }

// checkName applies the refresher's name rule: seeding any other name would make a
// token the refresher never adopts and `tokenctl refresh` cannot name.
func checkName(name string) error {
	if !invocation.ValidName(name) {
		return fmt.Errorf("%q is not a token name: letters, digits and ._@+=/- (first a letter or digit), at most %d characters", name, invocation.MaxNameLen)
	}
	return nil
}

// tableResource and secretResource name what an AWS error was about.
func (a *app) tableResource() resource {
	return resource{kind: "state table", name: a.opts.table, env: "--table / STATE_TABLE"}
}

func (a *app) secretResource(name string) resource {
	return resource{kind: "secret", name: name, env: "the token name and --prefix / SECRET_PREFIX"}
}

func (a *app) functionResource() resource {
	return resource{kind: "function", name: a.opts.function, env: "--function / REFRESHER_FUNCTION"}
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
