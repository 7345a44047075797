package ledger_test

import (
	"bytes"
	"io"
	"net/http"
	"sync"
)

// serialTransport sends one request at a time. moto 5.2.1 serves requests on
// concurrent threads without isolating them: a conditional write is a check
// followed by a write, and a cancelled TransactWriteItems restores a snapshot
// of the whole table taken when it started, wiping writes that other requests
// made meanwhile (measured: 8 of 16 concurrent claims admitted against a limit
// of 5). Real DynamoDB evaluates each conditional write atomically, which is
// what serialising the requests reproduces; the goroutines still race for the
// order in which their writes are evaluated.
type serialTransport struct {
	mu   sync.Mutex
	base http.RoundTripper
}

func (s *serialTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	resp, err := s.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	// Read the whole answer inside the lock, so the next request cannot
	// overtake this one.
	body, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return resp, nil
}

func serialHTTPClient() *http.Client {
	return &http.Client{Transport: &serialTransport{base: http.DefaultTransport.(*http.Transport).Clone()}}
}
