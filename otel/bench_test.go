package dogpileotel_test

import (
	"testing"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/dogpile-go/dogpile"
	dogpileotel "github.com/dogpile-go/dogpile/otel"
	"github.com/dogpile-go/dogpile/region"
)

// BenchmarkHit: the hit path as applications call it,
// db.Scopes(dogpile.FromCache("default")).First(&u, 42) on SQLite with a
// memory region, with the region's metrics off (not instrumented) and on
// (Instrument with an SDK MeterProvider, read by a ManualReader). The
// target is on ≤ 1.1× off: a hit costs the instrumentation nothing, its
// counters being read from Stats when the metrics are collected.
func BenchmarkHit(b *testing.B) {
	for _, on := range []bool{false, true} {
		name := "metrics=off"
		if on {
			name = "metrics=on"
		}
		b.Run(name, func(b *testing.B) {
			var instrument func(*region.Region)
			if on {
				mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
				b.Cleanup(func() { _ = mp.Shutdown(bg) })
				instrument = func(r *region.Region) {
					inst, err := dogpileotel.Instrument(r, dogpileotel.WithMeterProvider(mp))
					if err != nil {
						b.Fatal(err)
					}
					b.Cleanup(func() { _ = inst.Close() })
				}
			}
			db, r := gormDB(b, instrument)
			var u User
			if err := db.Scopes(dogpile.FromCache("default")).First(&u, 42).Error; err != nil {
				b.Fatal(err)
			}
			before := r.Stats().Hits
			b.ReportAllocs()
			for b.Loop() {
				var u User
				if err := db.Scopes(dogpile.FromCache("default")).First(&u, 42).Error; err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			if n := r.Stats().Hits - before; n < int64(b.N) {
				b.Fatalf("%d hits in %d queries", n, b.N)
			}
		})
	}
}

// BenchmarkUncached is the same First without the cache, in the same
// database and run: the ratio BenchmarkHit's figures are read against.
func BenchmarkUncached(b *testing.B) {
	db, _ := gormDB(b, nil)
	b.ReportAllocs()
	for b.Loop() {
		var u User
		if err := db.First(&u, 42).Error; err != nil {
			b.Fatal(err)
		}
	}
}
