// Package escrow seals a rotated refresh token with AWS KMS so it can be kept
// in the state table when Secrets Manager refuses the persist (docs/design.md
// §4, "a rotated token always has a durable home"), and opens it again for
// the run that finishes the persist.
//
// Sealing is envelope encryption: one GenerateDataKey per seal, the token
// encrypted locally with AES-256-GCM, and the KMS-encrypted data key stored
// beside it. KMS Encrypt would take one call too, but refuses more than
// 4096 bytes, and a provider is free to return a long JWT as a refresh
// token; the envelope has no such limit and costs the same KMS calls
// (GenerateDataKey to seal, Decrypt to open).
//
// Both layers are bound to the token's name and the in-flight target version
// id: the KMS encryption context of the data key and the GCM additional
// data. A sealed value opens only for the (name, version) it was sealed
// for, so it cannot be replayed onto another token or another refresh.
package escrow

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/seed-502fa48b/token-refresher/pkg/token"
)

// ErrInvalid means a sealed value does not open for this token and version:
// tampered, truncated, sealed for another (name, version), or under another
// key. Retrying cannot help; any other error (KMS unreachable, throttled,
// access denied) may pass.
var ErrInvalid = errors.New("escrow: sealed value does not open for this token and version")

// The KMS encryption context keys. A key policy can require them
// (kms:EncryptionContext:purpose = ContextPurposeValue) so the escrow key
// serves nothing else.
const (
	ContextPurpose      = "purpose"
	ContextPurposeValue = "token-refresher/escrow"
	ContextToken        = "token"
	ContextVersion      = "version"
)

// MaxTokenBytes bounds the plaintext: far above any real refresh token, far
// below DynamoDB's 400 KB item limit, which the sealed value shares with
// the rest of the record.
const MaxTokenBytes = 64 << 10

// formatV1 is the first byte of a sealed value:
// formatV1 | uint16 len(key) | KMS-encrypted data key | GCM nonce | GCM ciphertext+tag.
const formatV1 byte = 1

const dataKeyBytes = 32 // AES-256

// kmsAPI is the part of *kms.Client the escrow uses.
type kmsAPI interface {
	GenerateDataKey(ctx context.Context, params *kms.GenerateDataKeyInput, optFns ...func(*kms.Options)) (*kms.GenerateDataKeyOutput, error)
	Decrypt(ctx context.Context, params *kms.DecryptInput, optFns ...func(*kms.Options)) (*kms.DecryptOutput, error)
}

// Options configure a Sealer.
type Options struct {
	// KeyID is the symmetric KMS key (id, ARN or alias) that only the
	// refresher role may use. Open pins it too, so a value sealed under any
	// other key is refused.
	KeyID string
}

// Sealer seals and opens refresh tokens.
type Sealer struct {
	client kmsAPI
	keyID  string
}

// New returns a Sealer (client is a *kms.Client in production).
func New(client kmsAPI, opts Options) (*Sealer, error) {
	if client == nil {
		return nil, errors.New("escrow: new: nil KMS client")
	}
	if opts.KeyID == "" {
		return nil, errors.New("escrow: new: empty KMS key id")
	}
	return &Sealer{client: client, keyID: opts.KeyID}, nil
}

// KeyID is the KMS key the Sealer uses.
func (s *Sealer) KeyID() string { return s.keyID }

// Seal encrypts refresh for the token name and the in-flight target version
// id to. The result is what ledger.EscrowWrite.Sealed stores.
func (s *Sealer) Seal(ctx context.Context, name, to string, refresh token.Secret) ([]byte, error) {
	if err := checkBinding(name, to); err != nil {
		return nil, fmt.Errorf("escrow: seal %s@%s: %w", name, to, err)
	}
	if refresh.IsZero() {
		return nil, fmt.Errorf("escrow: seal %s@%s: empty refresh token", name, to)
	}
	if n := len(refresh.Reveal()); n > MaxTokenBytes {
		return nil, fmt.Errorf("escrow: seal %s@%s: refresh token is %d bytes, limit %d", name, to, n, MaxTokenBytes)
	}
	out, err := s.client.GenerateDataKey(ctx, &kms.GenerateDataKeyInput{
		KeyId:             aws.String(s.keyID),
		KeySpec:           types.DataKeySpecAes256,
		EncryptionContext: encryptionContext(name, to),
	})
	if err != nil {
		return nil, fmt.Errorf("escrow: seal %s@%s: generate data key: %w", name, to, err)
	}
	dk := out.Plaintext
	defer clear(dk)
	if len(dk) != dataKeyBytes || len(out.CiphertextBlob) == 0 || len(out.CiphertextBlob) > 0xffff {
		return nil, fmt.Errorf("escrow: seal %s@%s: KMS returned a %d-byte data key with a %d-byte ciphertext", name, to, len(dk), len(out.CiphertextBlob))
	}
	aead, err := newAEAD(dk)
	if err != nil {
		return nil, fmt.Errorf("escrow: seal %s@%s: %w", name, to, err)
	}

	header := make([]byte, 0, 3+len(out.CiphertextBlob))
	header = append(header, formatV1)
	header = binary.BigEndian.AppendUint16(header, uint16(len(out.CiphertextBlob)))
	header = append(header, out.CiphertextBlob...)

	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("escrow: seal %s@%s: nonce: %w", name, to, err)
	}
	plain := []byte(refresh.Reveal())
	defer clear(plain)
	sealed := make([]byte, 0, len(header)+len(nonce)+len(plain)+aead.Overhead())
	sealed = append(sealed, header...)
	sealed = append(sealed, nonce...)
	return aead.Seal(sealed, nonce, plain, additionalData(header, name, to)), nil
}

// Open decrypts a value Seal made for the same name and to. ErrInvalid when
// it was sealed for anything else or has been altered.
func (s *Sealer) Open(ctx context.Context, name, to string, sealed []byte) (token.Secret, error) {
	if err := checkBinding(name, to); err != nil {
		return "", fmt.Errorf("escrow: open %s@%s: %w", name, to, err)
	}
	header, wrappedKey, rest, ok := split(sealed)
	if !ok {
		return "", fmt.Errorf("escrow: open %s@%s: malformed (%d bytes): %w", name, to, len(sealed), ErrInvalid)
	}
	out, err := s.client.Decrypt(ctx, &kms.DecryptInput{
		CiphertextBlob:    wrappedKey,
		KeyId:             aws.String(s.keyID),
		EncryptionContext: encryptionContext(name, to),
	})
	if err != nil {
		var badCipher *types.InvalidCiphertextException
		var wrongKey *types.IncorrectKeyException
		if errors.As(err, &badCipher) || errors.As(err, &wrongKey) {
			return "", fmt.Errorf("escrow: open %s@%s: decrypt data key: %w: %w", name, to, ErrInvalid, err)
		}
		return "", fmt.Errorf("escrow: open %s@%s: decrypt data key: %w", name, to, err)
	}
	dk := out.Plaintext
	defer clear(dk)
	if len(dk) != dataKeyBytes {
		return "", fmt.Errorf("escrow: open %s@%s: data key is %d bytes: %w", name, to, len(dk), ErrInvalid)
	}
	aead, err := newAEAD(dk)
	if err != nil {
		return "", fmt.Errorf("escrow: open %s@%s: %w", name, to, err)
	}
	if len(rest) < aead.NonceSize()+aead.Overhead() {
		return "", fmt.Errorf("escrow: open %s@%s: truncated: %w", name, to, ErrInvalid)
	}
	nonce, ct := rest[:aead.NonceSize()], rest[aead.NonceSize():]
	plain, err := aead.Open(nil, nonce, ct, additionalData(header, name, to))
	if err != nil {
		// cipher's error says only "message authentication failed".
		return "", fmt.Errorf("escrow: open %s@%s: %w", name, to, ErrInvalid)
	}
	defer clear(plain)
	return token.Secret(plain), nil
}

func checkBinding(name, to string) error {
	if name == "" || to == "" {
		return errors.New("empty token name or version id")
	}
	return nil
}

func encryptionContext(name, to string) map[string]string {
	return map[string]string{
		ContextPurpose: ContextPurposeValue,
		ContextToken:   name,
		ContextVersion: to,
	}
}

// additionalData binds the local layer to the same (name, version) as the
// KMS layer, and to the header, so neither can be swapped on its own.
// Length prefixes keep ("a","bc") apart from ("ab","c").
func additionalData(header []byte, name, to string) []byte {
	ad := make([]byte, 0, len(header)+len(name)+len(to)+8)
	ad = append(ad, header...)
	ad = binary.BigEndian.AppendUint32(ad, uint32(len(name)))
	ad = append(ad, name...)
	ad = binary.BigEndian.AppendUint32(ad, uint32(len(to)))
	return append(ad, to...)
}

// split parses a sealed value into its header, the wrapped data key (inside
// the header) and the nonce+ciphertext.
func split(sealed []byte) (header, wrappedKey, rest []byte, ok bool) {
	if len(sealed) < 3 || sealed[0] != formatV1 {
		return nil, nil, nil, false
	}
	n := int(binary.BigEndian.Uint16(sealed[1:3]))
	if n == 0 || len(sealed) < 3+n {
		return nil, nil, nil, false
	}
	return sealed[:3+n], sealed[3 : 3+n], sealed[3+n:], true
}

func newAEAD(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}
