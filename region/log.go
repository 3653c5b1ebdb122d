package region

import (
	"context"
	"log/slog"
	"slices"
	"time"

	"github.com/dogpile-go/dogpile/internal/ratelimit"
)

// Logging a region's events with log/slog (WithLogger, NewLogObserver).
//
// What is logged, with its level and its message (the messages are stable:
// match on them):
//
//	kind                      level  message
//	EventBackendError         WARN   "dogpile: backend error"              op, key, error
//	EventBreaker (opened)     ERROR  "dogpile: backend breaker opened"
//	EventBreaker (closed)     INFO   "dogpile: backend breaker closed"
//	EventInvalidationFailed   WARN   "dogpile: invalidation failed, retrying" tags, error
//	EventInvalidated, retried INFO   "dogpile: retried invalidation landed"  tags
//	EventInvalidated          DEBUG  "dogpile: invalidated"                  tags
//	EventNotStored            see below "dogpile: answer not stored"        key, reason, tags
//	EventDecodeFailed         WARN   "dogpile: stored value unreadable"      key, error
//
// An answer not stored is logged at WARN when it could not be encoded
// (unencodable: a value the codec cannot round-trip is a bug to fix), at
// INFO when an invalidation that has not reached the backend yet bypassed
// it (bypassed) or it came with an error (partial), and at DEBUG when the
// call's ShouldCache refused it (should_cache) or a write raced with it
// (tags_changed), which are the cache working as meant.
//
// Every record has the attribute region (the region's name); key is set
// when the event is about one; tags is the tags' list (WithLogTags renders
// it otherwise: the GORM plugin names the tables). Creator runs and waits
// are not logged (their errors reach the callers), nor are hits.
//
// Records are rate-limited per class (the region, the kind, and the op,
// the reason or the breaker's state): at most a burst of records per
// interval (DefaultLogBurst per DefaultLogInterval, or WithLogRate), the
// others dropped and counted; the first record of the class once the
// interval has passed carries suppressed=N, the number dropped since the
// last one logged. A record the logger would not write at its level
// (slog.Logger.Enabled) is neither logged nor counted.

// The default rate of a log observer's records, per class (WithLogRate).
const (
	DefaultLogBurst    = 5
	DefaultLogInterval = 10 * time.Second
)

// The messages of a log observer's records.
const (
	LogMsgBackendError       = "dogpile: backend error"
	LogMsgBreakerOpened      = "dogpile: backend breaker opened"
	LogMsgBreakerClosed      = "dogpile: backend breaker closed"
	LogMsgInvalidationFailed = "dogpile: invalidation failed, retrying"
	LogMsgInvalidationRetry  = "dogpile: retried invalidation landed"
	LogMsgInvalidated        = "dogpile: invalidated"
	LogMsgNotStored          = "dogpile: answer not stored"
	LogMsgDecodeFailed       = "dogpile: stored value unreadable"
)

// LogOption configures a log observer (NewLogObserver, WithLogger).
type LogOption func(*logObserver)

// WithLogRate sets the rate limit of the records of each class: at most
// burst records per interval. burst ≤ 0 or interval ≤ 0 turns the limit
// off.
func WithLogRate(burst int, interval time.Duration) LogOption {
	return func(o *logObserver) { o.limit.Burst, o.limit.Interval = burst, interval }
}

// WithLogTags renders the tags of a record (an answer not stored, an
// invalidation) as the attributes f returns instead of the attribute
// tags. f is called only for records that are logged; the slice is the
// observer's own.
func WithLogTags(f func(tags []string) []slog.Attr) LogOption {
	return func(o *logObserver) { o.tags = f }
}

// WithLogger makes the region log its events to l (nil: slog.Default()),
// as NewLogObserver says.
func WithLogger(l *slog.Logger, opts ...LogOption) Option {
	return WithObserver(NewLogObserver(l, opts...))
}

// NewLogObserver returns an Observer that logs the events of the regions
// it observes to l (nil: slog.Default()): backend errors, the breaker
// opening and closing, invalidations failed and retried, answers not
// stored and values that could not be read back, at the levels and with
// the messages the package's documentation of logging lists, rate-limited
// per class. Add it with WithObserver or AddObserver; one observer may
// serve several regions (the classes are per region).
func NewLogObserver(l *slog.Logger, opts ...LogOption) Observer {
	if l == nil {
		l = slog.Default()
	}
	o := &logObserver{l: l}
	o.limit.Burst, o.limit.Interval = DefaultLogBurst, DefaultLogInterval
	for _, opt := range opts {
		opt(o)
	}
	if o.tags == nil {
		o.tags = func(tags []string) []slog.Attr { return []slog.Attr{slog.Any("tags", tags)} }
	}
	return o
}

type logObserver struct {
	// Set by NewLogObserver; read-only afterwards.
	l    *slog.Logger
	tags func([]string) []slog.Attr

	limit ratelimit.Limiter[logClass] // its Now is a test's hook
}

// logClass is what a record is rate-limited with.
type logClass struct {
	region string
	kind   EventKind
	op     string
	reason NotStoredReason
	open   bool
}

// Observe logs e, unless its class is over its rate.
func (o *logObserver) Observe(ctx context.Context, e Event) {
	var (
		level = slog.LevelWarn
		msg   string
		c     = logClass{region: e.Region, kind: e.Kind}
	)
	switch e.Kind {
	case EventBackendError:
		msg, c.op = LogMsgBackendError, e.Op
	case EventBreaker:
		c.open = e.Open
		if e.Open {
			level, msg = slog.LevelError, LogMsgBreakerOpened
		} else {
			level, msg = slog.LevelInfo, LogMsgBreakerClosed
		}
	case EventInvalidationFailed:
		msg = LogMsgInvalidationFailed
	case EventInvalidated:
		c.open = e.Retried // the retried ones are a class of their own
		if e.Retried {
			level, msg = slog.LevelInfo, LogMsgInvalidationRetry
		} else {
			level, msg = slog.LevelDebug, LogMsgInvalidated
		}
	case EventNotStored:
		c.reason = e.Reason
		level, msg = notStoredLevel(e.Reason), LogMsgNotStored
	case EventDecodeFailed:
		msg = LogMsgDecodeFailed
	default:
		return
	}
	if ctx == nil {
		ctx = context.Background()
	}
	if !o.l.Enabled(ctx, level) {
		return
	}
	suppressed, ok := o.limit.Allow(c)
	if !ok {
		return
	}
	attrs := make([]slog.Attr, 0, 8)
	attrs = append(attrs, slog.String("region", e.Region))
	if e.Op != "" {
		attrs = append(attrs, slog.String("op", e.Op))
	}
	if e.Key != "" {
		attrs = append(attrs, slog.String("key", e.Key))
	}
	if e.Kind == EventNotStored {
		attrs = append(attrs, slog.String("reason", e.Reason.String()))
	}
	if e.Kind == EventNotStored || e.Kind == EventInvalidated || e.Kind == EventInvalidationFailed {
		attrs = append(attrs, o.tags(slices.Clone(e.Tags))...)
	}
	if e.Err != nil {
		attrs = append(attrs, slog.Any("error", e.Err))
	}
	if suppressed > 0 {
		attrs = append(attrs, slog.Int("suppressed", suppressed))
	}
	o.l.LogAttrs(ctx, level, msg, attrs...)
}

// notStoredLevel is the level of an answer not stored for reason.
func notStoredLevel(reason NotStoredReason) slog.Level {
	switch reason {
	case ReasonUnencodable:
		return slog.LevelWarn
	case ReasonBypassed, ReasonPartial:
		return slog.LevelInfo
	}
	return slog.LevelDebug
}
