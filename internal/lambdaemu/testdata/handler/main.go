// Command handler is a Lambda function for lambdaemu's tests. The event's
// "mode" picks a behaviour; TEST_HANDLER_INIT makes init fail.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"
)

// ConfigError gives the function error a recognisable errorType.
type ConfigError struct{ Msg string }

func (e *ConfigError) Error() string { return e.Msg }

type event struct {
	Mode    string `json:"mode"`
	Message string `json:"message"`
	Code    int    `json:"code"`
}

// Context is what mode "context" reports about the invocation.
type Context struct {
	RequestID    string            `json:"request_id"`
	FunctionARN  string            `json:"function_arn"`
	DeadlineMS   int64             `json:"deadline_ms"`
	TraceID      string            `json:"trace_id"`
	FunctionName string            `json:"function_name"`
	LogGroup     string            `json:"log_group"`
	Env          map[string]string `json:"env"`
	Cwd          string            `json:"cwd"`
}

func main() {
	switch os.Getenv("TEST_HANDLER_INIT") {
	case "error":
		postInitError()
		os.Exit(1)
	case "exit":
		fmt.Fprintln(os.Stderr, "init: exiting on purpose")
		os.Exit(3)
	}
	lambda.Start(handle)
}

func postInitError() {
	body := []byte(`{"errorMessage":"STATE_TABLE is not set","errorType":"InitConfigError"}`)
	url := "http://" + os.Getenv("AWS_LAMBDA_RUNTIME_API") + "/2018-06-01/runtime/init/error"
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	req.Header.Set("Lambda-Runtime-Function-Error-Type", "InitConfigError")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	resp.Body.Close()
	fmt.Fprintln(os.Stderr, "init error posted:", resp.StatusCode)
}

func handle(ctx context.Context, raw json.RawMessage) (json.RawMessage, error) {
	var ev event
	if err := json.Unmarshal(raw, &ev); err != nil {
		return nil, err
	}
	lc, _ := lambdacontext.FromContext(ctx)
	switch ev.Mode {
	case "echo":
		return raw, nil
	case "error":
		return nil, &ConfigError{Msg: ev.Message}
	case "sleep":
		// Honours the deadline, as the refresher does: answers only when ctx ends.
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Hour):
			return nil, errors.New("slept an hour")
		}
	case "block":
		// The marker tells the test the handler is running; then it never answers.
		fmt.Printf("BLOCKING %s\n", lc.AwsRequestID)
		<-time.After(time.Hour)
		return nil, errors.New("blocked an hour")
	case "panic":
		panic(ev.Message)
	case "exit":
		os.Exit(ev.Code)
	case "context":
		deadline, _ := ctx.Deadline()
		trace, _ := ctx.Value("x-amzn-trace-id").(string)
		cwd, _ := os.Getwd()
		env := map[string]string{}
		for _, k := range []string{"AWS_REGION", "AWS_DEFAULT_REGION", "AWS_LAMBDA_LOG_FORMAT", "_HANDLER",
			"AWS_LAMBDA_FUNCTION_VERSION", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "AWS_LAMBDA_LOG_STREAM_NAME",
			"LAMBDA_TASK_ROOT", "TEST_EXTRA", "AWS_LAMBDA_RUNTIME_API"} {
			env[k] = os.Getenv(k)
		}
		return json.Marshal(Context{
			RequestID:    lc.AwsRequestID,
			FunctionARN:  lc.InvokedFunctionArn,
			DeadlineMS:   deadline.UnixMilli(),
			TraceID:      trace,
			FunctionName: lambdacontext.FunctionName,
			LogGroup:     lambdacontext.LogGroupName,
			Env:          env,
			Cwd:          cwd,
		})
	}
	return nil, fmt.Errorf("unknown mode %q", ev.Mode)
}
