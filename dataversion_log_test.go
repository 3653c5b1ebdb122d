package dogpile

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// recordSink keeps the records a slog.Logger is given, as "LEVEL message
// error=...".
type recordSink struct {
	mu   sync.Mutex
	kept []string
}

func (s *recordSink) Enabled(context.Context, slog.Level) bool { return true }
func (s *recordSink) Handle(_ context.Context, r slog.Record) error {
	line := r.Level.String() + " " + r.Message
	r.Attrs(func(a slog.Attr) bool {
		line += " " + a.Key + "=" + a.Value.String()
		return true
	})
	s.mu.Lock()
	defer s.mu.Unlock()
	s.kept = append(s.kept, line)
	return nil
}
func (s *recordSink) WithAttrs([]slog.Attr) slog.Handler { return s }
func (s *recordSink) WithGroup(string) slog.Handler      { return s }

// A data_version check that fails (its handle closed) is logged once per
// check, at WARN, with the error, and each of those reads is a miss.
func TestDataVersionFailureLogged(t *testing.T) {
	sink := &recordSink{}
	d := dvOpen(t, "_journal_mode=WAL&_busy_timeout=10000", time.Hour, WithLogger(slog.New(sink)))
	d.settle(t)
	d.w.close()
	for i := range 3 {
		dvDue(d.w)
		if q := d.queries(func() { d.cachedValue(t) }); q != 1 {
			t.Errorf("read %d, its check failing: %d queries; want 1 (a miss)", i, q)
		}
	}
	var got []string
	for _, line := range sink.kept {
		if strings.Contains(line, LogMsgDataVersionFailed) {
			got = append(got, line)
		}
	}
	if len(got) != 3 {
		t.Fatalf("records %q; want 3 of %q", sink.kept, LogMsgDataVersionFailed)
	}
	for _, line := range got {
		if !strings.HasPrefix(line, "WARN "+LogMsgDataVersionFailed+" error=") || !strings.Contains(line, "closed") {
			t.Fatalf("record %q; want WARN with the closed handle's error", line)
		}
	}
}
