package dogpile

import "context"

// Test-only access to a Listener, for feed_test.go (package dogpile_test,
// in the same test binary).

// FeedTestHooks are the points at which a Listener calls the tests back
// (nil: none): BeforeReconnect once its connection dropped, before it
// waits and connects again; AfterRelisten once it listens again, before it
// invalidates everything; BeforeClaim before it claims a transaction in a
// shared region; AfterClaim once it claimed one, before it invalidates. A
// hook that blocks stops the listener there; it should return when ctx
// ends (Close).
type FeedTestHooks struct {
	BeforeReconnect, AfterRelisten, BeforeClaim, AfterClaim func(ctx context.Context)
}

// SetFeedHooks sets l's hooks.
func SetFeedHooks(l *Listener, h FeedTestHooks) {
	l.hooks.Store(&feedHooks{beforeReconnect: h.BeforeReconnect, afterRelisten: h.AfterRelisten, beforeClaim: h.BeforeClaim, afterClaim: h.AfterClaim})
}

// FeedListenerPID returns the backend process id of l's listening
// connection, 0 while it has none.
func FeedListenerPID(l *Listener) uint32 { return l.pid.Load() }

// FeedClaimWait is how long a listener waits for another's done mark.
const FeedClaimWait = feedClaimWait
