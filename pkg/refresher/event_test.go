package refresher_test

import (
	"os"
	"strings"
	"testing"

	"github.com/seed-502fa48b/token-refresher/pkg/refresher"
)

func TestParseRequest(t *testing.T) {
	scheduled, err := os.ReadFile("../../events/scheduled.json")
	if err != nil {
		t.Fatal(err)
	}
	one, err := os.ReadFile("../../events/refresh-one.json")
	if err != nil {
		t.Fatal(err)
	}
	scheduler := `{"version":"0","id":"x","detail-type":"Scheduled Event","source":"aws.scheduler","account":"1","time":"t","region":"r","resources":["a"],"detail":{}}`
	tests := []struct {
		name      string
		event     string
		scheduled bool // a reconcile: nothing named, no sweep
		sweep     bool
		ensure    []string
		tokens    []string
		force     bool
		wantErr   string
	}{
		{name: "events/scheduled.json", event: string(scheduled), scheduled: true},
		{name: "scheduler input", event: scheduler, scheduled: true},
		{name: "empty object", event: `{}`, scheduled: true},
		{name: "events/refresh-one.json", event: string(one), tokens: []string{"sahamati-prod"}, force: true},
		{name: "direct without force", event: `{"tokens":["a","b/c"]}`, tokens: []string{"a", "b/c"}},
		{name: "s3 event", event: `{"Records":[{"s3":{}}]}`, wantErr: "unknown field Records"},
		{name: "other detail-type", event: `{"detail-type":"Object Created","source":"aws.s3"}`, wantErr: "unknown event"},
		{name: "tokens not a list", event: `{"tokens":"a"}`, wantErr: "tokens: want []string"},
		{name: "force not bool", event: `{"tokens":["a"],"force":"yes"}`, wantErr: "force: want bool"},
		{name: "empty tokens", event: `{"tokens":[]}`, wantErr: "at least one"},
		{name: "bad name", event: `{"tokens":["../x"]}`, wantErr: "tokens[0]: not a valid token name"},
		{name: "duplicate", event: `{"tokens":["a","a"]}`, wantErr: "named twice"},
		{name: "array", event: `[1]`, wantErr: "want a JSON object"},
		{name: "force alone", event: `{"force":true}`, wantErr: "tokens: required"},
		{name: "events/sweep.json", event: readEvent(t, "sweep.json"), sweep: true},
		{name: "events/ensure.json", event: readEvent(t, "ensure.json"), ensure: []string{"acme-business"}},
		{name: "sweep false", event: `{"sweep":false}`, wantErr: "sweep: want true"},
		{name: "ensure with force", event: `{"ensure":["a"],"force":true}`, wantErr: "force: only with tokens"},
		{name: "ensure and tokens", event: `{"ensure":["a"],"tokens":["a"]}`, wantErr: "only one of"},
		{name: "ensure bad name", event: `{"ensure":["-x"]}`, wantErr: "ensure[0]: not a valid token name"},
		{name: "ensure empty", event: `{"ensure":[]}`, wantErr: "ensure: want at least one"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := refresher.ParseRequest([]byte(tt.event))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got err %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("got err %v, want none", err)
			}
			reconcile := !got.Sweep && len(got.Tokens) == 0 && len(got.Ensure) == 0
			if reconcile != tt.scheduled || got.Sweep != tt.sweep || got.Force != tt.force ||
				strings.Join(got.Tokens, ",") != strings.Join(tt.tokens, ",") || strings.Join(got.Ensure, ",") != strings.Join(tt.ensure, ",") {
				t.Errorf("got %+v, want reconcile=%v sweep=%v ensure=%v tokens=%v force=%v", got, tt.scheduled, tt.sweep, tt.ensure, tt.tokens, tt.force)
			}
		})
	}
}

func readEvent(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile("../../events/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
