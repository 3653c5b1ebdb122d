package region_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/dogpile-go/dogpile/backends/memory"
	"github.com/dogpile-go/dogpile/region"
)

// errCreatorBug is what explodingCreator panics with.
var errCreatorBug = errors.New("creator bug")

// explodingCreator's create panics once release is closed. It is a named
// method so that a stack can be searched for it.
type explodingCreator struct{ release chan struct{} }

// creatorFrame is how explodingCreator.create appears in a stack.
const creatorFrame = "region_test.(*explodingCreator).create"

func (c *explodingCreator) create(context.Context) (string, error) {
	<-c.release
	panic(errCreatorBug)
}

// pollUntil polls cond until it holds; the bound only turns a hang into a
// failure, it is not a timing assertion.
func pollUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestCreatorPanicKeepsStack: when a creator panics, the caller whose
// creator it was panics with a *PanicError holding the original value, and
// a caller that waited on it gets an error that is ErrCreatorPanicked and
// holds the same *PanicError, whose stack names the creator.
func TestCreatorPanicKeepsStack(t *testing.T) {
	ctx := context.Background()
	r := region.New(memory.New())
	c := &explodingCreator{release: make(chan struct{})}

	leader := make(chan any, 1)
	go func() {
		defer func() { leader <- recover() }()
		_, _ = region.GetOrCreate(ctx, r, "k", c.create)
	}()
	pollUntil(t, "the leader to start", func() bool { return r.Stats().Misses >= 1 })
	waiter := make(chan error, 1)
	go func() {
		_, err := region.GetOrCreate(ctx, r, "k", c.create)
		waiter <- err
	}()
	pollUntil(t, "the waiter to wait", func() bool { return r.Stats().LockWaits >= 1 })
	close(c.release)

	p := <-leader
	lpe, ok := p.(*region.PanicError)
	if !ok {
		t.Fatalf("leader recovered %#v; want a *region.PanicError", p)
	}
	if lpe.Value != errCreatorBug {
		t.Errorf("leader's PanicError.Value = %#v; want the creator's panic value", lpe.Value)
	}
	if !strings.Contains(string(lpe.Stack), creatorFrame) {
		t.Errorf("leader's PanicError.Stack does not name %s:\n%s", creatorFrame, lpe.Stack)
	}

	err := <-waiter
	if !errors.Is(err, region.ErrCreatorPanicked) {
		t.Fatalf("waiter got %v; want ErrCreatorPanicked", err)
	}
	var wpe *region.PanicError
	if !errors.As(err, &wpe) {
		t.Fatalf("waiter's error %v holds no *region.PanicError", err)
	}
	if !strings.Contains(string(wpe.Stack), creatorFrame) {
		t.Errorf("waiter's PanicError.Stack does not name %s:\n%s", creatorFrame, wpe.Stack)
	}
	if wpe.Value != errCreatorBug || !errors.Is(err, errCreatorBug) {
		t.Errorf("waiter's error %v does not lead to the creator's panic value", err)
	}
}

// TestPanicErrorMethods: Error shows the value and the stack, Unwrap gives
// the value only when it is an error, and every PanicError is
// ErrCreatorPanicked.
func TestPanicErrorMethods(t *testing.T) {
	pe := &region.PanicError{Value: errCreatorBug, Stack: []byte("main.f()\n")}
	if msg := pe.Error(); !strings.Contains(msg, "creator bug") || !strings.Contains(msg, "main.f()") {
		t.Errorf("Error() = %q; want the value and the stack", msg)
	}
	if pe.Unwrap() != errCreatorBug || !errors.Is(pe, errCreatorBug) {
		t.Errorf("Unwrap() = %v; want the error value", pe.Unwrap())
	}
	if !errors.Is(pe, region.ErrCreatorPanicked) {
		t.Error("a PanicError is not ErrCreatorPanicked")
	}
	str := &region.PanicError{Value: "not an error"}
	if str.Unwrap() != nil {
		t.Errorf("Unwrap() of a string value = %v; want nil", str.Unwrap())
	}
	if !errors.Is(str, region.ErrCreatorPanicked) {
		t.Error("a PanicError holding a string is not ErrCreatorPanicked")
	}
}
