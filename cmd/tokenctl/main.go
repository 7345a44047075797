// Command tokenctl is the operator CLI for token-refresher: it seeds and inspects private
// token documents, shows the state table, and invokes the refresher on demand. It never
// prints a secret value.
package main

import (
	"context"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run is tokenctl with the process's stdin and environment and the SDK's default
// configuration (AWS_PROFILE, AWS_REGION, AWS_ENDPOINT_URL, …).
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	a := &app{
		stdin:  os.Stdin,
		stdout: stdout,
		stderr: stderr,
		getenv: os.Getenv,
		now:    time.Now,
		loadAWS: func(ctx context.Context) (aws.Config, error) {
			return config.LoadDefaultConfig(ctx)
		},
	}
	return a.run(ctx, args)
}
