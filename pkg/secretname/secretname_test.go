package secretname

import "testing"

func TestNames(t *testing.T) {
	if got, want := Private("p/", "acme"), "p/private/acme"; got != want {
		t.Errorf("Private: got %q, want %q", got, want)
	}
	if got, want := Access("p/", "acme"), "p/access/acme"; got != want {
		t.Errorf("Access: got %q, want %q", got, want)
	}
	if n, ok := TokenOfPrivate("p/", "p/private/a/b"); !ok || n != "a/b" {
		t.Errorf("TokenOfPrivate: got %q %v, want a/b true", n, ok)
	}
	if _, ok := TokenOfPrivate("p/", "p/access/a"); ok {
		t.Error("TokenOfPrivate accepted an access secret")
	}
	if n, ok := TokenOfAccess("p/", "p/access/a"); !ok || n != "a" {
		t.Errorf("TokenOfAccess: got %q %v, want a true", n, ok)
	}
}

func TestTokenOfAccessAnyPrefix(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"token-refresher/access/acme", "acme"},
		{"access/acme", "acme"},
		{"team/myaccess/access/x", "x"},
		{"myaccess/acme", ""},
		{"token-refresher/private/acme", ""},
	} {
		t.Run(tc.in, func(t *testing.T) {
			if got := TokenOfAccessAnyPrefix(tc.in); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}
