// Package leakscan collects everything a test suite printed (logs, metric lines, reports)
// and every secret the suite issued or seeded, and reports any secret found in the output.
package leakscan

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"sync"
)

// MinLen is the shortest value worth scanning for; shorter ones match by accident.
const MinLen = 6

// Issuer is anything that can list the secrets it handed out (the provider simulators).
type Issuer interface{ Issued() []string }

// Scanner is safe for concurrent use; it is an io.Writer for the suite's output.
type Scanner struct {
	mu      sync.Mutex
	out     bytes.Buffer
	secrets map[string]bool
	issuers []Issuer
}

// New returns an empty scanner.
func New() *Scanner { return &Scanner{secrets: map[string]bool{}} }

// Write records output.
func (s *Scanner) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.out.Write(p)
}

// Register adds values that must never appear in the output.
func (s *Scanner) Register(values ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, v := range values {
		if len(v) >= MinLen {
			s.secrets[v] = true
		}
	}
}

// RegisterIssuer adds everything i issued, read when Check runs.
func (s *Scanner) RegisterIssuer(i Issuer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.issuers = append(s.issuers, i)
}

// Check scans the output for every registered secret, writes a summary (never a secret)
// to w, and returns how many secrets leaked.
func (s *Scanner) Check(w io.Writer) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, i := range s.issuers {
		for _, v := range i.Issued() {
			if len(v) >= MinLen {
				s.secrets[v] = true
			}
		}
	}
	out := s.out.String()
	leaks := 0
	for v := range s.secrets {
		if strings.Contains(out, v) {
			leaks++
			fmt.Fprintf(w, "LEAK: a secret of %d bytes appears in the suite's output\n", len(v))
		}
	}
	fmt.Fprintf(w, "leak scan: %d secrets checked against %d bytes of logs, metrics and reports: %d found\n", len(s.secrets), len(out), leaks)
	return leaks
}
