package dogpile_test

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/dogpile-go/dogpile"
	"github.com/dogpile-go/dogpile/internal/dbtest"
	"github.com/dogpile-go/dogpile/region"
)

// The invalidation feed's connection is terminated by the server: the
// plugin's logger gets exactly one record of it, at WARN, with the error,
// and the listener reconnects.
func TestFeedErrorLogged(t *testing.T) {
	dsn := feedNewDatabase(t)
	db := feedOpen(t, dsn, false)
	sink := &rootLogSink{}
	dbtest.Must(t, db.Use(dogpile.New(map[string]*region.Region{"default": feedMemoryRegion(t)}, dogpile.WithLogger(slog.New(sink)))))
	l := feedListen(t, db.DB)
	pid := dogpile.FeedListenerPID(l)
	if pid == 0 {
		t.Fatal("the listener reports no backend")
	}
	var ok bool
	dbtest.Must(t, db.Raw("SELECT pg_terminate_backend(?)", pid).Scan(&ok).Error)
	if !ok {
		t.Fatalf("pg_terminate_backend(%d) returned false", pid)
	}
	waitFor(t, "reconnect", func() bool { return l.Stats().Reconnects == 1 })
	var feed []string
	for _, line := range sink.lines() {
		if strings.Contains(line, dogpile.LogMsgFeedError) {
			feed = append(feed, line)
		}
	}
	if len(feed) != 1 || !strings.HasPrefix(feed[0], "WARN "+dogpile.LogMsgFeedError+" error=feed connection: ") {
		t.Fatalf("feed records %q; want one WARN %q with the connection's error", feed, dogpile.LogMsgFeedError)
	}
}
