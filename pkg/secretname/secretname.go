// Package secretname is the one rule for the names of a token's two secrets:
// "<prefix>private/<name>" (refresher only) and "<prefix>access/<name>" (what consumers read).
// The engine, tokenctl, the consumer library and the local runner all name secrets through it.
package secretname

import "strings"

// DefaultPrefix is the prefix every secret name starts with unless configured otherwise.
const DefaultPrefix = "token-refresher/"

const (
	privateDir = "private/"
	accessDir  = "access/"
)

// Private is the private secret of token name: the refresh token and provider credentials.
func Private(prefix, name string) string { return prefix + privateDir + name }

// Access is the access secret of token name: the document consumers read.
func Access(prefix, name string) string { return prefix + accessDir + name }

// PrivatePrefix is what every private secret's name starts with.
func PrivatePrefix(prefix string) string { return prefix + privateDir }

// AccessPrefix is what every access secret's name starts with.
func AccessPrefix(prefix string) string { return prefix + accessDir }

// TokenOfPrivate returns the token name of a private secret's name under prefix.
func TokenOfPrivate(prefix, secret string) (string, bool) {
	return strings.CutPrefix(secret, PrivatePrefix(prefix))
}

// TokenOfAccess returns the token name of an access secret's name under prefix.
func TokenOfAccess(prefix, secret string) (string, bool) {
	return strings.CutPrefix(secret, AccessPrefix(prefix))
}

// TokenOfAccessAnyPrefix derives <name> from "<any prefix>access/<name>" when the prefix is
// not known (a consumer given only a secret name). "access/" counts only at the start of a
// path segment, so "myaccess/" in a prefix does not. It returns "" for any other shape.
func TokenOfAccessAnyPrefix(secret string) string {
	for i := 0; ; {
		j := strings.Index(secret[i:], accessDir)
		if j < 0 {
			return ""
		}
		i += j
		if i == 0 || secret[i-1] == '/' {
			return secret[i+len(accessDir):]
		}
		i += len(accessDir)
	}
}
