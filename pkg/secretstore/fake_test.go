package secretstore_test

import (
	"context"
	"errors"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	smtypes "github.com/aws/aws-sdk-go-v2/service/secretsmanager/types"

	"github.com/seed-502fa48b/token-refresher/pkg/secretstore"
)

// raceFake answers the calls MoveCurrent makes with a scripted sequence of
// label holders, to reproduce an operator's edit landing between our read and
// our write — a window moto cannot be made to hit on demand. Methods it does
// not script panic through the nil embedded interface.
type raceFake struct {
	secretsAPIStub
	holders   []string // AWSCURRENT holder returned by successive DescribeSecret calls
	describes int
	updates   int
	updateErr error
}

type secretsAPIStub interface {
	ListSecrets(context.Context, *secretsmanager.ListSecretsInput, ...func(*secretsmanager.Options)) (*secretsmanager.ListSecretsOutput, error)
	GetSecretValue(context.Context, *secretsmanager.GetSecretValueInput, ...func(*secretsmanager.Options)) (*secretsmanager.GetSecretValueOutput, error)
	ListSecretVersionIds(context.Context, *secretsmanager.ListSecretVersionIdsInput, ...func(*secretsmanager.Options)) (*secretsmanager.ListSecretVersionIdsOutput, error)
	PutSecretValue(context.Context, *secretsmanager.PutSecretValueInput, ...func(*secretsmanager.Options)) (*secretsmanager.PutSecretValueOutput, error)
	CreateSecret(context.Context, *secretsmanager.CreateSecretInput, ...func(*secretsmanager.Options)) (*secretsmanager.CreateSecretOutput, error)
}

func (f *raceFake) DescribeSecret(context.Context, *secretsmanager.DescribeSecretInput, ...func(*secretsmanager.Options)) (*secretsmanager.DescribeSecretOutput, error) {
	h := f.holders[min(f.describes, len(f.holders)-1)]
	f.describes++
	return &secretsmanager.DescribeSecretOutput{VersionIdsToStages: map[string][]string{h: {"AWSCURRENT"}, "other": {"AWSPREVIOUS"}}}, nil
}

func (f *raceFake) UpdateSecretVersionStage(context.Context, *secretsmanager.UpdateSecretVersionStageInput, ...func(*secretsmanager.Options)) (*secretsmanager.UpdateSecretVersionStageOutput, error) {
	f.updates++
	return nil, f.updateErr
}

func TestMoveCurrentRace(t *testing.T) {
	rejected := &smtypes.InvalidParameterException{Message: aws.String("Version stage AWSCURRENT not found in version from")}
	tests := []struct {
		name        string
		holders     []string
		updateErr   error
		wantErr     error // nil: success
		wantOther   bool  // an error that is none of the sentinels
		wantUpdates int
	}{
		{name: "moved by an operator after our read", holders: []string{"from", "operator"}, updateErr: rejected, wantErr: secretstore.ErrStageMoved, wantUpdates: 2},
		{name: "moved to our version by another holder", holders: []string{"from", "to"}, updateErr: rejected, wantUpdates: 2},
		{name: "rejected while still on from", holders: []string{"from"}, updateErr: rejected, wantOther: true, wantUpdates: 2},
		{name: "secret deleted meanwhile", holders: []string{"from"}, updateErr: &smtypes.ResourceNotFoundException{}, wantErr: secretstore.ErrNotFound, wantUpdates: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := &raceFake{holders: tc.holders, updateErr: tc.updateErr}
			err := secretstore.New(f).MoveCurrent(context.Background(), "s", "to", "from")
			switch {
			case tc.wantOther:
				if err == nil || errors.Is(err, secretstore.ErrStageMoved) || errors.Is(err, secretstore.ErrNotFound) {
					t.Errorf("err = %v, want a plain error", err)
				}
			case !errors.Is(err, tc.wantErr):
				t.Errorf("err = %v, want %v", err, tc.wantErr)
			}
			if f.updates != tc.wantUpdates {
				t.Errorf("UpdateSecretVersionStage calls = %d, want %d", f.updates, tc.wantUpdates)
			}
		})
	}
}

// versionsFake returns ResourceNotFoundException from ListSecretVersionIds,
// which real Secrets Manager does for a missing secret (moto 5.2.1 answers
// HTTP 500 instead).
type versionsFake struct{ raceFake }

func (*versionsFake) ListSecretVersionIds(context.Context, *secretsmanager.ListSecretVersionIdsInput, ...func(*secretsmanager.Options)) (*secretsmanager.ListSecretVersionIdsOutput, error) {
	return nil, &smtypes.ResourceNotFoundException{Message: aws.String("Secrets Manager can't find the specified secret.")}
}

func TestVersionsNotFound(t *testing.T) {
	_, err := secretstore.New(&versionsFake{}).Versions(context.Background(), "missing")
	if !errors.Is(err, secretstore.ErrNotFound) {
		t.Fatalf("Versions err = %v, want ErrNotFound", err)
	}
}
