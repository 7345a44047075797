package tokenclient

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"

	"github.com/seed-502fa48b/token-refresher/pkg/invocation"
)

// ensureOnce invokes the refresher with {"ensure":[name]} for the published token d unless
// that was already done for this very token (same generation and expires_at): at most one
// invoke per expiry per process. Concurrent callers for the same token share one invoke.
// did reports whether an invoke for d has run (by this caller or one it joined), i.e.
// whether re-reading can help.
func (c *Client) ensureOnce(ctx context.Context, d *accessDoc) (did bool, err error) {
	key := strconv.FormatInt(d.Generation, 10) + "@" + d.expiresAt.Format(time.RFC3339Nano)
	c.mu.Lock()
	done := c.invokedFor == key
	c.mu.Unlock()
	if done {
		return false, nil
	}
	_, err, _ = c.invokes.Do(key, func() (any, error) {
		c.mu.Lock()
		if c.invokedFor == key { // a flight that just ended did it
			c.mu.Unlock()
			return nil, nil
		}
		c.invokedFor = key
		c.mu.Unlock()
		return nil, c.invoke(ctx, d)
	})
	return true, err
}

func (c *Client) invoke(ctx context.Context, d *accessDoc) error {
	ctx, cancel := context.WithTimeout(ctx, invokeTimeout)
	defer cancel()
	payload, err := json.Marshal(invocation.Request{Ensure: []string{c.tokenName}})
	if err != nil {
		return fmt.Errorf("tokenclient: invoke %s: %w", c.functionName, err)
	}
	c.log.InfoContext(ctx, "tokenclient: published token inside its margin, asking the refresher to ensure it",
		"secret", c.secretName, "token", c.tokenName, "function", c.functionName,
		"generation", d.Generation, "expires_at", d.expiresAt)
	fn := c.functionName
	out, err := c.invoker.Invoke(ctx, &lambda.InvokeInput{
		FunctionName:   &fn,
		InvocationType: types.InvocationTypeRequestResponse,
		Payload:        payload,
	})
	if err != nil {
		return fmt.Errorf("tokenclient: invoke %s: %w", c.functionName, err)
	}
	if out.FunctionError != nil {
		var r invocation.FunctionError
		_ = json.Unmarshal(out.Payload, &r) // best effort: the message is only decoration
		return fmt.Errorf("tokenclient: invoke %s: function error %s: %s %s",
			c.functionName, *out.FunctionError, r.Type, cut(r.Message, 300))
	}
	// The report says what the refresher did; the secret, re-read next, says what is
	// published. Only an unusable row is worth an error.
	var rep invocation.Report
	if err := json.Unmarshal(out.Payload, &rep); err != nil {
		return fmt.Errorf("tokenclient: invoke %s: the answer is not a report: %w", c.functionName, err)
	}
	for _, row := range rep.Tokens {
		if row.Name != c.tokenName {
			continue
		}
		c.log.InfoContext(ctx, "tokenclient: ensure answered",
			"token", c.tokenName, "outcome", row.Outcome, "generation", row.Generation, "expires_at", row.ExpiresAt)
		if row.Outcome == invocation.OutcomeFailed {
			return fmt.Errorf("tokenclient: ensure %s: %s: %s", c.tokenName, row.Outcome, cut(row.Error, 300))
		}
	}
	return nil
}

func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
