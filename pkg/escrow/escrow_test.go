package escrow_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/seed-502fa48b/token-refresher/internal/awsemu"
	"github.com/seed-502fa48b/token-refresher/pkg/escrow"
	"github.com/seed-502fa48b/token-refresher/pkg/token"
)

func TestMain(m *testing.M) { os.Exit(awsemu.RunTests(m)) }

// refresh is a refresh token every test seals; no error may contain it.
const refresh = "rt-9f2c41d7e0b84a5f-SECRET"

type env struct {
	ctx    context.Context
	kms    *kms.Client
	keyID  string
	sealer *escrow.Sealer
}

// newEnv gives every test its own KMS key on the shared moto server.
func newEnv(t *testing.T) *env {
	t.Helper()
	ctx := context.Background()
	client := kms.NewFromConfig(awsemu.Shared(t).AWSConfig(t))
	keyID := createKey(t, client)
	s, err := escrow.New(client, escrow.Options{KeyID: keyID})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return &env{ctx: ctx, kms: client, keyID: keyID, sealer: s}
}

func createKey(t *testing.T, client *kms.Client) string {
	t.Helper()
	out, err := client.CreateKey(context.Background(), &kms.CreateKeyInput{Description: aws.String(t.Name())})
	if err != nil {
		t.Fatalf("CreateKey: %v", err)
	}
	return aws.ToString(out.KeyMetadata.KeyId)
}

func (e *env) seal(t *testing.T, name, to string, s token.Secret) []byte {
	t.Helper()
	sealed, err := e.sealer.Seal(e.ctx, name, to, s)
	if err != nil {
		t.Fatalf("Seal(%s, %s): %v", name, to, err)
	}
	return sealed
}

// noSecret fails the test if err's text carries the refresh token.
func noSecret(t *testing.T, err error) {
	t.Helper()
	if err != nil && strings.Contains(err.Error(), refresh) {
		t.Errorf("error carries the refresh token: %q", err)
	}
}

// TestMotoKMSHonoursEncryptionContext pins the emulator property the binding
// tests below rely on: moto's KMS refuses a ciphertext under another
// encryption context, as KMS does. Without it they could pass vacuously.
func TestMotoKMSHonoursEncryptionContext(t *testing.T) {
	e := newEnv(t)
	enc, err := e.kms.Encrypt(e.ctx, &kms.EncryptInput{
		KeyId: aws.String(e.keyID), Plaintext: []byte("x"),
		EncryptionContext: map[string]string{"token": "a"},
	})
	if err != nil {
		t.Fatalf("Encrypt: %v", err)
	}
	_, err = e.kms.Decrypt(e.ctx, &kms.DecryptInput{
		CiphertextBlob: enc.CiphertextBlob, EncryptionContext: map[string]string{"token": "b"},
	})
	var bad *types.InvalidCiphertextException
	if !errors.As(err, &bad) {
		t.Fatalf("Decrypt under another context: got %v, want InvalidCiphertextException", err)
	}
	dec, err := e.kms.Decrypt(e.ctx, &kms.DecryptInput{
		CiphertextBlob: enc.CiphertextBlob, EncryptionContext: map[string]string{"token": "a"},
	})
	if err != nil || string(dec.Plaintext) != "x" {
		t.Fatalf("Decrypt under its context: got %q, %v, want \"x\"", dec.Plaintext, err)
	}
}

func TestSealOpenRoundTrip(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		name  string
		value token.Secret
	}{
		{"short opaque", refresh},
		// Over KMS Encrypt's 4096-byte limit: the reason for the envelope.
		{"16 KiB JWT", token.Secret("eyJhbGciOiJSUzI1NiJ9." + strings.Repeat("A", 16<<10) + ".sig")},
		{"at the limit", token.Secret(strings.Repeat("z", escrow.MaxTokenBytes))},
		{"non-ASCII and NUL", token.Secret("r\x00é✓")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sealed := e.seal(t, "acme", "v-0007", tt.value)
			if bytes.Contains(sealed, []byte(tt.value.Reveal())) {
				t.Fatalf("sealed value contains the plaintext")
			}
			got, err := e.sealer.Open(e.ctx, "acme", "v-0007", sealed)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			if got.Reveal() != tt.value.Reveal() {
				t.Errorf("Open: got %d bytes, want the %d sealed", len(got.Reveal()), len(tt.value.Reveal()))
			}
			if s := fmt.Sprintf("%v %s", got, got); strings.Contains(s, tt.value.Reveal()) {
				t.Errorf("opened value prints its plaintext: %q", s)
			}
		})
	}
}

func TestSealIsRandomised(t *testing.T) {
	e := newEnv(t)
	a := e.seal(t, "acme", "v1", refresh)
	b := e.seal(t, "acme", "v1", refresh)
	if bytes.Equal(a, b) {
		t.Fatal("two seals of one value are equal, want distinct (fresh data key and nonce)")
	}
}

func TestOpenRefusesAnotherBinding(t *testing.T) {
	e := newEnv(t)
	sealed := e.seal(t, "acme", "v1", refresh)
	tests := []struct{ name, token, to string }{
		{"other token", "acme2", "v1"},
		{"other version", "acme", "v2"},
		{"both swapped", "v1", "acme"},
		{"shifted boundary", "acmev", "1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := e.sealer.Open(e.ctx, tt.token, tt.to, sealed)
			if !errors.Is(err, escrow.ErrInvalid) {
				t.Fatalf("Open(%s, %s): got %q, %v, want ErrInvalid", tt.token, tt.to, got.Reveal(), err)
			}
			noSecret(t, err)
		})
	}
}

// TestKMSLayerBinding checks the data key itself is bound by KMS (not only
// by the local GCM layer): KMS decrypts it only under the full context.
func TestKMSLayerBinding(t *testing.T) {
	e := newEnv(t)
	sealed := e.seal(t, "acme", "v1", refresh)
	n := int(binary.BigEndian.Uint16(sealed[1:3]))
	wrapped := sealed[3 : 3+n]
	full := map[string]string{escrow.ContextPurpose: escrow.ContextPurposeValue, escrow.ContextToken: "acme", escrow.ContextVersion: "v1"}
	tests := []struct {
		name string
		ctx  map[string]string
		ok   bool
	}{
		{"full context", full, true},
		{"no purpose", map[string]string{escrow.ContextToken: "acme", escrow.ContextVersion: "v1"}, false},
		{"other version", map[string]string{escrow.ContextPurpose: escrow.ContextPurposeValue, escrow.ContextToken: "acme", escrow.ContextVersion: "v2"}, false},
		{"none", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.kms.Decrypt(e.ctx, &kms.DecryptInput{CiphertextBlob: wrapped, EncryptionContext: tt.ctx})
			if got := err == nil; got != tt.ok {
				t.Errorf("Decrypt data key: got ok=%v (%v), want ok=%v", got, err, tt.ok)
			}
		})
	}
}

func TestOpenRefusesAlteredValues(t *testing.T) {
	e := newEnv(t)
	sealed := e.seal(t, "acme", "v1", refresh)
	other := e.seal(t, "acme", "v1", "another-token")
	n := 3 + int(binary.BigEndian.Uint16(sealed[1:3]))
	flip := func(i int) []byte {
		b := bytes.Clone(sealed)
		b[i] ^= 0x01
		return b
	}
	tests := []struct {
		name   string
		sealed []byte
	}{
		{"empty", nil},
		{"unknown format", flip(0)},
		{"header only", sealed[:n]},
		{"truncated tag", sealed[:len(sealed)-1]},
		{"wrapped key altered", flip(n - 1)},
		{"nonce altered", flip(n)},
		{"ciphertext altered", flip(len(sealed) - 1)},
		{"another seal's key with this body", append(bytes.Clone(other[:3+int(binary.BigEndian.Uint16(other[1:3]))]), sealed[n:]...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.sealer.Open(e.ctx, "acme", "v1", tt.sealed)
			if !errors.Is(err, escrow.ErrInvalid) {
				t.Fatalf("Open: got %v, want ErrInvalid", err)
			}
			noSecret(t, err)
		})
	}
}

func TestOpenRefusesAnotherKey(t *testing.T) {
	e := newEnv(t)
	sealed := e.seal(t, "acme", "v1", refresh)
	other, err := escrow.New(e.kms, escrow.Options{KeyID: createKey(t, e.kms)})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	// KMS answers IncorrectKeyException (ErrInvalid); moto answers
	// AccessDeniedException. Either way it must not open.
	got, err := other.Open(e.ctx, "acme", "v1", sealed)
	if err == nil {
		t.Fatalf("Open under another key: got %d bytes, want an error", len(got.Reveal()))
	}
	if !strings.HasPrefix(err.Error(), "escrow: ") {
		t.Errorf("error %q, want the escrow: prefix", err)
	}
	noSecret(t, err)
}

func TestSealRefuses(t *testing.T) {
	e := newEnv(t)
	missing, err := escrow.New(e.kms, escrow.Options{KeyID: "alias/does-not-exist"})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	tests := []struct {
		name    string
		s       *escrow.Sealer
		token   string
		to      string
		value   token.Secret
		wantKMS bool
	}{
		{"empty name", e.sealer, "", "v1", refresh, false},
		{"empty version", e.sealer, "acme", "", refresh, false},
		{"empty token", e.sealer, "acme", "v1", "", false},
		{"over the limit", e.sealer, "acme", "v1", token.Secret(refresh + strings.Repeat("x", escrow.MaxTokenBytes)), false},
		{"unknown key", missing, "acme", "v1", refresh, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.s.Seal(e.ctx, tt.token, tt.to, tt.value)
			if err == nil {
				t.Fatalf("Seal: got %d bytes, want an error", len(got))
			}
			if !strings.HasPrefix(err.Error(), "escrow: seal ") {
				t.Errorf("error %q, want the \"escrow: seal \" prefix", err)
			}
			var nf *types.NotFoundException
			if got := errors.As(err, &nf); got != tt.wantKMS {
				t.Errorf("error wraps KMS NotFoundException: got %v, want %v (%v)", got, tt.wantKMS, err)
			}
			noSecret(t, err)
		})
	}
}

func TestNewRefuses(t *testing.T) {
	e := newEnv(t)
	if s, err := escrow.New(nil, escrow.Options{KeyID: e.keyID}); err == nil {
		t.Errorf("New(nil client): got %v, want an error", s)
	}
	if s, err := escrow.New(e.kms, escrow.Options{}); err == nil {
		t.Errorf("New(no key): got %v, want an error", s)
	}
}
