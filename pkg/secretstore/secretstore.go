// Package secretstore is the Secrets Manager adapter: it reads private secret
// versions by id, writes new versions (under a private staging label, or as
// AWSCURRENT in the same write), moves AWSCURRENT only when it is where the
// caller expects it, and publishes the consumers' access secret. Writes can be
// paced below the account's write quota (Options.WritesPerSecond). Values
// travel as token.Secret, so none of them can reach an error string.
package secretstore

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	smtypes "github.com/aws/aws-sdk-go-v2/service/secretsmanager/types"
	"github.com/aws/smithy-go"

	"github.com/seed-502fa48b/token-refresher/pkg/token"
)

// StageCurrent is the staging label consumers and tools read by default.
const StageCurrent = "AWSCURRENT"

// Errors callers branch on.
var (
	ErrNotFound        = errors.New("secretstore: not found")
	ErrVersionConflict = errors.New("secretstore: version conflict")
	ErrStageMoved      = errors.New("secretstore: stage moved")
	ErrExists          = errors.New("secretstore: secret exists")
	// ErrBinary: the secret holds SecretBinary, which is not one of ours.
	ErrBinary = errors.New("secretstore: binary secret")
	// ErrLimitExceeded: the service refused a write for a quota (the ~100
	// versions a secret may gain in 24 h); retrying does not help.
	ErrLimitExceeded = errors.New("secretstore: limit exceeded")
	// ErrInvalidRequest: the service refused the request itself (a value over
	// 64 KiB); retrying does not help.
	ErrInvalidRequest = errors.New("secretstore: invalid request")
	// ErrThrottled: the service throttled the call past the SDK's own retries.
	ErrThrottled = errors.New("secretstore: throttled")
)

// Tags and description every access secret is created with, so an operator can
// tell who owns it.
const (
	publishDescription = "token-refresher access token (consumers read this)"
	managedByKey       = "managed-by"
	managedByValue     = "token-refresher"
)

// secretsAPI is the part of *secretsmanager.Client this adapter uses.
type secretsAPI interface {
	ListSecrets(ctx context.Context, in *secretsmanager.ListSecretsInput, optFns ...func(*secretsmanager.Options)) (*secretsmanager.ListSecretsOutput, error)
	GetSecretValue(ctx context.Context, in *secretsmanager.GetSecretValueInput, optFns ...func(*secretsmanager.Options)) (*secretsmanager.GetSecretValueOutput, error)
	ListSecretVersionIds(ctx context.Context, in *secretsmanager.ListSecretVersionIdsInput, optFns ...func(*secretsmanager.Options)) (*secretsmanager.ListSecretVersionIdsOutput, error)
	DescribeSecret(ctx context.Context, in *secretsmanager.DescribeSecretInput, optFns ...func(*secretsmanager.Options)) (*secretsmanager.DescribeSecretOutput, error)
	PutSecretValue(ctx context.Context, in *secretsmanager.PutSecretValueInput, optFns ...func(*secretsmanager.Options)) (*secretsmanager.PutSecretValueOutput, error)
	UpdateSecretVersionStage(ctx context.Context, in *secretsmanager.UpdateSecretVersionStageInput, optFns ...func(*secretsmanager.Options)) (*secretsmanager.UpdateSecretVersionStageOutput, error)
	CreateSecret(ctx context.Context, in *secretsmanager.CreateSecretInput, optFns ...func(*secretsmanager.Options)) (*secretsmanager.CreateSecretOutput, error)
}

// Store reads and writes secrets through Secrets Manager.
type Store struct {
	client secretsAPI
	kmsKey string
}

// Options configure a Store.
type Options struct {
	// KMSKeyID encrypts the access secrets Publish creates (a customer-managed key that
	// consumers in other accounts can be allowed to use); empty: aws/secretsmanager.
	KMSKeyID string
	// WritesPerSecond paces every write this Store makes (PutSecretValue,
	// UpdateSecretVersionStage, CreateSecret), across all goroutines using it:
	// Secrets Manager allows 50 writes/s per account and region, shared by every
	// writer. 0 leaves writes unpaced.
	WritesPerSecond float64
	// WriteBurst is how many writes may go at once after a quiet spell; default 1.
	WriteBurst int
	// WriteLimiter, if set, replaces the limiter WritesPerSecond would build
	// (tests; or one pace shared by several Stores).
	WriteLimiter WriteLimiter
}

// New returns a Store using client (a *secretsmanager.Client in production).
func New(client secretsAPI) *Store {
	return NewWithOptions(client, Options{})
}

// NewWithOptions is New with options.
func NewWithOptions(client secretsAPI, opts Options) *Store {
	if lim := newWriteLimiter(opts); lim != nil {
		client = pacedClient{secretsAPI: client, lim: lim}
	}
	return &Store{client: client, kmsKey: opts.KMSKeyID}
}

// Version is one secret version with its value.
type Version struct {
	ID      string
	Value   token.Secret
	Stages  []string
	Created time.Time
}

// VersionInfo describes a version without its value.
type VersionInfo struct {
	ID      string
	Stages  []string
	Created time.Time
}

// HasStage reports whether stage is attached to the version.
func (v VersionInfo) HasStage(stage string) bool { return hasStage(v.Stages, stage) }

// HasStage reports whether stage is attached to the version.
func (v Version) HasStage(stage string) bool { return hasStage(v.Stages, stage) }

func hasStage(stages []string, stage string) bool {
	for _, s := range stages {
		if s == stage {
			return true
		}
	}
	return false
}

// List returns the sorted names of live secrets whose name starts with prefix: the Entries
// not scheduled for deletion.
func (s *Store) List(ctx context.Context, prefix string) ([]string, error) {
	entries, err := s.Entries(ctx, prefix)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		if e.DeletedDate.IsZero() {
			names = append(names, e.Name)
		}
	}
	return names, nil
}

// Entry is one secret as ListSecrets describes it: no value is read.
type Entry struct {
	Name string
	// Current is the id of the version labelled AWSCURRENT ("" when none):
	// ListSecrets returns every version's stages, so edits are seen without
	// reading a secret.
	Current string
	// DeletedDate is set when the secret is scheduled for deletion.
	DeletedDate time.Time
}

// Entries lists the secrets whose name starts with prefix, those scheduled
// for deletion included, sorted by name; no secret value is read.
// The service's name filter is only a pre-selection (its matching rules are
// looser than a byte prefix), so every name is checked again here.
func (s *Store) Entries(ctx context.Context, prefix string) ([]Entry, error) {
	in := &secretsmanager.ListSecretsInput{IncludePlannedDeletion: aws.Bool(true)}
	// A leading "!" would turn the filter into a negation; such a prefix
	// matches no valid name anyway, and the check below handles it.
	if prefix != "" && !strings.HasPrefix(prefix, "!") {
		in.Filters = []smtypes.Filter{{Key: smtypes.FilterNameStringTypeName, Values: []string{prefix}}}
	}
	var out []Entry
	p := secretsmanager.NewListSecretsPaginator(s.client, in)
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("secretstore: list %q: %w", prefix, translate(err))
		}
		for _, e := range page.SecretList {
			name := aws.ToString(e.Name)
			if !strings.HasPrefix(name, prefix) {
				continue
			}
			out = append(out, Entry{Name: name, Current: currentOf(e.SecretVersionsToStages), DeletedDate: aws.ToTime(e.DeletedDate)})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// currentOf is the id of the version labelled AWSCURRENT in a version-to-stages
// map, or "" when none is.
func currentOf(versions map[string][]string) string {
	for id, stages := range versions {
		if hasStage(stages, StageCurrent) {
			return id
		}
	}
	return ""
}

// GetVersion reads one version by id. ErrNotFound when the secret or the
// version does not exist.
func (s *Store) GetVersion(ctx context.Context, name, versionID string) (Version, error) {
	if versionID == "" {
		return Version{}, fmt.Errorf("secretstore: get %s: empty version id", name)
	}
	v, err := s.get(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String(name), VersionId: aws.String(versionID)})
	if err != nil {
		return Version{}, fmt.Errorf("secretstore: get %s version %s: %w", name, versionID, err)
	}
	return v, nil
}

// GetCurrent reads the version labelled AWSCURRENT.
func (s *Store) GetCurrent(ctx context.Context, name string) (Version, error) {
	v, err := s.get(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String(name), VersionStage: aws.String(StageCurrent)})
	if err != nil {
		return Version{}, fmt.Errorf("secretstore: get %s current: %w", name, err)
	}
	return v, nil
}

func (s *Store) get(ctx context.Context, in *secretsmanager.GetSecretValueInput) (Version, error) {
	out, err := s.client.GetSecretValue(ctx, in)
	if err != nil {
		return Version{}, translate(err)
	}
	if out.SecretString == nil {
		// Binary secrets are not ours; say so rather than hand back an empty value.
		return Version{}, fmt.Errorf("%w: it has SecretBinary, want a JSON SecretString", ErrBinary)
	}
	return Version{
		ID:      aws.ToString(out.VersionId),
		Value:   token.Secret(*out.SecretString),
		Stages:  out.VersionStages,
		Created: aws.ToTime(out.CreatedDate),
	}, nil
}

// Versions lists every version of the secret, including deprecated ones
// (no staging label), oldest first; ties are ordered by id.
func (s *Store) Versions(ctx context.Context, name string) ([]VersionInfo, error) {
	var vs []VersionInfo
	p := secretsmanager.NewListSecretVersionIdsPaginator(s.client, &secretsmanager.ListSecretVersionIdsInput{
		SecretId:          aws.String(name),
		IncludeDeprecated: aws.Bool(true),
	})
	for p.HasMorePages() {
		out, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("secretstore: versions %s: %w", name, translate(err))
		}
		for _, e := range out.Versions {
			vs = append(vs, VersionInfo{ID: aws.ToString(e.VersionId), Stages: e.VersionStages, Created: aws.ToTime(e.CreatedDate)})
		}
	}
	sort.SliceStable(vs, func(i, j int) bool {
		if !vs[i].Created.Equal(vs[j].Created) {
			return vs[i].Created.Before(vs[j].Created)
		}
		return vs[i].ID < vs[j].ID
	})
	return vs, nil
}

// PutPending writes value as version versionID carrying only the label stage.
// VersionStages is always sent: without it Secrets Manager would move
// AWSCURRENT unconditionally. A retry with the same id and value succeeds; the
// same id with other content is ErrVersionConflict.
func (s *Store) PutPending(ctx context.Context, name string, value token.Secret, versionID, stage string) error {
	if stage == "" {
		return fmt.Errorf("secretstore: put %s version %s: empty stage", name, versionID)
	}
	if versionID == "" {
		return fmt.Errorf("secretstore: put %s: empty version id", name)
	}
	_, err := s.client.PutSecretValue(ctx, &secretsmanager.PutSecretValueInput{
		SecretId:           aws.String(name),
		SecretString:       aws.String(value.Reveal()),
		ClientRequestToken: aws.String(versionID),
		VersionStages:      []string{stage},
	})
	if err != nil {
		return fmt.Errorf("secretstore: put %s version %s: %w", name, versionID, translate(err))
	}
	return nil
}

// PutCurrentVersion writes value as version versionID and moves AWSCURRENT to
// it in the same request (the previous holder becomes AWSPREVIOUS): one write
// where PutPending and MoveCurrent take two. The caller's own record says which
// version is committed, so a version of ours at AWSCURRENT that is not yet
// committed is an in-flight write, not an edit. A retry with the same id and
// value succeeds and changes nothing — also no label: if AWSCURRENT moved on
// meanwhile it stays where it is, for the caller's label repair to judge. The
// same id with other content is ErrVersionConflict.
func (s *Store) PutCurrentVersion(ctx context.Context, name string, value token.Secret, versionID string) error {
	if versionID == "" {
		return fmt.Errorf("secretstore: put current %s: empty version id", name)
	}
	_, err := s.client.PutSecretValue(ctx, &secretsmanager.PutSecretValueInput{
		SecretId:           aws.String(name),
		SecretString:       aws.String(value.Reveal()),
		ClientRequestToken: aws.String(versionID),
		VersionStages:      []string{StageCurrent},
	})
	if err != nil {
		return fmt.Errorf("secretstore: put current %s version %s: %w", name, versionID, translate(err))
	}
	return nil
}

// MoveCurrent points AWSCURRENT at version to, only if it is now on version
// from. Already on to → nil; on any other version → ErrStageMoved (someone
// else edited the secret). The move is tried first — one call on the normal
// path — because the service refuses a RemoveFromVersionId that does not hold
// the label; only then is the holder read to tell which case it was.
func (s *Store) MoveCurrent(ctx context.Context, name, to, from string) error {
	if to == "" {
		return fmt.Errorf("secretstore: move current %s: empty target version", name)
	}
	// Two rounds: a concurrent move between our write and our read is
	// classified by trying again; a second disagreement is reported as is.
	var lastErr error
	for attempt := 0; attempt < 2; attempt++ {
		_, err := s.client.UpdateSecretVersionStage(ctx, &secretsmanager.UpdateSecretVersionStageInput{
			SecretId:            aws.String(name),
			VersionStage:        aws.String(StageCurrent),
			MoveToVersionId:     aws.String(to),
			RemoveFromVersionId: aws.String(from),
		})
		if err == nil {
			return nil
		}
		var invalid *smtypes.InvalidParameterException
		if !errors.As(err, &invalid) {
			return fmt.Errorf("secretstore: move current %s to %s: %w", name, to, translate(err))
		}
		lastErr = err
		holder, herr := s.currentHolder(ctx, name)
		if herr != nil {
			return fmt.Errorf("secretstore: move current %s: %w", name, herr)
		}
		if holder == to {
			return nil
		}
		if holder == "" || holder != from {
			return fmt.Errorf("secretstore: move current %s to %s: %w", name, to, ErrStageMoved)
		}
	}
	return fmt.Errorf("secretstore: move current %s to %s: %w", name, to, lastErr)
}

// currentHolder returns the id of the version labelled AWSCURRENT, or "" when
// none is.
func (s *Store) currentHolder(ctx context.Context, name string) (string, error) {
	out, err := s.client.DescribeSecret(ctx, &secretsmanager.DescribeSecretInput{SecretId: aws.String(name)})
	if err != nil {
		return "", translate(err)
	}
	return currentOf(out.VersionIdsToStages), nil
}

// Publish writes the consumers' access secret as its new AWSCURRENT version,
// creating the secret on first use. clientToken makes retries idempotent:
// same token and value → nil; same token, other value → ErrVersionConflict.
func (s *Store) Publish(ctx context.Context, name string, value token.Secret, clientToken string) error {
	if clientToken == "" {
		return fmt.Errorf("secretstore: publish %s: empty client token", name)
	}
	err := s.putCurrent(ctx, name, value, clientToken)
	if !errors.Is(err, ErrNotFound) {
		return wrapPublish(name, err)
	}
	_, err = s.client.CreateSecret(ctx, &secretsmanager.CreateSecretInput{
		Name:               aws.String(name),
		SecretString:       aws.String(value.Reveal()),
		ClientRequestToken: aws.String(clientToken),
		Description:        aws.String(publishDescription),
		Tags:               []smtypes.Tag{{Key: aws.String(managedByKey), Value: aws.String(managedByValue)}},
		KmsKeyId:           optional(s.kmsKey),
	})
	var exists *smtypes.ResourceExistsException
	if errors.As(err, &exists) {
		// Lost a create race (or the token is in use): the put decides which.
		return wrapPublish(name, s.putCurrent(ctx, name, value, clientToken))
	}
	return wrapPublish(name, translate(err))
}

func optional(s string) *string {
	if s == "" {
		return nil
	}
	return aws.String(s)
}

func wrapPublish(name string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("secretstore: publish %s: %w", name, err)
}

func (s *Store) putCurrent(ctx context.Context, name string, value token.Secret, clientToken string) error {
	in := &secretsmanager.PutSecretValueInput{SecretId: aws.String(name), SecretString: aws.String(value.Reveal())}
	if clientToken != "" {
		in.ClientRequestToken = aws.String(clientToken)
	}
	_, err := s.client.PutSecretValue(ctx, in)
	return translate(err)
}

// Create creates a secret with value as its first (AWSCURRENT) version and
// returns that version's id. ErrExists when the name is taken.
func (s *Store) Create(ctx context.Context, name string, value token.Secret) (string, error) {
	out, err := s.client.CreateSecret(ctx, &secretsmanager.CreateSecretInput{
		Name:         aws.String(name),
		SecretString: aws.String(value.Reveal()),
	})
	if err != nil {
		var exists *smtypes.ResourceExistsException
		if errors.As(err, &exists) {
			return "", fmt.Errorf("secretstore: create %s: %w", name, ErrExists)
		}
		return "", fmt.Errorf("secretstore: create %s: %w", name, translate(err))
	}
	return aws.ToString(out.VersionId), nil
}

// PutCurrent writes value as a new AWSCURRENT version (what an operator's
// edit does) and returns its id.
func (s *Store) PutCurrent(ctx context.Context, name string, value token.Secret) (string, error) {
	out, err := s.client.PutSecretValue(ctx, &secretsmanager.PutSecretValueInput{
		SecretId:     aws.String(name),
		SecretString: aws.String(value.Reveal()),
	})
	if err != nil {
		return "", fmt.Errorf("secretstore: put current %s: %w", name, translate(err))
	}
	return aws.ToString(out.VersionId), nil
}

// translate maps the service errors callers branch on to sentinels and
// passes the rest through (their messages carry names and ids, never values).
func translate(err error) error {
	if err == nil {
		return nil
	}
	// The service error stays in the chain for diagnostics; callers branch on
	// the sentinel.
	var notFound *smtypes.ResourceNotFoundException
	if errors.As(err, &notFound) {
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	var exists *smtypes.ResourceExistsException
	if errors.As(err, &exists) {
		return fmt.Errorf("%w: %w", ErrVersionConflict, err)
	}
	var limit *smtypes.LimitExceededException
	if errors.As(err, &limit) {
		return fmt.Errorf("%w: %w", ErrLimitExceeded, err)
	}
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode() {
		case "ValidationException":
			return fmt.Errorf("%w: %w", ErrInvalidRequest, err)
		case "ThrottlingException", "TooManyRequestsException", "RequestLimitExceeded":
			return fmt.Errorf("%w: %w", ErrThrottled, err)
		}
	}
	return err
}
