package ci

import (
	"testing"
)

// recorder is a testing.TB that records whether the test was failed or skipped.
type recorder struct {
	testing.TB
	failed, skipped bool
	msg             string
}

func (r *recorder) Helper()                           {}
func (r *recorder) Fatalf(format string, args ...any) { r.failed, r.msg = true, format }
func (r *recorder) Skipf(format string, args ...any)  { r.skipped, r.msg = true, format }

func TestMissing(t *testing.T) {
	for _, tt := range []struct {
		env        string
		fail, skip bool
	}{
		{"true", true, false},
		{"1", true, false},
		{"", false, true},
		{"false", false, true},
	} {
		t.Run("CI="+tt.env, func(t *testing.T) {
			t.Setenv("CI", tt.env)
			r := &recorder{TB: t}
			Missing(r, "node not found")
			if r.failed != tt.fail || r.skipped != tt.skip {
				t.Errorf("got failed %v skipped %v, want failed %v skipped %v", r.failed, r.skipped, tt.fail, tt.skip)
			}
		})
	}
}
