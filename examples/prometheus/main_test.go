package main

import (
	"bytes"
	"context"
	"strconv"
	"strings"
	"testing"
)

// TestOnce runs the command as `prometheus -once` on a free port: the
// exposition it fetched from its own /metrics has every dogpile metric of
// the region, under Prometheus names, with the values the workload makes.
func TestOnce(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"-once", "-addr", "127.0.0.1:0"}, &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	got := samples(out.String())
	want := map[string]float64{
		"dogpile_region_hits_total":                                        9,
		"dogpile_region_misses_total":                                      4,
		"dogpile_region_regenerations_total":                               4,
		"dogpile_region_stale_served_total":                                0,
		"dogpile_region_lock_waits_total":                                  0,
		"dogpile_region_decode_failures_total":                             0,
		"dogpile_region_errors_total":                                      0,
		"dogpile_region_invalidations_total":                               2, // the update's: before and after its commit
		"dogpile_region_invalidation_failures_total":                       0,
		"dogpile_region_invalidation_retries_total":                        0,
		"dogpile_region_invalidation_retried_total":                        0,
		`dogpile_region_not_stored_total{reason="should_cache"}`:           0,
		`dogpile_region_not_stored_total{reason="tags_changed"}`:           0,
		`dogpile_region_not_stored_total{reason="bypassed"}`:               0,
		`dogpile_region_not_stored_total{reason="unencodable"}`:            0,
		`dogpile_region_not_stored_total{reason="partial"}`:                0,
		`dogpile_region_regeneration_duration_seconds_count{outcome="ok"}`: 4,
	}
	for k, v := range want {
		g, ok := got[k]
		if !ok {
			t.Errorf("missing %s", k)
		} else if g != v {
			t.Errorf("%s = %v, want %v", k, g, v)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok && !strings.Contains(k, "_bucket") && !strings.Contains(k, "_sum") {
			t.Errorf("unexpected dogpile sample %s = %v", k, got[k])
		}
	}
	if t.Failed() {
		t.Logf("exposition:\n%s", out.String())
	}
}

// samples returns the samples of the dogpile metrics of region "default"
// in a text exposition, by name and their labels other than the region's
// and the scope's (`name{label="value"}`, or the bare name).
func samples(text string) map[string]float64 {
	out := map[string]float64{}
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, "dogpile_") {
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[sp+1:], 64)
		if err != nil {
			continue
		}
		series := line[:sp]
		name, labels, _ := strings.Cut(strings.TrimSuffix(series, "}"), "{")
		var keep []string
		region := ""
		for _, l := range strings.Split(labels, ",") {
			switch {
			case strings.HasPrefix(l, "dogpile_region="):
				region = l
			case strings.HasPrefix(l, "otel_scope_"), l == "":
			default:
				keep = append(keep, l)
			}
		}
		if region != `dogpile_region="default"` {
			continue
		}
		if len(keep) > 0 {
			name += "{" + strings.Join(keep, ",") + "}"
		}
		out[name] = v
	}
	return out
}
