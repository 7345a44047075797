package providersim

import (
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
)

// t0 is an arbitrary start for the injected clocks.
var t0 = time.Date(2025, 7, 3, 6, 0, 0, 0, time.UTC)

var testClient = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 128}}

type reply struct {
	status int
	header http.Header
	raw    []byte
	body   map[string]any // nil when the body is not a JSON object
}

func (r reply) str(key string) string {
	s, _ := r.body[key].(string)
	return s
}

func send(t *testing.T, req *http.Request) reply {
	t.Helper()
	r, err := try(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	return r
}

// try is send for goroutines other than the test's, which must not call t.Fatal.
func try(req *http.Request) (reply, error) {
	resp, err := testClient.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return reply{}, err
	}
	r := reply{status: resp.StatusCode, header: resp.Header, raw: raw}
	_ = json.Unmarshal(raw, &r.body)
	return r, nil
}

func newPost(t *testing.T, u, contentType, body string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, u, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	return req
}

const formType = "application/x-www-form-urlencoded"

func postForm(t *testing.T, u string, form url.Values) reply {
	t.Helper()
	return send(t, newPost(t, u, formType, form.Encode()))
}

func postJSON(t *testing.T, u, body string) reply {
	t.Helper()
	return send(t, newPost(t, u, "application/json", body))
}

func sortedKeys(m map[string]any) []string {
	return slices.Sorted(maps.Keys(m))
}

func wantKeys(t *testing.T, r reply, want ...string) {
	t.Helper()
	slices.Sort(want)
	if got := sortedKeys(r.body); !slices.Equal(got, want) {
		t.Errorf("body keys: got %v, want %v (body %s)", got, want, r.raw)
	}
}

func wantStatus(t *testing.T, r reply, want int) {
	t.Helper()
	if r.status != want {
		t.Fatalf("status: got %d, want %d (body %s)", r.status, want, r.raw)
	}
}

func wantContentType(t *testing.T, r reply, want string) {
	t.Helper()
	if got := r.header.Get("Content-Type"); got != want {
		t.Errorf("Content-Type: got %q, want %q", got, want)
	}
}
