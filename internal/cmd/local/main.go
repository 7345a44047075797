// Command local runs the refresher on this machine without AWS or Docker: moto, the state
// table as template.yaml declares it, the three seed-provider simulators and the real
// bootstrap under AWS's Lambda Runtime Interface Emulator.
//
//	local                       prints export lines for tokenctl/aws/SDKs, runs until Ctrl-C (make local)
//	local -invoke events/X.json posts one event, prints the answer and stops (make invoke)
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/seed-502fa48b/token-refresher/internal/localrun"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "local: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("local", flag.ContinueOnError)
	fs.SetOutput(stderr)
	event := fs.String("invoke", "", "post this event file to the function, print the answer and stop")
	seed := fs.Bool("seed", true, "create one private secret per seed profile ("+strings.Join(localrun.DemoTokens, ", ")+")")
	addr := fs.String("addr", "", "invoke listener host:port (default: a free loopback port)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	var payload []byte
	if *event != "" {
		var err error
		if payload, err = os.ReadFile(*event); err != nil {
			return fmt.Errorf("-invoke: %w", err)
		}
		if !json.Valid(payload) {
			return fmt.Errorf("-invoke: %s is not JSON", *event)
		}
	}

	// Progress and the function's logs go to stderr; stdout carries only the answer or the exports.
	stack, err := localrun.Start(ctx, localrun.Options{Progress: stderr, FunctionLog: stderr, EmulatorLog: stderr, RIEAddr: *addr})
	if err != nil {
		return err
	}
	defer func() {
		fmt.Fprintln(stderr, "▶ stopping the function, the simulators and moto")
		_ = stack.Close()
	}()
	if *seed {
		if err := stack.SeedDemoTokens(ctx); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "  seeded %sprivate/{%s} (default policies)\n", stack.Prefix, strings.Join(localrun.DemoTokens, ","))
	}

	if payload != nil {
		fmt.Fprintf(stderr, "▶ POST %s < %s\n", stack.Function.InvokeURL(), *event)
		res, err := stack.Function.Invoke(ctx, payload)
		if err != nil {
			return err
		}
		if res.Err != nil {
			fmt.Fprintf(stdout, "{\"errorType\":%q,\"errorMessage\":%q}\n", res.Err.Type, res.Err.Message)
			return fmt.Errorf("the function returned an error (%dms)", res.Duration.Milliseconds())
		}
		var pretty bytes.Buffer
		if json.Indent(&pretty, res.Payload, "", "  ") != nil {
			pretty.Reset()
			pretty.Write(res.Payload)
		}
		fmt.Fprintf(stdout, "%s\n", pretty.Bytes())
		fmt.Fprintf(stderr, "  answered in %dms\n", res.Duration.Milliseconds())
		return nil
	}

	printBanner(stdout, stack)
	select {
	case <-ctx.Done():
		return nil
	case <-stack.Function.Done():
		return errors.New("aws-lambda-rie exited")
	}
}

func printBanner(w io.Writer, s *localrun.Stack) {
	fmt.Fprintf(w, `
# Running. In another shell, paste these lines:
%s

# Seed-provider simulators (local credentials, safe to show):
#   Sahamati   token_url %s  entity_id %s  entity_secret %s
#   vault.ist  token_url %s
#   rotating   token_url %s  authorize_url %s
#              client_id %s  client_secret %s  scope %q
#
# Try: go run ./cmd/tokenctl status
#      go run ./cmd/tokenctl refresh %s
#      aws lambda invoke --function-name function --payload '{"ensure":["acme-business"]}' --cli-binary-format raw-in-base64-out /dev/stdout
# Ctrl-C stops everything.
`,
		strings.Join(s.Exports(), "\n"),
		s.Sahamati.URL(), localrun.SahamatiEntityID, localrun.SahamatiEntitySecret,
		s.Vault.URL(),
		s.Rotating.URL(), s.Rotating.AuthorizeURL(),
		localrun.RotatingClientID, localrun.RotatingClientSecret, localrun.RotatingScope,
		localrun.DemoTokens[0])
}
