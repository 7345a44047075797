package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/lambda"
	lambdatypes "github.com/aws/aws-sdk-go-v2/service/lambda/types"
)

// invoker is the part of *lambda.Client that refresh uses.
type invoker interface {
	Invoke(ctx context.Context, in *lambda.InvokeInput, optFns ...func(*lambda.Options)) (*lambda.InvokeOutput, error)
}

// refreshRequest is the refresher's direct-invoke event (DESIGN.md §4).
type refreshRequest struct {
	Tokens []string `json:"tokens"`
	Force  bool     `json:"force"`
}

// refreshReport is the refresher's answer: one row per token, never a secret.
type refreshReport struct {
	RequestID string         `json:"request_id"`
	Tokens    []refreshRow   `json:"tokens"`
	Summary   map[string]int `json:"summary"`
}

type refreshRow struct {
	Name       string `json:"name"`
	Outcome    string `json:"outcome"`
	ExpiresAt  string `json:"expires_at"`
	Generation int64  `json:"generation"`
	Error      string `json:"error"`
}

// functionError is the payload Lambda returns when the handler returned an error.
type functionError struct {
	Message string `json:"errorMessage"`
	Type    string `json:"errorType"`
}

// refresh invokes the refresher synchronously for the named tokens and prints its report.
// It fails when the function returned an error (any token failed, or a bad event).
func (a *app) refresh(ctx context.Context, args []string) int {
	fs := a.flagSet("refresh")
	force := fs.Bool("force", false, "refresh even when not due")
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
	lc, err := a.invoker(ctx)
	if err != nil {
		a.errorf("refresh", "%v", err)
		return exitFail
	}
	return a.invoke(ctx, lc, refreshRequest{Tokens: names, Force: *force}, *asJSON)
}

func (a *app) invoke(ctx context.Context, lc invoker, req refreshRequest, asJSON bool) int {
	payload, err := json.Marshal(req)
	if err != nil {
		a.errorf("refresh", "%v", err)
		return exitFail
	}
	out, err := lc.Invoke(ctx, &lambda.InvokeInput{
		FunctionName:   aws.String(a.opts.function),
		InvocationType: lambdatypes.InvocationTypeRequestResponse,
		Payload:        payload,
	})
	if err != nil {
		a.errorf("refresh", "invoke %s: %v", a.opts.function, err)
		return exitFail
	}
	if out.FunctionError != nil {
		var fe functionError
		if json.Unmarshal(out.Payload, &fe) != nil || fe.Message == "" {
			fe.Message = strings.TrimSpace(string(out.Payload))
		}
		a.errorf("refresh", "%s returned an error (%s): %s", a.opts.function, aws.ToString(out.FunctionError), oneLine(fe.Message, 2000))
		return exitFail
	}
	if asJSON {
		var b bytes.Buffer
		if err := json.Indent(&b, out.Payload, "", "  "); err != nil {
			a.errorf("refresh", "%s answered with something other than JSON", a.opts.function)
			return exitFail
		}
		fmt.Fprintln(a.stdout, b.String())
		return exitOK
	}
	var rep refreshReport
	if err := json.Unmarshal(out.Payload, &rep); err != nil {
		a.errorf("refresh", "%s answered with something other than a report", a.opts.function)
		return exitFail
	}
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
	return exitOK
}
