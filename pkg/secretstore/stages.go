package secretstore

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
)

// Stages returns the staging labels of every labelled version of the secret,
// by version id (DescribeSecret: no value is read). The refresher uses it to
// see which version its own PutCurrentVersion took AWSCURRENT from.
func (s *Store) Stages(ctx context.Context, name string) (map[string][]string, error) {
	out, err := s.client.DescribeSecret(ctx, &secretsmanager.DescribeSecretInput{SecretId: aws.String(name)})
	if err != nil {
		return nil, fmt.Errorf("secretstore: stages %s: %w", name, translate(err))
	}
	return out.VersionIdsToStages, nil
}
