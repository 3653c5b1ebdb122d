package dogpile

import "context"

// Test-only access to a Listener, for feed_test.go (package dogpile_test,
// in the same test binary).

// FeedHooks sets the points at which l calls the tests back (nil: none):
// beforeReconnect once its connection dropped, before it waits and
// connects again; beforeClaim before it claims a transaction in a shared
// region; afterClaim once it claimed one, before it invalidates. A hook
// that blocks stops the listener there; it should return when ctx ends
// (Close).
func FeedHooks(l *Listener, beforeReconnect, beforeClaim, afterClaim func(ctx context.Context)) {
	l.hooks.Store(&feedHooks{beforeReconnect: beforeReconnect, beforeClaim: beforeClaim, afterClaim: afterClaim})
}

// FeedListenerPID returns the backend process id of l's listening
// connection, 0 while it has none.
func FeedListenerPID(l *Listener) uint32 { return l.pid.Load() }

// FeedClaimWait is how long a listener waits for another's done mark.
const FeedClaimWait = feedClaimWait
