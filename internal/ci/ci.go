// Package ci tells tests whether they run in the project's CI (CI=true), where a missing tool
// is a failure and never a skip.
package ci

import (
	"fmt"
	"os"
	"strconv"
	"testing"
)

// Enabled reports whether CI is set to a true value.
func Enabled() bool {
	on, _ := strconv.ParseBool(os.Getenv("CI"))
	return on
}

// Missing ends a test that cannot run for want of a tool or service: under CI it fails,
// elsewhere it skips and says how to make it fail.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if Enabled() {
		t.Fatalf("required under CI=true: %s", msg)
		return // Fatalf does not return in a real test
	}
	t.Skipf("%s (set CI=true to fail instead)", msg)
}
