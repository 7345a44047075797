// Command demo runs the main job on this machine: moto for AWS, the three seed-provider
// simulators, and the real bootstrap under AWS's Lambda Runtime Interface Emulator (the
// emulator `sam local invoke` uses), with default policies. It invokes the function with
// events/scheduled.json twice (refreshed, then not_due), then asks for the 15-minute token
// the way a consumer does ({"ensure":["acme-business"]}). It stops everything it started.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/seed-502fa48b/token-refresher/internal/bootstrapbin"
	"github.com/seed-502fa48b/token-refresher/internal/localrun"
	"github.com/seed-502fa48b/token-refresher/internal/rie"
	"github.com/seed-502fa48b/token-refresher/pkg/invocation"
	"github.com/seed-502fa48b/token-refresher/pkg/secretname"
)

// runDeadline bounds the demo itself, after the builds (which have none: a first build on
// an empty cache takes minutes and is not the demo's fault).
const runDeadline = 2 * time.Minute

var errDeadline = fmt.Errorf("demo: timed out: the demo did not finish within %s after the build", runDeadline)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "demo failed: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, out io.Writer) error {
	started := time.Now()
	root, err := bootstrapbin.ModuleRoot(ctx)
	if err != nil {
		return err
	}
	boot, emu, err := localrun.Build(ctx, out)
	if err != nil {
		return err
	}

	ctx, cancel := context.WithTimeoutCause(ctx, runDeadline, errDeadline)
	defer cancel()
	err = demo(ctx, out, root, localrun.Options{Bootstrap: boot, RIE: emu}, time.Since(started))
	if cause := context.Cause(ctx); err != nil && errors.Is(cause, errDeadline) {
		return fmt.Errorf("%w (last error: %v)", cause, err)
	}
	return err
}

func demo(ctx context.Context, out io.Writer, root string, o localrun.Options, buildTime time.Duration) error {
	started := time.Now()
	logDir := filepath.Join(root, "build", "demo")
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return err
	}
	logPath := filepath.Join(logDir, "function.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logFile.Close()

	o.Progress, o.FunctionLog, o.EmulatorLog = out, logFile, logFile
	stack, err := localrun.Start(ctx, o)
	if err != nil {
		return err
	}
	defer stack.Close()
	if err := stack.SeedDemoTokens(ctx); err != nil {
		return err
	}
	fmt.Fprintf(out, "  created 3 private secrets under %s, default policies: %s\n", secretname.PrivatePrefix(stack.Prefix), strings.Join(localrun.DemoTokens, ", "))
	sm := secretsmanager.NewFromConfig(stack.AWSConfig)

	event, err := os.ReadFile(filepath.Join(root, "events", "scheduled.json"))
	if err != nil {
		return err
	}
	for i, title := range []string{"first run: every token is new", "second run, seconds later"} {
		fmt.Fprintf(out, "\n▶ invoking the function with events/scheduled.json (a reconcile) — %s\n", title)
		rep, d, err := invoke(ctx, stack.Function, event)
		if err != nil {
			return err
		}
		printReport(out, rep, d)
		if i == 0 {
			if err := printAccess(ctx, out, sm, stack.Prefix); err != nil {
				return err
			}
		}
	}
	if err := printSchedule(ctx, out, dynamodb.NewFromConfig(stack.AWSConfig), stack.Table); err != nil {
		return err
	}

	// The 15-minute token is not rotated by every run; a consumer asks for it when it needs one.
	ensure := []byte(`{"ensure":["acme-business"]}`)
	fmt.Fprintf(out, "\n▶ a consumer asks for the 15-minute token: %s\n", ensure)
	rep, d, err := invoke(ctx, stack.Function, ensure)
	var ferr *rie.FunctionError
	switch {
	case errors.As(err, &ferr):
		fmt.Fprintf(out, "  the function does not answer ensure in this build: %v\n", ferr)
	case err != nil:
		return err
	default:
		printReport(out, rep, d)
		for _, r := range rep.Tokens {
			if r.ExpiresAt != "" {
				if t, err := time.Parse(time.RFC3339, r.ExpiresAt); err == nil {
					fmt.Fprintf(out, "  %s: %s — the published access token is valid for another %s; the consumer reads %s\n",
						r.Name, r.Outcome, time.Until(t).Round(time.Second), secretname.Access(stack.Prefix, r.Name))
					fmt.Fprintln(out, "  (ensure refreshes only once less than half of the token's life is left; a consumer asking then gets a new one)")
				}
			}
		}
	}

	fmt.Fprintf(out, "\nprovider requests: Sahamati %d, vault.ist %d, rotating %d\n",
		stack.Sahamati.Requests(), stack.Vault.Requests(), stack.Rotating.Requests())
	fmt.Fprintf(out, "function log (JSON; the emulator adds START/END/REPORT lines): %s\n", logPath)
	fmt.Fprintf(out, "done: build %.1fs, demo %.1fs; stopping the function, the simulators and moto\n",
		buildTime.Seconds(), time.Since(started).Seconds())
	return nil
}

// invoke returns the report, or an error wrapping *rie.FunctionError when the function
// returned an error.
func invoke(ctx context.Context, fn *rie.Emulator, event []byte) (*invocation.Report, time.Duration, error) {
	res, err := fn.Invoke(ctx, event)
	if err != nil {
		return nil, 0, err
	}
	if res.Err != nil {
		return nil, res.Duration, fmt.Errorf("function error: %w", res.Err)
	}
	var rep invocation.Report
	if err := json.Unmarshal(res.Payload, &rep); err != nil {
		return nil, res.Duration, fmt.Errorf("function answer %q: %w", res.Payload, err)
	}
	return &rep, res.Duration, nil
}

func printReport(out io.Writer, rep *invocation.Report, d time.Duration) {
	tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  TOKEN\tOUTCOME\tGENERATION\tEXPIRES AT\tERROR")
	for _, r := range rep.Tokens {
		fmt.Fprintf(tw, "  %s\t%s\t%d\t%s\t%s\n", r.Name, r.Outcome, r.Generation, r.ExpiresAt, r.Error)
	}
	_ = tw.Flush()
	fmt.Fprintf(out, "  (%d tokens; invocation %dms)\n", len(rep.Tokens), d.Milliseconds())
}

// access is the consumer contract of an access secret (DESIGN §2).
type access struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresAt   string `json:"expires_at"`
	Generation  int64  `json:"generation"`
	Status      string `json:"status"`
}

func printAccess(ctx context.Context, out io.Writer, sm *secretsmanager.Client, prefix string) error {
	fmt.Fprintf(out, "\n▶ access secrets (what consumers read; tokens shortened)\n")
	tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  SECRET\tACCESS_TOKEN\tTYPE\tEXPIRES AT\tGEN\tSTATUS")
	for _, name := range localrun.DemoTokens {
		id := secretname.Access(prefix, name)
		v, err := sm.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String(id)})
		if err != nil {
			fmt.Fprintf(tw, "  %s\t(not published)\t\t\t\t\n", id)
			continue
		}
		var a access
		if err := json.Unmarshal([]byte(aws.ToString(v.SecretString)), &a); err != nil {
			return fmt.Errorf("%s: not the access document", id)
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%d\t%s\n", id, shorten(a.AccessToken), a.TokenType, a.ExpiresAt, a.Generation, a.Status)
	}
	return tw.Flush()
}

// printSchedule shows when each token is next refreshed by the schedule: the record's
// due_at, the sort key of the sweep's index. Each token's time comes from its own lifetime.
func printSchedule(ctx context.Context, out io.Writer, ddb *dynamodb.Client, table string) error {
	fmt.Fprintf(out, "\n▶ when the schedule refreshes each token next (due_at in the state table; the sweep runs every 5 min)\n")
	tw := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  TOKEN\tNEXT SCHEDULED REFRESH\tIN")
	for _, name := range localrun.DemoTokens {
		it, err := ddb.GetItem(ctx, &dynamodb.GetItemInput{
			TableName:      aws.String(table),
			Key:            map[string]types.AttributeValue{"pk": &types.AttributeValueMemberS{Value: "token#" + name}},
			ConsistentRead: aws.Bool(true),
		})
		if err != nil {
			return fmt.Errorf("state table: %w", err)
		}
		n, ok := it.Item["due_at"].(*types.AttributeValueMemberN)
		if !ok {
			fmt.Fprintf(tw, "  %s\t(not scheduled)\t\n", name)
			continue
		}
		var secs int64
		if _, err := fmt.Sscan(n.Value, &secs); err != nil {
			return fmt.Errorf("state table: %s: due_at %q: %w", name, n.Value, err)
		}
		at := time.Unix(secs, 0).UTC()
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", name, at.Format(time.RFC3339), time.Until(at).Round(time.Minute))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(out, "  24 h tokens fall due at half their life. The 15-minute token is not rotated for nobody: the")
	fmt.Fprintln(out, "  schedule only keeps its single-use refresh token alive; consumers get fresh ones with ensure.")
	return nil
}

// shorten shows enough of a token to tell two apart, never enough to use it.
func shorten(raw string) string {
	if len(raw) <= 10 {
		return strings.Repeat("•", len(raw))
	}
	return raw[:6] + "…(" + fmt.Sprint(len(raw)) + " chars)"
}
