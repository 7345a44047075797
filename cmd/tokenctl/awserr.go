package main

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"

	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// errNoRegion and errNoCredentials are the two AWS setup mistakes tokenctl checks
// before its first call, because the SDK reports them late and obscurely (a missing
// region surfaces as an HTML parse error from a guessed endpoint).
var (
	errNoRegion      = errors.New("no AWS region: set AWS_REGION (or region in the AWS_PROFILE's config), e.g. export AWS_REGION=eu-west-1")
	errNoCredentials = errors.New("no AWS credentials: set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (locally: the values `make local` prints)")
)

// resource names what an AWS call was about, for one-line errors.
type resource struct {
	kind string // "state table", "secret", "function"
	name string
	env  string // where the name came from, for the fix ("--table / STATE_TABLE")
}

// explainAWS turns an AWS error into one line that names the resource, the region and
// the likely fix. Service messages carry names and ids, never secret values.
func (a *app) explainAWS(err error, r resource) string {
	region := "(no region)"
	if a.cfg != nil && a.cfg.Region != "" {
		region = a.cfg.Region
	}
	what := r.kind
	if r.name != "" {
		what += " " + r.name
	}
	if errors.Is(err, errNoRegion) || errors.Is(err, errNoCredentials) {
		return err.Error()
	}
	var uerr *url.Error
	var nerr net.Error
	if errors.As(err, &uerr) && (errors.As(err, &nerr) || strings.Contains(uerr.Err.Error(), "connection refused")) {
		host := uerr.URL
		if u, perr := url.Parse(uerr.URL); perr == nil {
			host = u.Scheme + "://" + u.Host
		}
		return fmt.Sprintf("%s: cannot reach %s (region %s): %s; check AWS_ENDPOINT_URL/AWS_REGION and the network (locally: is `make local` still running?)",
			what, host, region, shortNetError(uerr.Err))
	}
	var api smithy.APIError
	if errors.As(err, &api) {
		code, msg := api.ErrorCode(), oneLine(api.ErrorMessage(), 300)
		switch {
		case code == "ResourceNotFoundException":
			fix := "check the name"
			if r.env != "" {
				fix = "check " + r.env
			}
			return fmt.Sprintf("%s not found in region %s: %s and AWS_REGION (%s)", what, region, fix, code)
		case code == "AccessDeniedException" || code == "AccessDenied" || code == "UnauthorizedOperation":
			return fmt.Sprintf("%s (region %s): access denied: %s; use a role allowed to do this (for private secrets: the admin role of their resource policy)", what, region, msg)
		case code == "UnrecognizedClientException" || code == "InvalidSignatureException" || code == "ExpiredTokenException" || code == "InvalidClientTokenId":
			return fmt.Sprintf("%s (region %s): the AWS credentials were refused (%s): refresh them (aws sso login, new keys) or check AWS_PROFILE", what, region, code)
		case strings.Contains(code, "Throttl"):
			return fmt.Sprintf("%s (region %s): throttled by AWS (%s); try again in a moment", what, region, code)
		}
		var herr *smithyhttp.ResponseError
		status := ""
		if errors.As(err, &herr) {
			status = fmt.Sprintf(" HTTP %d", herr.HTTPStatusCode())
		}
		return fmt.Sprintf("%s (region %s):%s %s: %s", what, region, status, code, msg)
	}
	if strings.Contains(err.Error(), "failed to retrieve credentials") || strings.Contains(err.Error(), "failed to refresh cached credentials") {
		return errNoCredentials.Error()
	}
	return fmt.Sprintf("%s (region %s): %s", what, region, oneLine(err.Error(), 300))
}

func shortNetError(err error) string {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Op + ": " + op.Err.Error()
	}
	var dns *net.DNSError
	if errors.As(err, &dns) {
		return "no such host " + dns.Name
	}
	return oneLine(err.Error(), 200)
}
