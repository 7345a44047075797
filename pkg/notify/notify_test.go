package notify_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/eventbridge"

	"github.com/seed-502fa48b/token-refresher/pkg/notify"
)

// signingSecret is the client's secret access key: it must never reach a request body.
const signingSecret = "wJalrXUtnFEMI-signing-secret-7f3a"

// wireEntry is one PutEvents request entry as EventBridge receives it (JSON 1.1 protocol).
type wireEntry struct {
	Source       string
	DetailType   string
	Detail       string
	EventBusName string
	Time         float64 // epoch seconds
}

// fakeBus speaks EventBridge's PutEvents JSON API the way the service does: at most 10
// entries per call (ValidationException otherwise), Source/DetailType/Detail required, Detail a
// JSON object (MalformedDetail otherwise), FailedEntryCount with positional result entries.
type fakeBus struct {
	t    *testing.T
	srv  *httptest.Server
	mu   sync.Mutex
	raw  [][]byte      // request bodies
	hdrs []http.Header // request headers
	got  [][]wireEntry // batches in arrival order
	// failEntry decides a per-entry error code for the n-th call (1-based); "" = accepted.
	failEntry func(call int, e wireEntry) string
	// failCall answers the whole n-th call with a ValidationException when it returns true.
	failCall func(call int) bool
}

func newFakeBus(t *testing.T) *fakeBus {
	t.Helper()
	b := &fakeBus{t: t}
	b.srv = httptest.NewServer(http.HandlerFunc(b.serve))
	t.Cleanup(b.srv.Close)
	return b
}

func (b *fakeBus) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if r.Method != http.MethodPost || r.Header.Get("X-Amz-Target") != "AWSEvents.PutEvents" ||
		r.Header.Get("Content-Type") != "application/x-amz-json-1.1" {
		b.t.Errorf("request: got %s %q %q, want POST AWSEvents.PutEvents application/x-amz-json-1.1",
			r.Method, r.Header.Get("X-Amz-Target"), r.Header.Get("Content-Type"))
		writeError(w, "UnknownOperationException", "unknown operation")
		return
	}
	if !strings.HasPrefix(r.Header.Get("Authorization"), "AWS4-HMAC-SHA256 ") {
		writeError(w, "MissingAuthenticationTokenException", "request is not signed")
		return
	}
	var in struct{ Entries []wireEntry }
	if err := json.Unmarshal(body, &in); err != nil {
		writeError(w, "SerializationException", err.Error())
		return
	}
	b.mu.Lock()
	b.raw = append(b.raw, body)
	b.hdrs = append(b.hdrs, r.Header.Clone())
	b.got = append(b.got, in.Entries)
	call := len(b.got)
	b.mu.Unlock()

	if call > 50 {
		// A publisher that resends for ever fails here instead of hanging the test.
		b.t.Errorf("PutEvents call %d: want far fewer calls", call)
		writeError(w, "ValidationException", "too many calls")
		return
	}
	if len(in.Entries) < 1 || len(in.Entries) > 10 {
		writeError(w, "ValidationException", fmt.Sprintf("1 validation error detected: Value at 'entries' failed to satisfy constraint: Member must have length less than or equal to 10 (got %d)", len(in.Entries)))
		return
	}
	if b.failCall != nil && b.failCall(call) {
		writeError(w, "ValidationException", "injected call failure")
		return
	}
	type result struct {
		EventId      string `json:",omitempty"`
		ErrorCode    string `json:",omitempty"`
		ErrorMessage string `json:",omitempty"`
	}
	out := struct {
		FailedEntryCount int
		Entries          []result
	}{}
	for i, e := range in.Entries {
		code := ""
		var detail map[string]any
		switch {
		case e.Source == "" || e.DetailType == "" || e.Detail == "":
			code = "InvalidArgument"
		case json.Unmarshal([]byte(e.Detail), &detail) != nil:
			code = "MalformedDetail"
		case b.failEntry != nil:
			code = b.failEntry(call, e)
		}
		if code != "" {
			out.FailedEntryCount++
			out.Entries = append(out.Entries, result{ErrorCode: code, ErrorMessage: "injected " + code})
			continue
		}
		out.Entries = append(out.Entries, result{EventId: fmt.Sprintf("evt-%d-%d", call, i)})
	}
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	_ = json.NewEncoder(w).Encode(out)
}

func writeError(w http.ResponseWriter, typ, msg string) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.Header().Set("X-Amzn-Errortype", typ)
	w.WriteHeader(http.StatusBadRequest)
	_ = json.NewEncoder(w).Encode(map[string]string{"__type": typ, "message": msg})
}

func (b *fakeBus) batches() [][]wireEntry {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.got)
}

func (b *fakeBus) client() *eventbridge.Client {
	return eventbridge.New(eventbridge.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(b.srv.URL),
		Credentials:  credentials.NewStaticCredentialsProvider("AKIDEXAMPLE", signingSecret, ""),
		// One call per PutEvents, so the per-call counts below are the publisher's own.
		RetryMaxAttempts: 1,
	})
}

var clock = time.Date(2026, 12, 2, 19, 40, 0, 0, time.UTC)

func newPublisher(b *fakeBus, bus string) *notify.Publisher {
	return notify.New(b.client(), notify.Options{EventBusName: bus, Now: func() time.Time { return clock }})
}

func events(n int) []notify.Event {
	out := make([]notify.Event, n)
	for i := range out {
		out[i] = notify.Event{
			DetailType: notify.DetailNeedsReauth,
			Token:      fmt.Sprintf("tok-%02d", i),
			Outcome:    "needs_reauth",
			Reason:     fmt.Sprintf("provider rejected the refresh token (%d)", i),
		}
	}
	return out
}

func TestPublishBatchesOfTen(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		n    int
		want []int
	}{
		{1, []int{1}},
		{10, []int{10}},
		{11, []int{10, 1}},
		{23, []int{10, 10, 3}},
	} {
		t.Run(fmt.Sprint(c.n), func(t *testing.T) {
			t.Parallel()
			bus := newFakeBus(t)
			evs := events(c.n)
			stamped := clock.Add(-time.Hour)
			evs[0].Time = stamped
			if err := newPublisher(bus, "default").Publish(context.Background(), evs...); err != nil {
				t.Fatalf("Publish: %v", err)
			}
			var sizes []int
			var all []wireEntry
			for _, b := range bus.batches() {
				sizes = append(sizes, len(b))
				all = append(all, b...)
			}
			if !slices.Equal(sizes, c.want) {
				t.Fatalf("batch sizes: got %v, want %v", sizes, c.want)
			}
			for i, e := range all {
				if e.Source != notify.Source || e.DetailType != notify.DetailNeedsReauth || e.EventBusName != "default" {
					t.Errorf("entry %d: got source %q detail-type %q bus %q, want %q %q default",
						i, e.Source, e.DetailType, e.EventBusName, notify.Source, notify.DetailNeedsReauth)
				}
				wantTime := clock
				if i == 0 {
					wantTime = stamped
				}
				if got := time.Unix(int64(e.Time), 0).UTC(); !got.Equal(wantTime) {
					t.Errorf("entry %d time: got %v, want %v", i, got, wantTime)
				}
				d := decodeDetail(t, e.Detail)
				want := notify.Detail{Token: evs[i].Token, Outcome: evs[i].Outcome, Reason: evs[i].Reason}
				if d != want {
					t.Errorf("entry %d detail: got %+v, want %+v", i, d, want)
				}
			}
		})
	}
}

// decodeDetail decodes a detail strictly: a field other than token/outcome/reason fails.
func decodeDetail(t *testing.T, s string) notify.Detail {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(s))
	dec.DisallowUnknownFields()
	var d notify.Detail
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("detail %s: %v", s, err)
	}
	var keys map[string]any
	if err := json.Unmarshal([]byte(s), &keys); err != nil || len(keys) != 3 {
		t.Fatalf("detail %s: got keys %v, want exactly token, outcome, reason", s, keys)
	}
	return d
}

func TestPublishFailedEntries(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name      string
		failEntry func(call int, e wireEntry) string
		wantCalls int
		wantFail  []notify.FailedEntry // nil = Publish succeeds
	}{
		{
			name: "throttled once then accepted",
			failEntry: func(call int, e wireEntry) string {
				if call == 1 && strings.Contains(e.Detail, `"tok-03"`) {
					return "ThrottlingException"
				}
				return ""
			},
			wantCalls: 2,
		},
		{
			name: "internal failure every time",
			failEntry: func(_ int, e wireEntry) string {
				if strings.Contains(e.Detail, `"tok-01"`) {
					return "InternalFailure"
				}
				return ""
			},
			wantCalls: 3,
			wantFail:  []notify.FailedEntry{{Token: "tok-01", DetailType: notify.DetailNeedsReauth, Code: "InternalFailure", Message: "injected InternalFailure"}},
		},
		{
			name: "access denied is not retried",
			failEntry: func(_ int, e wireEntry) string {
				if strings.Contains(e.Detail, `"tok-00"`) || strings.Contains(e.Detail, `"tok-04"`) {
					return "AccessDeniedException"
				}
				return ""
			},
			wantCalls: 1,
			wantFail: []notify.FailedEntry{
				{Token: "tok-00", DetailType: notify.DetailNeedsReauth, Code: "AccessDeniedException", Message: "injected AccessDeniedException"},
				{Token: "tok-04", DetailType: notify.DetailNeedsReauth, Code: "AccessDeniedException", Message: "injected AccessDeniedException"},
			},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			bus := newFakeBus(t)
			bus.failEntry = c.failEntry
			evs := events(5)
			err := newPublisher(bus, "default").Publish(context.Background(), evs...)
			batches := bus.batches()
			if len(batches) != c.wantCalls {
				t.Errorf("PutEvents calls: got %d, want %d", len(batches), c.wantCalls)
			}
			for i, b := range batches[1:] {
				// A resend carries only the failed entries.
				if len(b) != 1 {
					t.Errorf("resend %d: got %d entries, want 1", i+1, len(b))
				}
			}
			if c.wantFail == nil {
				if err != nil {
					t.Fatalf("Publish: got %v, want nil", err)
				}
				return
			}
			var fe *notify.FailedEntriesError
			if !errors.As(err, &fe) {
				t.Fatalf("Publish: got %v, want a *notify.FailedEntriesError", err)
			}
			if fe.Total != len(evs) || !slices.Equal(fe.Entries, c.wantFail) {
				t.Errorf("failed entries: got %d %+v, want %d %+v", fe.Total, fe.Entries, len(evs), c.wantFail)
			}
			for _, f := range c.wantFail {
				if !strings.Contains(err.Error(), f.Token) {
					t.Errorf("error %q does not name token %s", err, f.Token)
				}
			}
			for _, ev := range evs {
				if strings.Contains(err.Error(), ev.Reason) {
					t.Errorf("error %q repeats a reason", err)
				}
			}
		})
	}
}

// A failed call is reported and does not stop the other batches.
func TestPublishCallErrorKeepsOtherBatches(t *testing.T) {
	t.Parallel()
	bus := newFakeBus(t)
	bus.failCall = func(call int) bool { return call == 1 }
	err := newPublisher(bus, "ops-bus").Publish(context.Background(), events(15)...)
	if err == nil || !strings.Contains(err.Error(), "notify: put 10 events on ops-bus") {
		t.Fatalf("Publish: got %v, want the first batch's call error", err)
	}
	var fe *notify.FailedEntriesError
	if errors.As(err, &fe) {
		t.Errorf("Publish: got a FailedEntriesError %v for a call error", fe)
	}
	if b := bus.batches(); len(b) != 2 || len(b[1]) != 5 {
		t.Errorf("batches: got %d, want 2 with the second of 5 entries", len(b))
	}
}

func TestPublishInvalidEventSendsNothing(t *testing.T) {
	t.Parallel()
	const pasted = "eyJhbGciOiJSUzI1NiJ9.secret-looking-value"
	for _, c := range []struct {
		name  string
		edit  func(*notify.Event)
		field string
	}{
		{"empty detail type", func(e *notify.Event) { e.DetailType = "" }, "DetailType"},
		{"unknown detail type", func(e *notify.Event) { e.DetailType = "Token Exploded" }, "DetailType"},
		{"empty token", func(e *notify.Event) { e.Token = "" }, "Token"},
		{"secret as token", func(e *notify.Event) { e.Token = pasted + " x" }, "Token"},
		{"empty outcome", func(e *notify.Event) { e.Outcome = "" }, "Outcome"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			bus := newFakeBus(t)
			evs := events(12)
			c.edit(&evs[11])
			err := newPublisher(bus, "default").Publish(context.Background(), evs...)
			if !errors.Is(err, notify.ErrInvalidEvent) {
				t.Fatalf("Publish: got %v, want ErrInvalidEvent", err)
			}
			if !strings.Contains(err.Error(), "field "+c.field) || !strings.Contains(err.Error(), "event 11") {
				t.Errorf("error %q: want it to name event 11 and field %s", err, c.field)
			}
			if strings.Contains(err.Error(), pasted) {
				t.Errorf("error %q echoes the invalid token value", err)
			}
			if n := len(bus.batches()); n != 0 {
				t.Errorf("PutEvents calls: got %d, want 0 (nothing sent when any event is invalid)", n)
			}
		})
	}
}

func TestPublishDisabled(t *testing.T) {
	t.Parallel()
	bus := newFakeBus(t)
	for name, p := range map[string]*notify.Publisher{
		"empty bus":  newPublisher(bus, ""),
		"nil client": notify.New(nil, notify.Options{EventBusName: "default"}),
		"nil":        nil,
	} {
		if p.Enabled() {
			t.Errorf("%s: Enabled() = true, want false", name)
		}
		if err := p.Publish(context.Background(), events(3)...); err != nil {
			t.Errorf("%s: Publish: got %v, want nil", name, err)
		}
	}
	if n := len(bus.batches()); n != 0 {
		t.Errorf("PutEvents calls: got %d, want 0", n)
	}
}

// Everything on the wire is what the caller gave: the request holds no string but the source,
// detail type, bus and the three detail fields, and the signing key never appears in it.
func TestPublishSendsOnlyWhatItIsGiven(t *testing.T) {
	t.Parallel()
	bus := newFakeBus(t)
	long := strings.Repeat("é", notify.MaxReasonLen) // 2 bytes each: must be cut on a rune boundary
	evs := []notify.Event{
		{DetailType: notify.DetailRecovered, Token: "acme", Outcome: "refreshed", Reason: ""},
		{DetailType: notify.DetailCredentialsExpiring, Token: "sahamati/prod", Outcome: "refreshed", Reason: "entity secret expires in 5 days"},
		{DetailType: notify.DetailRefreshTokenExpiring, Token: "vault", Outcome: "refreshed", Reason: long},
		{DetailType: notify.DetailInvalidConfig, Token: "broken", Outcome: "invalid_config", Reason: "provider.token_url: not an https URL"},
	}
	if err := newPublisher(bus, "default").Publish(context.Background(), evs...); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	bus.mu.Lock()
	raw, hdrs := bytes.Join(bus.raw, nil), bus.hdrs
	bus.mu.Unlock()
	if bytes.Contains(raw, []byte(signingSecret)) {
		t.Error("the signing secret appears in a request body")
	}
	for _, h := range hdrs {
		for k, v := range h {
			if strings.Contains(strings.Join(v, " "), signingSecret) {
				t.Errorf("the signing secret appears in header %s", k)
			}
		}
	}
	var req map[string]any
	if err := json.Unmarshal(raw, &req); err != nil {
		t.Fatal(err)
	}
	if len(req) != 1 || req["Entries"] == nil {
		t.Errorf("request keys: got %v, want only Entries", req)
	}
	for i, e := range req["Entries"].([]any) {
		m := e.(map[string]any)
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		if want := []string{"Detail", "DetailType", "EventBusName", "Source", "Time"}; !slices.Equal(keys, want) {
			t.Errorf("entry %d keys: got %v, want %v", i, keys, want)
		}
		d := decodeDetail(t, m["Detail"].(string))
		want := notify.Detail{Token: evs[i].Token, Outcome: evs[i].Outcome, Reason: evs[i].Reason}
		if i == 2 {
			want.Reason = strings.Repeat("é", notify.MaxReasonLen/2)
		}
		if d != want {
			t.Errorf("entry %d detail: got %.80v, want %.80v", i, d, want)
		}
	}
}
