package providersim

import (
	"testing"
	"time"
)

func TestClock(t *testing.T) {
	c := NewClock(t0)
	if got := c.Now(); !got.Equal(t0) {
		t.Fatalf("Now: got %v, want %v", got, t0)
	}
	c.Advance(90 * time.Minute)
	if got, want := c.Now(), t0.Add(90*time.Minute); !got.Equal(want) {
		t.Fatalf("after Advance: got %v, want %v", got, want)
	}
	back := t0.Add(-time.Hour)
	c.Set(back)
	if got := c.Now(); !got.Equal(back) {
		t.Fatalf("after Set: got %v, want %v", got, back)
	}
}
