package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"

	"github.com/seed-502fa48b/token-refresher/internal/awsemu"
	"github.com/seed-502fa48b/token-refresher/internal/bootstrapbin"
	"github.com/seed-502fa48b/token-refresher/internal/lambdaemu"
	"github.com/seed-502fa48b/token-refresher/internal/providersim"
	"github.com/seed-502fa48b/token-refresher/pkg/invocation"
	"github.com/seed-502fa48b/token-refresher/pkg/ledger"
	"github.com/seed-502fa48b/token-refresher/pkg/token"
)

// lockedBuffer is a writer tokenctl can print to while the test reads it; urls receives
// every line that holds the authorization URL.
type lockedBuffer struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	urls chan string
}

func newLockedBuffer() *lockedBuffer { return &lockedBuffer{urls: make(chan string, 4)} }

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, line := range strings.Split(string(p), "\n") {
		if s := strings.TrimSpace(line); strings.HasPrefix(s, "http") && strings.Contains(s, "/authorize?") {
			b.urls <- s
		}
	}
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// lambdaFrontEnd is the Lambda Invoke API (POST /2015-03-31/functions/NAME/invocations)
// in front of the real bootstrap run by internal/lambdaemu: what `make local` gives with
// AWS's Runtime Interface Emulator. It records the payloads it forwarded.
type lambdaFrontEnd struct {
	mu       sync.Mutex
	payloads []string
}

func startRefresher(t *testing.T, e awsEnv, logs io.Writer) (*lambdaFrontEnd, string) {
	t.Helper()
	ctx := context.Background()
	bin, err := bootstrapbin.Path(ctx)
	if err != nil {
		t.Fatal(err)
	}
	emu, err := lambdaemu.Start(ctx, lambdaemu.Options{
		Binary:  bin,
		Env:     append(awsemu.Shared(t).Env(), "STATE_TABLE="+e.table, "SECRET_PREFIX="+e.prefix),
		Timeout: 60 * time.Second, // the function starts a refresh only with a full refresh budget left (about 47 s)
		Stdout:  logs,
		Stderr:  logs,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = emu.Close() })
	fe := &lambdaFrontEnd{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || !strings.HasPrefix(r.URL.Path, "/2015-03-31/functions/") || !strings.HasSuffix(r.URL.Path, "/invocations") {
			http.Error(w, `{"message":"unexpected request"}`, http.StatusNotFound)
			return
		}
		body, _ := io.ReadAll(r.Body)
		fe.mu.Lock()
		fe.payloads = append(fe.payloads, string(body))
		fe.mu.Unlock()
		res, err := emu.Invoke(r.Context(), body)
		if err != nil {
			w.Header().Set("X-Amzn-ErrorType", "ServiceException")
			w.WriteHeader(http.StatusInternalServerError)
			_ = json.NewEncoder(w).Encode(map[string]string{"message": err.Error()})
			return
		}
		if res.Err != nil {
			w.Header().Set("X-Amz-Function-Error", "Unhandled")
			_ = json.NewEncoder(w).Encode(map[string]string{"errorMessage": res.Err.Message, "errorType": res.Err.Type})
			return
		}
		_, _ = w.Write(res.Payload)
	}))
	t.Cleanup(srv.Close)
	return fe, srv.URL
}

// useLocalEnv sets the environment docs/tokenctl.md's tutorial exports: moto for Secrets Manager
// and DynamoDB, the Lambda front end for Invoke, nothing from the machine's AWS setup.
func useLocalEnv(t *testing.T, e awsEnv, lambdaURL string) {
	t.Helper()
	for _, kv := range awsemu.Shared(t).Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	dir := t.TempDir()
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "config"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "credentials"))
	t.Setenv("AWS_PROFILE", "")
	t.Setenv("AWS_SESSION_TOKEN", "")
	t.Setenv("AWS_ENDPOINT_URL_LAMBDA", lambdaURL)
	t.Setenv("SECRET_PREFIX", e.prefix)
	t.Setenv("STATE_TABLE", e.table)
	t.Setenv("REFRESHER_FUNCTION", "function")
	t.Setenv("TR_REFRESHER_ROLE_ARN", "")
	t.Setenv("TR_ADMIN_ROLE_ARN", "")
}

// authorizeHeadless runs `tokenctl authorize` through run() (the real SDK configuration)
// and plays the browser: it GETs the printed URL and follows the provider's redirect to
// tokenctl's loopback listener. It returns the exit code, stdout, stderr and what the
// browser was shown.
func authorizeHeadless(t *testing.T, args ...string) (int, string, string, string) {
	t.Helper()
	stdout, stderr := newLockedBuffer(), newLockedBuffer()
	done := make(chan int, 1)
	go func() {
		done <- run(context.Background(), append([]string{"authorize", "--no-browser"}, args...), stdout, stderr)
	}()
	var page string
	select {
	case u := <-stdout.urls:
		resp, err := http.Get(u) // follows the 302 to http://127.0.0.1:PORT/callback
		if err != nil {
			t.Fatalf("browser: GET %s: %v", u, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		page = string(b)
	case code := <-done:
		return code, stdout.String(), stderr.String(), ""
	case <-time.After(time.Minute):
		t.Fatalf("no authorization URL printed:\n%s\n%s", stdout.String(), stderr.String())
	}
	select {
	case code := <-done:
		return code, stdout.String(), stderr.String(), page
	case <-time.After(time.Minute):
		t.Fatalf("authorize did not finish:\n%s\n%s", stdout.String(), stderr.String())
	}
	return 0, "", "", ""
}

// rotatingAuthDoc is a new token's settings; without authorize_url tokenctl discovers the
// endpoint from the provider's metadata.
func rotatingAuthDoc(rot *providersim.Rotating, clientSecret string, withAuthorizeURL bool) string {
	authURL := ""
	if withAuthorizeURL {
		authURL = `"authorize_url":"` + rot.AuthorizeURL() + `",`
	}
	return `{"provider":{"grant":"refresh_token","body":"form","token_url":"` + rot.URL() + `",` + authURL + `
  "client_id":"tokenctl-app","client_secret":"` + clientSecret + `","client_auth":"basic","scope":"offline_access fund.read","reuse_grace":"60s"},
  "policy":{"refresh_margin":"5m"},"x_owner":"payments-team"}`
}

// Acceptance (issue 11): tokenctl authorize, driven headlessly against moto and the
// rotating simulator, stores a refresh token that the real function then refreshes.
func TestAuthorizeEndToEnd(t *testing.T) {
	e := newAWSEnv(t)
	const clientSecret = "cs-authorize-e2e-0b1c2d3e4f"
	rot := providersim.NewRotating(providersim.RotatingOptions{ClientID: "tokenctl-app", ClientSecret: clientSecret, ReuseGrace: time.Minute})
	t.Cleanup(rot.Close)
	var logs lockedLog
	fe, lambdaURL := startRefresher(t, e, &logs)
	useLocalEnv(t, e, lambdaURL)
	// As `tokenctl template refresh_token` leaves it: the refresh token still a placeholder.
	docPath := writeFile(t, "acme.json", strings.Replace(rotatingAuthDoc(rot, clientSecret, true), `"x_owner"`, `"refresh_token":"REPLACE_ME","x_owner"`, 1))
	docBefore, _ := os.ReadFile(docPath)

	code, stdout, stderr, page := authorizeHeadless(t, "acme", "--file", docPath, "--business", "acme")
	if code != exitOK {
		t.Fatalf("authorize: exit %d\nstdout:\n%s\nstderr:\n%s\nfunction logs:\n%s", code, stdout, stderr, logs.String())
	}
	if !strings.Contains(page, "authorised acme") {
		t.Errorf("browser page: got %q", page)
	}
	for _, want := range []string{"code_challenge_method=S256", "code_challenge=", "state=", "redirect_uri=http%3A%2F%2F127.0.0.1%3A",
		"created " + e.prefix + "private/acme", `scope "offline_access fund.read target:b/acme"`, "acme", invocation.OutcomeRefreshed} {
		if !strings.Contains(stdout, want) {
			t.Errorf("stdout lacks %q:\n%s", want, stdout)
		}
	}
	if !strings.Contains(stderr, "not fenced") {
		t.Errorf("stderr: got %q, want a warning that the secret is not fenced", stderr)
	}
	first := stdout + stderr
	if len(fe.payloads) != 1 || fe.payloads[0] != `{"tokens":["acme"],"force":true}` {
		t.Errorf("invocations: got %q, want one forced refresh of acme", fe.payloads)
	}

	// The function adopted and refreshed it: generation 1, the committed refresh token is
	// the provider's live one in the family authorised for business acme.
	rec, doc := e.committed(t, "acme")
	rt := doc.RefreshToken.Reveal()
	if rec.Generation != 1 || rec.Status != ledger.StatusActive || rot.Live(rt) != rt || rot.Scope(rt) != "offline_access fund.read target:b/acme" {
		t.Errorf("after authorize: generation %d status %s, live %v, family scope %q", rec.Generation, rec.Status, rot.Live(rt) == rt, rot.Scope(rt))
	}
	if doc.Provider.Scope != "offline_access fund.read target:b/acme" || doc.Provider.ClientSecret.Reveal() != clientSecret || len(doc.Extra()) != 1 {
		t.Errorf("stored settings: scope %q, client secret kept %v, extra fields %v", doc.Provider.Scope, doc.Provider.ClientSecret.Reveal() == clientSecret, doc.Extra())
	}
	if !rot.Valid(e.accessToken(t, "acme")) {
		t.Error("the published access token is not valid at the provider")
	}
	if doc.AuthorizedAt.IsZero() {
		t.Error("the committed document lost authorized_at: the refresher must keep the mark authorize set")
	}
	if rot.Authorizations() != 1 || rot.Families() != 1 {
		t.Errorf("provider: %d authorizations, %d families; want 1 and 1", rot.Authorizations(), rot.Families())
	}
	if after, _ := os.ReadFile(docPath); !bytes.Equal(after, docBefore) {
		t.Error("authorize changed the --file document")
	}

	// Authorise again (a new business code for the same token name): only the token fields
	// change, the settings and unknown fields stay, and the function adopts the new chain.
	code, stdout, stderr, _ = authorizeHeadless(t, "acme", "--business", "acme2")
	if code != exitOK {
		t.Fatalf("re-authorize: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	rec2, doc2 := e.committed(t, "acme")
	rt2 := doc2.RefreshToken.Reveal()
	if !doc2.NewAuthorizationOver(doc) {
		t.Errorf("after re-authorize: authorized_at %v, want later than the first's %v", doc2.AuthorizedAt, doc.AuthorizedAt)
	}
	if rec2.Generation <= rec.Generation || rt2 == rt || rot.Live(rt2) != rt2 || rot.Scope(rt2) != "offline_access fund.read target:b/acme2" ||
		doc2.Provider.ClientSecret.Reveal() != clientSecret || doc2.Provider.TokenURL != rot.URL() || len(doc2.Extra()) != 1 {
		t.Errorf("after re-authorize: generation %d (was %d), new chain %v, live %v, scope %q, settings kept %v",
			rec2.Generation, rec.Generation, rt2 != rt, rot.Live(rt2) == rt2, rot.Scope(rt2), doc2.Provider.ClientSecret.Reveal() == clientSecret)
	}
	if !strings.Contains(stdout, "updated "+e.prefix+"private/acme") || strings.Contains(stderr, "not fenced") {
		t.Errorf("re-authorize output:\n%s\n%s", stdout, stderr)
	}
	allOut := []string{stdout, stderr}

	// Another business of the same provider: a new token with acme's settings.
	code, stdout, stderr, _ = authorizeHeadless(t, "globex", "--like", "acme", "--business", "globex")
	if code != exitOK {
		t.Fatalf("authorize --like: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	rec3, doc3 := e.committed(t, "globex")
	rt3 := doc3.RefreshToken.Reveal()
	if rec3.Generation != 1 || rot.Live(rt3) != rt3 || rot.Scope(rt3) != "offline_access fund.read target:b/globex" ||
		doc3.Provider.ClientID != "tokenctl-app" || doc3.Provider.TokenURL != rot.URL() || doc3.Policy.RefreshMargin != 5*time.Minute {
		t.Errorf("globex: generation %d, live %v, scope %q, settings %+v", rec3.Generation, rot.Live(rt3) == rt3, rot.Scope(rt3), doc3.Provider)
	}
	if _, acmeNow := e.committed(t, "acme"); acmeNow.RefreshToken.Reveal() != rt2 {
		t.Error("authorizing globex changed acme")
	}
	allOut = append(allOut, stdout, stderr)

	// Neither refresh token, nor any other value the provider issued, nor the client
	// secret, appears in anything tokenctl or the function printed.
	assertNoSecrets(t, append(rot.Issued(), clientSecret), append(allOut, first, logs.String(), strings.Join(fe.payloads, "\n"))...)
}

// Issue 16 item 4: authorize stores the authorization endpoint it used, so authorising
// again is `tokenctl authorize NAME` with nothing else to remember. The token URL carries a
// query the provider's metadata does not name, so discovery finds no endpoint: the second
// run can only have taken it from the stored document.
func TestAuthorizeRemembersEndpoint(t *testing.T) {
	e := newAWSEnv(t)
	const clientSecret = "cs-authorize-remember-5e6f7a8b"
	rot := providersim.NewRotating(providersim.RotatingOptions{ClientID: "tokenctl-app", ClientSecret: clientSecret})
	t.Cleanup(rot.Close)
	useLocalEnv(t, e, "http://127.0.0.1:1") // never reached
	t.Setenv("REFRESHER_FUNCTION", "")      // adopted on the next scheduled run; not what this test is about
	tokenURL := rot.URL() + "?tenant=acme"
	doc := strings.Replace(rotatingAuthDoc(rot, clientSecret, false), `"token_url":"`+rot.URL()+`"`, `"token_url":"`+tokenURL+`"`, 1)
	path := writeFile(t, "acme.json", doc)
	readDoc := func() *token.Private {
		t.Helper()
		_, raw := e.current(t, "acme")
		p, err := token.ParsePrivate([]byte(raw))
		if err != nil {
			t.Fatal(err)
		}
		return p
	}

	// Nothing names the endpoint: neither the document, nor a flag, nor the metadata.
	var out, errb strings.Builder
	code := run(context.Background(), []string{"authorize", "acme", "--no-browser", "--file", path}, &out, &errb)
	if code != exitUsage || !strings.Contains(errb.String(), "no authorization endpoint") || e.exists(t, "acme") {
		t.Fatalf("without an endpoint: got exit %d, stderr %q, secret created %v; want %d, no authorization endpoint, none",
			code, errb.String(), e.exists(t, "acme"), exitUsage)
	}

	before := time.Now()
	code, stdout1, stderr1, _ := authorizeHeadless(t, "acme", "--file", path, "--authorize-url", rot.AuthorizeURL(), "--business", "acme")
	if code != exitOK {
		t.Fatalf("authorize --authorize-url: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout1, stderr1)
	}
	first := readDoc()
	// Marked as a new authorisation at the time of the code exchange (issue 17 sequence 5).
	if at := first.AuthorizedAt; at.Before(before) || at.After(time.Now()) {
		t.Errorf("first authorisation: authorized_at got %v, want the time of the exchange (after %v)", at, before)
	}
	rt1 := first.RefreshToken.Reveal()
	if got, want := first.Provider.AuthorizeURL, rot.AuthorizeURL(); got != want {
		t.Errorf("stored provider.authorize_url: got %q, want %q", got, want)
	}
	if first.Provider.TokenURL != tokenURL || rot.Live(rt1) != rt1 {
		t.Errorf("first authorisation: token_url %q (want %q), live refresh token %v", first.Provider.TokenURL, tokenURL, rot.Live(rt1) == rt1)
	}

	code, stdout2, stderr2, _ := authorizeHeadless(t, "acme")
	if code != exitOK {
		t.Fatalf("authorize NAME: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout2, stderr2)
	}
	second := readDoc()
	if !second.NewAuthorizationOver(first) {
		t.Errorf("second authorisation: authorized_at %v is not later than the first's %v", second.AuthorizedAt, first.AuthorizedAt)
	}
	rt2 := second.RefreshToken.Reveal()
	if rt2 == rt1 || rot.Live(rt2) != rt2 || rot.Scope(rt2) != "offline_access fund.read target:b/acme" {
		t.Errorf("second authorisation: new refresh token %v, live %v, scope %q; want a new live token of scope target:b/acme",
			rt2 != rt1, rot.Live(rt2) == rt2, rot.Scope(rt2))
	}
	if second.Provider.AuthorizeURL != rot.AuthorizeURL() || !strings.Contains(stdout2, rot.AuthorizeURL()+"?") {
		t.Errorf("second authorisation: stored endpoint %q, printed URL in %q; want %s", second.Provider.AuthorizeURL, stdout2, rot.AuthorizeURL())
	}
	if got := rot.Authorizations(); got != 2 {
		t.Errorf("provider authorizations: got %d, want 2", got)
	}
	assertNoSecrets(t, append(rot.Issued(), clientSecret), out.String(), errb.String(), stdout1, stderr1, stdout2, stderr2)
}

// The provider refuses (no business in the scope): nothing is written, exit 1. The
// document has no authorize_url: tokenctl finds /authorize in the provider's metadata.
func TestAuthorizeRefused(t *testing.T) {
	e := newAWSEnv(t)
	rot := providersim.NewRotating(providersim.RotatingOptions{ClientID: "tokenctl-app", ClientSecret: "cs-refused"})
	t.Cleanup(rot.Close)
	useLocalEnv(t, e, "http://127.0.0.1:1") // never reached
	code, stdout, stderr, page := authorizeHeadless(t, "acme", "--file", writeFile(t, "acme.json", rotatingAuthDoc(rot, "cs-refused", false)))
	if code != exitFail || !strings.Contains(stderr, "the provider refused the authorisation: invalid_scope") || !strings.Contains(stderr, "nothing written") {
		t.Errorf("exit %d\nstdout %s\nstderr %s", code, stdout, stderr)
	}
	if !strings.Contains(page, "failed") || e.exists(t, "acme") {
		t.Errorf("page %q, secret created %v", page, e.exists(t, "acme"))
	}
}

// Nobody approves: the wait ends at --timeout and nothing is written.
func TestAuthorizeTimeout(t *testing.T) {
	e := newAWSEnv(t)
	rot := providersim.NewRotating(providersim.RotatingOptions{ClientID: "tokenctl-app", ClientSecret: "cs-timeout"})
	t.Cleanup(rot.Close)
	useLocalEnv(t, e, "http://127.0.0.1:1")
	var out, errb strings.Builder
	code := run(context.Background(), []string{"authorize", "acme", "--no-browser", "--timeout", "100ms", "--business", "acme",
		"--file", writeFile(t, "acme.json", rotatingAuthDoc(rot, "cs-timeout", true))}, &out, &errb)
	if code != exitFail || !strings.Contains(errb.String(), "no redirect within 100ms (--timeout); nothing written") || e.exists(t, "acme") {
		t.Errorf("exit %d, stderr %q, secret created %v", code, errb.String(), e.exists(t, "acme"))
	}
	if rot.Authorizations() != 0 {
		t.Errorf("authorizations: got %d, want 0", rot.Authorizations())
	}
}

// The callback ignores a request whose state is not ours, and answers a wrong verifier
// (a code stolen for another flow) with the provider's invalid_grant.
func TestAuthorizeCallback(t *testing.T) {
	cb := newCallback("acme", "good-state")
	srv := httptest.NewServer(cb)
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/callback?code=stolen&state=bad-state")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("wrong state: got %d, want 400", resp.StatusCode)
	}
	select {
	case r := <-cb.result:
		t.Fatalf("wrong state delivered %+v", r)
	default:
	}
	resp, err = http.Get(srv.URL + "/callback?code=the-code&state=good-state")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if r := <-cb.result; r.err != nil || r.code != "the-code" {
		t.Errorf("good state: got %+v", r)
	}
}

func TestAuthorizeUsage(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no name", []string{"authorize"}, "want one token NAME"},
		{"bad business", []string{"authorize", "acme", "--business", "a b"}, "--business"},
		{"bad port", []string{"authorize", "acme", "--port", "70000"}, "--port"},
		{"file and like", []string{"authorize", "acme", "--file", "x.json", "--like", "other"}, "pass one"},
		{"half a fence", []string{"authorize", "acme", "--refresher-role-arn", "arn:aws:iam::111122223333:role/r"}, "--admin-role-arn: required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCLI(t, nil, nil)
			if code := c.run(tt.args...); code != exitUsage || !strings.Contains(c.err.String(), tt.want) {
				t.Errorf("exit %d, stderr %q; want %d and %q", code, c.err.String(), exitUsage, tt.want)
			}
		})
	}
}

// lockedLog collects the function's logs from its stdout and stderr goroutines.
type lockedLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lockedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *lockedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// committed reads the token record and the private version it points at.
func (e awsEnv) committed(t *testing.T, name string) (ledger.Record, *token.Private) {
	t.Helper()
	ctx := context.Background()
	rec, err := ledger.New(e.ddb, ledger.Options{Table: e.table}).Get(ctx, name)
	if err != nil {
		t.Fatalf("record %s: %v", name, err)
	}
	out, err := e.sm.GetSecretValue(ctx, &secretsmanager.GetSecretValueInput{SecretId: aws.String(e.prefix + "private/" + name), VersionId: aws.String(rec.VersionID)})
	if err != nil {
		t.Fatalf("committed version of %s: %v", name, err)
	}
	p, err := token.ParsePrivate([]byte(aws.ToString(out.SecretString)))
	if err != nil {
		t.Fatal(err)
	}
	return rec, p
}

func (e awsEnv) accessToken(t *testing.T, name string) string {
	t.Helper()
	out, err := e.sm.GetSecretValue(context.Background(), &secretsmanager.GetSecretValueInput{SecretId: aws.String(e.prefix + "access/" + name)})
	if err != nil {
		t.Fatalf("access secret %s: %v", name, err)
	}
	a, err := token.ParseAccess([]byte(aws.ToString(out.SecretString)))
	if err != nil {
		t.Fatal(err)
	}
	return a.AccessToken.Reveal()
}

// Issue 10: a token seeded through tokenctl is adopted at once when the refresher function
// is known — one unforced invocation — and on the next scheduled run otherwise.
func TestSeedAdoptsAtOnce(t *testing.T) {
	e := newAWSEnv(t)
	vault := providersim.NewVault(providersim.VaultOptions{})
	t.Cleanup(vault.Close)
	var logs lockedLog
	fe, lambdaURL := startRefresher(t, e, &logs)
	useLocalEnv(t, e, lambdaURL)
	seed := vault.Seed()
	doc := `{"provider":{"grant":"refresh_token","body":"json","token_url":"` + vault.URL() + `","client_auth":"none"},"refresh_token":"` + seed + `"}`
	path := writeFile(t, "vault.json", doc)

	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"seed", "vault", "--file", path}, &stdout, &stderr); code != exitOK {
		t.Fatalf("seed: exit %d\nstdout:\n%s\nstderr:\n%s\nfunction logs:\n%s", code, stdout.String(), stderr.String(), logs.String())
	}
	if len(fe.payloads) != 1 || fe.payloads[0] != `{"tokens":["vault"]}` {
		t.Errorf("invocations: got %q, want one unforced request for vault", fe.payloads)
	}
	if !strings.Contains(stdout.String(), invocation.OutcomeRefreshed) {
		t.Errorf("stdout: got %q, want the report row refreshed", stdout.String())
	}
	rec, committed := e.committed(t, "vault")
	rt := committed.RefreshToken.Reveal()
	if rec.Generation != 1 || rec.Status != ledger.StatusActive || rt == seed || vault.Live() != rt {
		t.Errorf("after seed: generation %d status %s, rotated %v, live %v; want generation 1, active, the provider's live refresh token",
			rec.Generation, rec.Status, rt != seed, vault.Live() == rt)
	}
	if !vault.Valid(e.accessToken(t, "vault")) {
		t.Error("the published access token is not valid at the provider")
	}

	// Without a function: written, nothing invoked, and the output says when it is adopted.
	t.Setenv("REFRESHER_FUNCTION", "")
	stdout.Reset()
	stderr.Reset()
	if code := run(context.Background(), []string{"seed", "other", "--file", writeFile(t, "other.json", sahamatiDoc)}, &stdout, &stderr); code != exitOK {
		t.Fatalf("seed without a function: exit %d\n%s\n%s", code, stdout.String(), stderr.String())
	}
	if len(fe.payloads) != 1 || !strings.Contains(stdout.String(), "next scheduled run") {
		t.Errorf("without a function: %d invocations, stdout %q; want none and a note on adoption", len(fe.payloads), stdout.String())
	}
	assertNoSecrets(t, append(vault.Issued(), seed, seedEntitySecret), stdout.String(), stderr.String(), logs.String(), strings.Join(fe.payloads, "\n"))
}
