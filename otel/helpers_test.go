package dogpileotel_test

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

var bg = context.Background()

// telemetry is an SDK MeterProvider read by hand and a TracerProvider
// exporting to memory, synchronously.
type telemetry struct {
	reader *sdkmetric.ManualReader
	mp     *sdkmetric.MeterProvider
	spans  *tracetest.InMemoryExporter
	tp     *sdktrace.TracerProvider
}

func newTelemetry(t *testing.T) *telemetry {
	t.Helper()
	reader := sdkmetric.NewManualReader()
	spans := tracetest.NewInMemoryExporter()
	tel := &telemetry{
		reader: reader,
		mp:     sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)),
		spans:  spans,
		tp:     sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans)),
	}
	t.Cleanup(func() {
		_ = tel.mp.Shutdown(bg)
		_ = tel.tp.Shutdown(bg)
	})
	return tel
}

// metrics collects the metrics now.
func (tel *telemetry) metrics(t *testing.T) points {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := tel.reader.Collect(bg, &rm); err != nil {
		t.Fatalf("collect: %v", err)
	}
	p := points{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				if !d.IsMonotonic || d.Temporality != metricdata.CumulativeTemporality {
					t.Fatalf("%s: a sum that is not a monotonic cumulative counter", m.Name)
				}
				for _, dp := range d.DataPoints {
					p[m.Name+attrs(dp.Attributes)] = float64(dp.Value)
				}
			case metricdata.Gauge[int64]:
				for _, dp := range d.DataPoints {
					p[m.Name+attrs(dp.Attributes)] = float64(dp.Value)
				}
			case metricdata.Histogram[float64]:
				for _, dp := range d.DataPoints {
					p[m.Name+".count"+attrs(dp.Attributes)] = float64(dp.Count)
					p[m.Name+".sum"+attrs(dp.Attributes)] = dp.Sum
				}
			default:
				t.Fatalf("%s: unexpected data %T", m.Name, m.Data)
			}
		}
	}
	return p
}

// points are the data points collected, by metric name and attributes
// ("dogpile.region.not_stored{dogpile.region=default,reason=bypassed}").
type points map[string]float64

func attrs(s attribute.Set) string {
	var kv []string
	for _, a := range s.ToSlice() {
		kv = append(kv, string(a.Key)+"="+a.Value.String())
	}
	sort.Strings(kv)
	return "{" + strings.Join(kv, ",") + "}"
}

// dogpile returns the points of the dogpile metrics, without the duration
// sums (which are times).
func (p points) dogpile() map[string]float64 {
	out := map[string]float64{}
	for k, v := range p {
		if strings.HasPrefix(k, "dogpile.") && !strings.Contains(k, ".duration.sum") {
			out[k] = v
		}
	}
	return out
}

// expect compares the points of p with want, exactly: every point of want
// and no other dogpile point.
func expect(t *testing.T, what string, p points, want map[string]float64) {
	t.Helper()
	got := p.dogpile()
	var diffs []string
	for k, v := range want {
		if g, ok := got[k]; !ok {
			diffs = append(diffs, fmt.Sprintf("  missing %s (want %v)", k, v))
		} else if g != v {
			diffs = append(diffs, fmt.Sprintf("  %s = %v, want %v", k, g, v))
		}
	}
	for k, v := range got {
		if _, ok := want[k]; !ok {
			diffs = append(diffs, fmt.Sprintf("  unexpected %s = %v", k, v))
		}
	}
	if len(diffs) > 0 {
		sort.Strings(diffs)
		t.Fatalf("%s: the metrics differ:\n%s", what, strings.Join(diffs, "\n"))
	}
}

// counts returns the points every region reports, from the region's
// counters, for region name with the values of set (the others zero).
func counts(name string, set map[string]float64) map[string]float64 {
	r := "{dogpile.region=" + name + "}"
	out := map[string]float64{}
	for _, m := range []string{"hits", "misses", "stale_served", "regenerations", "lock_waits", "decode_failures",
		"errors", "invalidations", "invalidation.failures", "invalidation.retries", "invalidation.retried"} {
		out["dogpile.region."+m+r] = 0
	}
	for _, reason := range []string{"should_cache", "tags_changed", "bypassed", "unencodable", "partial"} {
		out["dogpile.region.not_stored{dogpile.region="+name+",reason="+reason+"}"] = 0
	}
	for k, v := range set {
		if !strings.Contains(k, "{") {
			k += r
		}
		out[k] = v
	}
	return out
}

// waitFor polls cond until it holds, failing the test after a generous
// bound: it waits for what another goroutine or process does, and asserts
// nothing about how long it takes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
