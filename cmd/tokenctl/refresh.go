package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	lambdatypes "github.com/aws/aws-sdk-go-v2/service/lambda/types"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	smtypes "github.com/aws/aws-sdk-go-v2/service/secretsmanager/types"

	"github.com/seed-502fa48b/token-refresher/pkg/invocation"
)

// describer is the part of *secretsmanager.Client that tells whether a token exists.
type describer interface {
	DescribeSecret(ctx context.Context, in *secretsmanager.DescribeSecretInput, optFns ...func(*secretsmanager.Options)) (*secretsmanager.DescribeSecretOutput, error)
}

// refresh invokes the refresher synchronously for the named tokens and prints its report.
// Unknown names are refused before anything is invoked.
func (a *app) refresh(ctx context.Context, args []string) int {
	fs := a.flagSet("refresh")
	force := fs.Bool("force", false, "refresh even when not due (never beyond the write budget)")
	asJSON := fs.Bool("json", false, "print the function's report as JSON")
	names, code, ok := parse(fs, args, "refresh NAME... [--force] [--json]")
	if !ok {
		return code
	}
	if len(names) == 0 {
		a.errorf("refresh", "want at least one token NAME")
		return exitUsage
	}
	for _, n := range names {
		if err := checkName(n); err != nil {
			a.errorf("refresh", "%v", err)
			return exitUsage
		}
	}
	if a.opts.function == "" {
		a.errorf("refresh", "no function: pass --function or set REFRESHER_FUNCTION")
		return exitUsage
	}
	sm, err := a.secretsClient(ctx)
	if err != nil {
		a.errorf("refresh", "%s", a.explainAWS(err, a.functionResource()))
		return exitFail
	}
	if code := a.checkExist(ctx, "refresh", sm, names); code != exitOK {
		return code
	}
	return a.invoke(ctx, "refresh", invocation.Request{Tokens: names, Force: *force}, *asJSON)
}

// checkExist refuses names that have no private secret: the function would only report
// them invalid_config, and a typo deserves its own answer. A caller who may not describe
// secrets is let through (the function still reports it).
func (a *app) checkExist(ctx context.Context, cmd string, sm describer, names []string) int {
	var missing []string
	for _, n := range names {
		_, err := sm.DescribeSecret(ctx, &secretsmanager.DescribeSecretInput{SecretId: aws.String(a.privateName(n))})
		var nf *smtypes.ResourceNotFoundException
		switch {
		case errors.As(err, &nf):
			missing = append(missing, n)
		case err != nil:
			fmt.Fprintf(a.stderr, "tokenctl %s: warning: cannot check that %s exists: %s\n", cmd, n, a.explainAWS(err, a.secretResource(a.privateName(n))))
		}
	}
	if len(missing) > 0 {
		secrets := make([]string, len(missing))
		for i, n := range missing {
			secrets[i] = a.privateName(n)
		}
		a.errorf(cmd, "unknown token(s) %s: no private secret %s (seed it first: tokenctl seed NAME --file DOC.json); nothing invoked",
			strings.Join(missing, ", "), strings.Join(secrets, ", "))
		return exitNotFound
	}
	return exitOK
}

// invoke sends req to the function and prints its report; the exit code follows the
// report's worst outcome.
func (a *app) invoke(ctx context.Context, cmd string, req invocation.Request, asJSON bool) int {
	cfg, err := a.awsConfig(ctx)
	if err != nil {
		a.errorf(cmd, "%s", a.explainAWS(err, a.functionResource()))
		return exitFail
	}
	lc := lambda.NewFromConfig(cfg)
	payload, err := json.Marshal(req)
	if err != nil {
		a.errorf(cmd, "%v", err)
		return exitFail
	}
	out, err := lc.Invoke(ctx, &lambda.InvokeInput{
		FunctionName:   aws.String(a.opts.function),
		InvocationType: lambdatypes.InvocationTypeRequestResponse,
		Payload:        payload,
	})
	if err != nil {
		a.errorf(cmd, "invoke: %s", a.explainAWS(err, a.functionResource()))
		return exitFail
	}
	var rep invocation.Report
	repErr := json.Unmarshal(out.Payload, &rep)
	if out.FunctionError != nil {
		var fe invocation.FunctionError
		if json.Unmarshal(out.Payload, &fe) != nil || fe.Message == "" {
			fe.Message = strings.TrimSpace(string(out.Payload))
		}
		a.errorf(cmd, "%s returned an error (%s): %s", a.opts.function, aws.ToString(out.FunctionError), oneLine(fe.Message, 2000))
		return exitFail
	}
	if asJSON {
		var b bytes.Buffer
		if err := json.Indent(&b, out.Payload, "", "  "); err != nil {
			a.errorf(cmd, "%s answered with something other than JSON", a.opts.function)
			return exitFail
		}
		fmt.Fprintln(a.stdout, b.String())
	} else {
		if repErr != nil {
			a.errorf(cmd, "%s answered with something other than a report", a.opts.function)
			return exitFail
		}
		a.writeReport(rep)
	}
	if repErr != nil {
		return exitOK // --json of a non-report: handed through as it is
	}
	return reportExit(rep)
}

func (a *app) writeReport(rep invocation.Report) {
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tOUTCOME\tEXPIRES_AT\tGENERATION\tERROR")
	for _, r := range rep.Tokens {
		gen := "-"
		if r.Generation != 0 {
			gen = fmt.Sprint(r.Generation)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Name, r.Outcome, dash(r.ExpiresAt), gen, dash(oneLine(r.Error, 120)))
	}
	_ = tw.Flush()
	if len(rep.Summary) > 0 {
		keys := make([]string, 0, len(rep.Summary))
		for k := range rep.Summary {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = fmt.Sprintf("%s=%d", k, rep.Summary[k])
		}
		fmt.Fprintf(a.stdout, "summary: %s", strings.Join(parts, " "))
		if rep.RequestID != "" {
			fmt.Fprintf(a.stdout, " (request %s)", rep.RequestID)
		}
		fmt.Fprintln(a.stdout)
	}
}

// reportExit is the exit code of a report: failed, then needs_reauth, then invalid_config.
func reportExit(rep invocation.Report) int {
	code := exitOK
	for _, r := range rep.Tokens {
		code = worse(code, outcomeExit(r.Outcome))
	}
	return code
}

func outcomeExit(outcome string) int {
	switch outcome {
	case invocation.OutcomeFailed:
		return exitFail
	case invocation.OutcomeNeedsReauth:
		return exitNeedsReauth
	case invocation.OutcomeInvalidConfig:
		return exitInvalid
	}
	return exitOK
}

// worse orders exit codes by what an operator must see first.
func worse(a, b int) int {
	rank := map[int]int{exitOK: 0, exitInvalid: 1, exitNeedsReauth: 2, exitNotFound: 3, exitFail: 4}
	if rank[b] > rank[a] {
		return b
	}
	return a
}
