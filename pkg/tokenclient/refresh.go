package tokenclient

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/lambda"
	"github.com/aws/aws-sdk-go-v2/service/lambda/types"
)

// refreshOnce invokes the refresher for the expired token d unless that was already
// done for this very token (same generation and expires_at). Concurrent callers for
// the same token share one invoke. did reports whether an invoke for d has run
// (by this caller or one it joined), i.e. whether re-reading can help.
func (c *Client) refreshOnce(ctx context.Context, d *accessDoc) (did bool, err error) {
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

// refreshResult is the part of a Lambda error payload worth repeating; the
// refresher never puts a secret in it.
type refreshResult struct {
	ErrorType    string `json:"errorType"`
	ErrorMessage string `json:"errorMessage"`
}

func (c *Client) invoke(ctx context.Context, d *accessDoc) error {
	ctx, cancel := context.WithTimeout(ctx, invokeTimeout)
	defer cancel()
	payload, err := json.Marshal(struct {
		Tokens []string `json:"tokens"`
	}{Tokens: []string{c.tokenName}})
	if err != nil {
		return fmt.Errorf("tokenclient: invoke %s: %w", c.functionName, err)
	}
	c.log.InfoContext(ctx, "tokenclient: published token expired, invoking the refresher",
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
		var r refreshResult
		_ = json.Unmarshal(out.Payload, &r) // best effort: the message is only decoration
		msg := r.ErrorMessage
		if len(msg) > 300 {
			msg = msg[:300] + "…"
		}
		return fmt.Errorf("tokenclient: invoke %s: function error %s: %s %s",
			c.functionName, *out.FunctionError, r.ErrorType, msg)
	}
	return nil
}
