package refresher

import (
	"fmt"

	"github.com/google/uuid"
)

// versionNamespace makes version ids deterministic: every holder that refreshes from
// version V at generation g computes the same N, so the first PutSecretValue wins and a
// second one with other content fails instead of forking the history.
var versionNamespace = uuid.MustParse("5f1d3c2e-8a7b-4c6d-9e0f-1a2b3c4d5e6f")

// NextVersion is the private version id a refresh from (from, generation-1) writes.
func NextVersion(from string, generation int64) string {
	return uuid.NewSHA1(versionNamespace, []byte(fmt.Sprintf("%s/%d", from, generation))).String()
}

// AccessToken is the idempotency token (and so the version id) of the access-secret write
// for private version v: a reconcile tells a lagging access secret from its AWSCURRENT id.
func AccessToken(v string) string {
	return uuid.NewSHA1(versionNamespace, []byte("access/"+v)).String()
}

// nextVersion is the version id the next write from the committed version takes: a refresh,
// a merged operator edit, or the version a recovery looks for.
func (t *tokenRun) nextVersion() string {
	return NextVersion(t.rec.VersionID, t.rec.Generation+1)
}
