package region

import (
	"bytes"
	"errors"
	"fmt"
	"runtime/debug"
)

// Errors returned by a Region.
var (
	// ErrWaitTimeout is returned when a caller waited longer than the wait
	// timeout for another caller's value and WithoutWaitFallback is set.
	ErrWaitTimeout = errors.New("region: timed out waiting for another caller's value")
	// ErrCreatorPanicked is what the callers that waited on a creator that
	// panicked are told: their error holds a *PanicError, which matches
	// ErrCreatorPanicked (errors.Is). The caller whose creator it was
	// panics with that *PanicError instead.
	ErrCreatorPanicked = errors.New("region: creator panicked")
)

// PanicError is a creator's panic, with the stack of the goroutine that ran
// the creator, taken where it panicked. A creator runs in a goroutine of its
// own, so without it the stack that led to the panic would be lost.
//
// The caller whose creator panicked panics again, in its own goroutine, with
// the *PanicError: recover returns it, and its Value is what the creator
// panicked with. Each caller that waited on that creator gets an error that
// wraps the same *PanicError: errors.Is(err, ErrCreatorPanicked) holds, and
// errors.As(err, &pe) finds it. One *PanicError is shared by all of them; it
// must not be modified.
type PanicError struct {
	// Value is the value the creator panicked with.
	Value any
	// Stack is the creator's goroutine stack at the panic, as
	// runtime/debug.Stack writes it, less its first line (the goroutine's
	// number and state, out of date by the time anyone reads it).
	Stack []byte
}

// Error returns the panic's value and the creator's stack.
func (p *PanicError) Error() string {
	return fmt.Sprintf("%v: %v\n\n%s", ErrCreatorPanicked, p.Value, p.Stack)
}

// Unwrap returns Value when it is an error, so that errors.Is and errors.As
// see the error the creator panicked with; else nil.
func (p *PanicError) Unwrap() error {
	err, _ := p.Value.(error)
	return err
}

// Is reports whether target is ErrCreatorPanicked: every PanicError is one.
func (p *PanicError) Is(target error) bool { return target == ErrCreatorPanicked }

// newPanicError records v, just recovered from a creator's panic, with the
// stack of the goroutine that recovered it (the creator's, unwound no
// further than the deferred call).
func newPanicError(v any) *PanicError {
	stack := debug.Stack()
	if line := bytes.IndexByte(stack, '\n'); line >= 0 {
		stack = stack[line+1:]
	}
	return &PanicError{Value: v, Stack: stack}
}
