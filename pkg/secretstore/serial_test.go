package secretstore_test

import (
	"bytes"
	"io"
	"net/http"
	"sync"
)

// serialTransport sends one request at a time. moto 5.2.1 serves requests on
// concurrent threads without isolating them: CreateSecret checks that the name
// is free and then adds the secret, so two concurrent creates can both
// "succeed" and the second silently replaces the first. Real Secrets Manager
// makes each call atomic, which is what serialising the requests reproduces;
// the goroutines still race for the order in which their calls land.
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
