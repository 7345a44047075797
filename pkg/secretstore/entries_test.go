package secretstore_test

import (
	"errors"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/seed-502fa48b/token-refresher/pkg/secretstore"
	"github.com/seed-502fa48b/token-refresher/pkg/token"
)

// Entries tells AWSCURRENT of every secret from ListSecrets alone (edits are detected without
// reading a value) and keeps secrets scheduled for deletion, marked, so the report can name them.
func TestEntries(t *testing.T) {
	e := newEnv(t)
	prefix := uniqueName(t, "") + "token-refresher/"
	a := e.create(t, prefix+"private/a", "v")
	b := e.create(t, prefix+"private/b", "v")
	edited, err := e.store.PutCurrent(e.ctx, prefix+"private/b", token.Secret("edit"))
	if err != nil {
		t.Fatal(err)
	}
	e.create(t, prefix+"private/gone", "v")
	if _, err := e.raw.DeleteSecret(e.ctx, &secretsmanager.DeleteSecretInput{SecretId: aws.String(prefix + "private/gone")}); err != nil {
		t.Fatal(err)
	}
	got, err := e.store.Entries(e.ctx, prefix)
	if err != nil {
		t.Fatalf("Entries: %v", err)
	}
	if len(got) != 3 {
		t.Fatalf("Entries = %+v, want 3 entries", got)
	}
	if got[0].Name != prefix+"private/a" || got[0].Current != a || !got[0].DeletedDate.IsZero() {
		t.Errorf("entry a = %+v, want current %s, not deleted", got[0], a)
	}
	if got[1].Current != edited || got[1].Current == b {
		t.Errorf("entry b current = %s, want the edit %s", got[1].Current, edited)
	}
	if got[2].Name != prefix+"private/gone" || got[2].DeletedDate.IsZero() {
		t.Errorf("entry gone = %+v, want a deletion date", got[2])
	}
}

func TestGetBinary(t *testing.T) {
	e := newEnv(t)
	name := uniqueName(t, "binary")
	if _, err := e.raw.CreateSecret(e.ctx, &secretsmanager.CreateSecretInput{Name: aws.String(name), SecretBinary: []byte{1, 2, 3}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.GetCurrent(e.ctx, name); !errors.Is(err, secretstore.ErrBinary) {
		t.Errorf("GetCurrent(binary) err = %v, want ErrBinary", err)
	}
}

// Access secrets are created with the configured customer-managed key (KMS_KEY_ID).
func TestPublishWithKMSKey(t *testing.T) {
	e := newEnv(t)
	const key = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
	store := secretstore.NewWithOptions(e.raw, secretstore.Options{KMSKeyID: key})
	name := uniqueName(t, "access")
	if err := store.Publish(e.ctx, name, token.Secret(`{"status":"active"}`), "c1b2c3d4-0000-4000-8000-000000000001"); err != nil {
		t.Fatal(err)
	}
	out, err := e.raw.DescribeSecret(e.ctx, &secretsmanager.DescribeSecretInput{SecretId: aws.String(name)})
	if err != nil {
		t.Fatal(err)
	}
	if got := aws.ToString(out.KmsKeyId); got != key {
		t.Errorf("KmsKeyId = %q, want %q", got, key)
	}
}
