package providersim

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// The RFC 6749 simulators must be usable by the standard Go client, in both
// client authentication styles.
func TestInteropWithXOAuth2(t *testing.T) {
	ctx := context.WithValue(context.Background(), oauth2.HTTPClient, testClient)
	for _, style := range []oauth2.AuthStyle{oauth2.AuthStyleInHeader, oauth2.AuthStyleInParams} {
		p := newTestRotating(t, NewClock(t0), nil)
		seed := p.Seed(acmeScope)
		conf := &oauth2.Config{ClientID: testClientID, ClientSecret: testClientSecret,
			Endpoint: oauth2.Endpoint{TokenURL: p.URL(), AuthStyle: style}}
		tok, err := conf.TokenSource(ctx, &oauth2.Token{RefreshToken: seed}).Token()
		if err != nil {
			t.Fatalf("style %d: refresh: %v", style, err)
		}
		if !p.Valid(tok.AccessToken) || tok.RefreshToken != p.Live(seed) || tok.Expiry.IsZero() {
			t.Errorf("style %d: got a token the provider does not recognise as current", style)
		}
		_, err = conf.TokenSource(ctx, &oauth2.Token{RefreshToken: seed}).Token()
		var re *oauth2.RetrieveError
		if !errors.As(err, &re) || re.Response.StatusCode != http.StatusBadRequest || re.ErrorCode != "invalid_grant" {
			t.Errorf("style %d: reuse: got %v, want a 400 invalid_grant RetrieveError", style, err)
		}
	}

	c := newTestClientCredentials(t, NewClock(t0))
	cc := clientcredentials.Config{ClientID: testClientID, ClientSecret: testClientSecret, TokenURL: c.URL(), Scopes: []string{"reports.read"}}
	tok, err := cc.Token(ctx)
	if err != nil {
		t.Fatalf("client_credentials: %v", err)
	}
	if !c.Valid(tok.AccessToken) {
		t.Errorf("client_credentials: token not valid at the provider")
	}
}
