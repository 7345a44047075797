package invariant

import "sync"

// Capture collects what a test captured from the code under test (log lines, metric lines,
// reports, errors) for Input.Output. Safe for concurrent writers: engines log from many
// goroutines.
type Capture struct {
	mu  sync.Mutex
	buf []byte
}

func (c *Capture) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.buf = append(c.buf, p...)
	c.mu.Unlock()
	return len(p), nil
}

// Bytes returns a copy of everything written so far.
func (c *Capture) Bytes() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]byte(nil), c.buf...)
}
