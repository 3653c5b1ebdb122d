package ratelimit

import (
	"slices"
	"testing"
	"time"
)

// A burst per interval and class, then the count of those dropped on the
// first record allowed after the interval.
func TestLimiter(t *testing.T) {
	now := time.Unix(0, 0)
	l := Limiter[string]{Burst: 2, Interval: 10 * time.Second, Now: func() time.Time { return now }}
	var got []int
	for range 5 {
		if s, ok := l.Allow("a"); ok {
			got = append(got, s)
		} else {
			got = append(got, -1)
		}
	}
	if s, ok := l.Allow("b"); !ok || s != 0 {
		t.Fatalf("another class: %d %v", s, ok)
	}
	now = now.Add(10 * time.Second)
	s, ok := l.Allow("a")
	got = append(got, s)
	if want := []int{0, 0, -1, -1, -1, 3}; !ok || !slices.Equal(got, want) {
		t.Fatalf("got %v (ok %v), want %v", got, ok, want)
	}
	off := Limiter[int]{}
	for range 100 {
		if _, ok := off.Allow(1); !ok {
			t.Fatal("a limiter without a burst dropped a record")
		}
	}
}
