// Command hello is the baseline for the init-cost benchmark: a Lambda function that builds
// the same AWS clients as the refresher's bootstrap the same way (config.LoadDefaultConfig,
// one client per service, the Lambda slog handler) and does nothing else.
package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/eventbridge"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
)

func main() {
	logger := slog.New(lambdacontext.NewLogHandler())
	cfg, err := config.LoadDefaultConfig(context.Background())
	if err != nil {
		logger.Error("aws config", "error", err.Error())
		os.Exit(1)
	}
	sm := secretsmanager.NewFromConfig(cfg)
	ddb := dynamodb.NewFromConfig(cfg)
	eb := eventbridge.NewFromConfig(cfg)
	lambda.Start(func(ctx context.Context, raw json.RawMessage) (json.RawMessage, error) {
		_, _, _ = sm, ddb, eb
		return raw, nil
	})
}
