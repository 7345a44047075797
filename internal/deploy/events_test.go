package deploy

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"testing"

	"github.com/aws/aws-lambda-go/events"

	"github.com/seed-502fa48b/token-refresher/pkg/invocation"
)

// decodeStrict fails on fields the target type does not know, so a typo in a
// sample event ("detail_type") is caught rather than silently zero.
func decodeStrict(t *testing.T, file string, v any) {
	t.Helper()
	f, err := os.Open(filepath.Join(repoRoot(t), "events", file))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := json.NewDecoder(f)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("events/%s: %v", file, err)
	}
}

func TestScheduledEvent(t *testing.T) {
	var ev events.EventBridgeEvent
	decodeStrict(t, "scheduled.json", &ev)
	if ev.DetailType != "Scheduled Event" || ev.Source != "aws.events" || ev.Version != "0" {
		t.Errorf("got detail-type %q source %q version %q, want Scheduled Event, aws.events, 0", ev.DetailType, ev.Source, ev.Version)
	}
	if ev.ID == "" || ev.Time.IsZero() || ev.Region == "" {
		t.Errorf("id %q, time %v, region %q: want all set", ev.ID, ev.Time, ev.Region)
	}
	if !regexp.MustCompile(`^\d{12}$`).MatchString(ev.AccountID) {
		t.Errorf("account: got %q, want 12 digits", ev.AccountID)
	}
	rule := regexp.MustCompile(`^arn:aws:events:` + regexp.QuoteMeta(ev.Region) + `:` + ev.AccountID + `:rule/.+$`)
	if len(ev.Resources) != 1 || !rule.MatchString(ev.Resources[0]) {
		t.Errorf("resources: got %v, want one rule ARN in %s/%s", ev.Resources, ev.Region, ev.AccountID)
	}
	if string(ev.Detail) != "{}" {
		t.Errorf("detail: got %s, want {}", ev.Detail)
	}
}

func TestRefreshOneEvent(t *testing.T) {
	// The direct-invoke shape of DESIGN §4.
	var in struct {
		Tokens []string `json:"tokens"`
		Force  *bool    `json:"force"`
	}
	decodeStrict(t, "refresh-one.json", &in)
	if len(in.Tokens) == 0 || in.Tokens[0] == "" {
		t.Errorf("tokens: got %v, want at least one name", in.Tokens)
	}
	if in.Force == nil || !*in.Force {
		t.Errorf("force: got %v, want true", in.Force)
	}
}

// The sweep sample is exactly what the template's sweep schedule sends.
func TestSweepEvent(t *testing.T) {
	var got, want invocation.Request
	decodeStrict(t, "sweep.json", &got)
	input := scalar(obj(t, loadTemplate(t), "Resources", "RefresherFunction", "Properties", "Events", "Sweep", "Properties")["Input"])
	if err := json.Unmarshal([]byte(input), &want); err != nil {
		t.Fatalf("template sweep Input %q: %v", input, err)
	}
	if !got.Sweep || got.Force || got.Tokens != nil || got.Ensure != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("events/sweep.json: got %+v, want the template's sweep input %+v", got, want)
	}
}

// The ensure sample is the only input the ensure alias accepts: names, nothing else.
func TestEnsureEvent(t *testing.T) {
	var in invocation.Request
	decodeStrict(t, "ensure.json", &in)
	if len(in.Ensure) == 0 || in.Force || in.Sweep || in.Tokens != nil {
		t.Errorf("events/ensure.json: got %+v, want only ensure names", in)
	}
	for _, n := range in.Ensure {
		if !invocation.ValidName(n) {
			t.Errorf("events/ensure.json: %q is not a valid token name", n)
		}
	}
}
