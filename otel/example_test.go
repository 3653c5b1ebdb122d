package dogpileotel_test

import (
	"context"
	"fmt"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/dogpile-go/dogpile/backends/memory"
	dogpileotel "github.com/dogpile-go/dogpile/otel"
	"github.com/dogpile-go/dogpile/region"
)

// Instrument a region, use it, and read its metrics. An application passes
// the MeterProvider (and TracerProvider) it exports with, or none for
// otel's global ones; here a ManualReader reads them.
func ExampleInstrument() {
	ctx := context.Background()
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(ctx)

	r := region.New(memory.New(), region.WithName("default"), region.WithExpiration(time.Minute))
	defer r.Close()
	inst, err := dogpileotel.Instrument(r, dogpileotel.WithMeterProvider(mp))
	if err != nil {
		panic(err)
	}
	defer inst.Close()

	for range 3 { // a miss, then two hits
		_, _ = region.GetOrCreate(ctx, r, "answer", func(context.Context) (int, error) { return 42, nil })
	}

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		panic(err)
	}
	for _, m := range rm.ScopeMetrics[0].Metrics {
		switch m.Name {
		case "dogpile.region.hits", "dogpile.region.misses", "dogpile.region.regenerations":
			fmt.Println(m.Name, m.Data.(metricdata.Sum[int64]).DataPoints[0].Value)
		}
	}
	// Unordered output:
	// dogpile.region.hits 2
	// dogpile.region.misses 1
	// dogpile.region.regenerations 1
}

// Wrap a backend so that each call to it is a span. The name given is the
// dogpile.region attribute of the spans: the region's.
func ExampleWrapBackend() {
	b := dogpileotel.WrapBackend(memory.New(), "default") // otel's global TracerProvider
	r := region.New(b, region.WithName("default"), region.WithExpiration(time.Minute))
	defer r.Close()
	v, err := region.GetOrCreate(context.Background(), r, "answer", func(context.Context) (int, error) { return 42, nil })
	fmt.Println(v, err)
	// Output: 42 <nil>
}
