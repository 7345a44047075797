package token_test

import (
	"testing"
	"time"

	"github.com/seed-502fa48b/token-refresher/pkg/token"
)

func TestQuota(t *testing.T) {
	kolkata, err := time.LoadLocation("Asia/Kolkata")
	if err != nil {
		t.Fatal(err)
	}
	london, err := time.LoadLocation("Europe/London")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		raw    []byte
		wantOK bool
		want   token.Quota
	}{
		{"sahamati defaults", validBase(t, "sahamati"), true,
			token.Quota{Key: "sahamati#FIU-ACME-0001", Limit: token.SahamatiDailyLimit, Location: kolkata}},
		{"sahamati explicit policy", edit(t, validBase(t, "sahamati"), func(d map[string]any) {
			d["policy"] = map[string]any{"quota_key": "sahamati-uat", "daily_limit": 100, "quota_timezone": "Europe/London"}
		}), true, token.Quota{Key: "sahamati-uat", Limit: 100, Location: london}},
		{"sahamati key only keeps 300 and IST", edit(t, validBase(t, "sahamati"), func(d map[string]any) {
			d["policy"] = map[string]any{"quota_key": "shared-entity"}
		}), true, token.Quota{Key: "shared-entity", Limit: 300, Location: kolkata}},
		{"explicit policy", edit(t, validBase(t, "form"), func(d map[string]any) {
			d["policy"] = map[string]any{"quota_key": "rotating-prod", "daily_limit": 50, "quota_timezone": "Europe/London"}
		}), true, token.Quota{Key: "rotating-prod", Limit: 50, Location: london}},
		{"limit without key or zone", validBase(t, "cc"), true,
			token.Quota{Key: "login.partner.example#partner-client", Limit: 1000, Location: time.UTC}},
		{"none", validBase(t, "form"), false, token.Quota{}},
		{"none for vault", validBase(t, "json"), false, token.Quota{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := mustParse(t, tt.raw).Quota()
			if ok != tt.wantOK {
				t.Fatalf("ok: got %v, want %v", ok, tt.wantOK)
			}
			if got.Key != tt.want.Key || got.Limit != tt.want.Limit {
				t.Errorf("got key %q limit %d, want key %q limit %d", got.Key, got.Limit, tt.want.Key, tt.want.Limit)
			}
			if (got.Location == nil) != (tt.want.Location == nil) ||
				(got.Location != nil && got.Location.String() != tt.want.Location.String()) {
				t.Errorf("location: got %v, want %v", got.Location, tt.want.Location)
			}
		})
	}
}
