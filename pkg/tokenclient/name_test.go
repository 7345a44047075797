package tokenclient

import "testing"

func TestTokenNameFrom(t *testing.T) {
	tests := []struct {
		secret, want string
	}{
		{"token-refresher/access/sahamati", "sahamati"},
		{"token-refresher/access/team/vault", "team/vault"},
		{"access/x", "x"},
		{"myaccess/access/x", "x"},
		{"token-refresher/private/sahamati", ""},
		{"sahamati", ""},
		{"arn:aws:secretsmanager:ap-south-1:123456789012:secret:token-refresher/access/sahamati-AbC123", "sahamati"},
		{"arn:aws:secretsmanager:ap-south-1:123456789012:key:nothing", ""},
	}
	for _, tt := range tests {
		t.Run(tt.secret, func(t *testing.T) {
			if got := tokenNameFrom(tt.secret); got != tt.want {
				t.Errorf("tokenNameFrom(%q) = %q, want %q", tt.secret, got, tt.want)
			}
		})
	}
}
