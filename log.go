package dogpile

import (
	"context"
	"log/slog"
	"slices"
	"strings"

	"gorm.io/gorm"

	"github.com/dogpile-go/dogpile/internal/ratelimit"
	"github.com/dogpile-go/dogpile/region"
)

// WithLogger makes the plugin log to l what the cache does that needs
// looking at: every region of the plugin logs its events as
// region.NewLogObserver says (backend errors, the breaker opening and
// closing, invalidations failed and retried, answers not stored, stored
// values unreadable), with the attribute tables (and key_names, for
// queries made WithKey) in place of the region's tags, so that the record
// of an answer not stored names its tables and its key; and the plugin
// logs its own failures, which are otherwise only counted or retried:
//
//	level  message
//	WARN   "dogpile: schema graph could not be read"      error (writes then invalidate every region, until it is read)
//	WARN   "dogpile: data_version check failed"           error
//	ERROR  "dogpile: data_version changed; invalidation failed" error
//	WARN   "dogpile: invalidation feed error"             error (ListenPostgres; Listener.Err is the last one)
//
// Every record is rate-limited per class as the regions' are
// (region.DefaultLogBurst per region.DefaultLogInterval, then suppressed=N).
// Invalidations a commit could not write are logged by their regions
// ("dogpile: invalidation failed, retrying", with the tables), and their
// landing once retried.
func WithLogger(l *slog.Logger) PluginOption {
	return func(c *pluginConfig) { c.logger = l }
}

// The messages of the plugin's own records (WithLogger).
const (
	LogMsgGraphFailed       = "dogpile: schema graph could not be read"
	LogMsgDataVersionFailed = "dogpile: data_version check failed"
	LogMsgDataVersionWipe   = "dogpile: data_version changed; invalidation failed"
	LogMsgFeedError         = "dogpile: invalidation feed error"
)

// pluginLog is where the plugin logs (WithLogger); the zero value logs
// nothing.
type pluginLog struct {
	l     *slog.Logger              // set by initLog; nil: off
	limit ratelimit.Limiter[string] // by message; set by initLog, its Now a test's hook
}

// initObserve sets up what the plugin tells of the queries it serves: the
// log (initLog) and the outcomes (registerOutcomeClear). Initialize calls
// it once.
func (p *Plugin) initObserve(db *gorm.DB) error {
	p.initLog()
	return registerOutcomeClear(db)
}

// initLog adds the log observer to the regions, when WithLogger was given.
func (p *Plugin) initLog() {
	l := p.config.logger
	if l == nil {
		return
	}
	p.log.l = l
	p.log.limit.Burst, p.log.limit.Interval = region.DefaultLogBurst, region.DefaultLogInterval
	o := region.NewLogObserver(l, region.WithLogTags(tagAttrs))
	for _, r := range p.regionList {
		r.AddObserver(o)
	}
}

// logf logs msg at level with attrs, rate-limited per message, when the
// plugin has a logger (WithLogger). It is safe on a nil Plugin.
func (p *Plugin) logf(ctx context.Context, level slog.Level, msg string, attrs ...slog.Attr) {
	if p == nil || p.log.l == nil {
		return
	}
	if ctx == nil {
		ctx = context.Background()
	}
	if !p.log.l.Enabled(ctx, level) {
		return
	}
	suppressed, ok := p.log.limit.Allow(msg)
	if !ok {
		return
	}
	if suppressed > 0 {
		attrs = append(attrs, slog.Int("suppressed", suppressed))
	}
	p.log.l.LogAttrs(ctx, level, msg, attrs...)
}

// tagAttrs renders the tags of a region's record as the tables they stand
// for (tablesOfTags).
func tagAttrs(tags []string) []slog.Attr {
	tables, keys := tablesOfTags(tags)
	attrs := []slog.Attr{slog.Any("tables", tables)}
	if len(keys) > 0 {
		attrs = append(attrs, slog.Any("key_names", keys))
	}
	return attrs
}

// tablesOfTags maps tags of the plugin's vocabulary (tags.go) back to what
// they name: the tables (a table's tag, its coarse "#rows" and row tags,
// and anyTable, "*", for tables not known or for every table, as the
// region's own region.EveryValue), each once in the order met,
// and the names of WithKey ("key:" tags).
func tablesOfTags(tags []string) (tables, keys []string) {
	tables = []string{}
	for _, t := range tags {
		if t == region.EveryValue {
			t = anyTable // the region's hard generation: every table
		}
		if name, ok := strings.CutPrefix(t, "key:"); ok {
			keys = append(keys, name)
			continue
		}
		if i := strings.IndexByte(t, '#'); i >= 0 {
			t = t[:i]
		}
		if t != "" && !slices.Contains(tables, t) {
			tables = append(tables, t)
		}
	}
	return tables, keys
}
