package dogpileotel

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/dogpile-go/dogpile/region"
)

// ScopeName is the instrumentation scope of the package's meter and
// tracer.
const ScopeName = "github.com/dogpile-go/dogpile/otel"

// The attribute keys of the package's metrics and spans.
const (
	AttrRegion    = attribute.Key("dogpile.region")         // the region's name
	AttrReason    = attribute.Key("reason")                 // why a value was not stored (region.NotStoredReason)
	AttrOp        = attribute.Key("op")                     // the region's name of a failed backend call (region.EventBackendError)
	AttrOutcome   = attribute.Key("outcome")                // "ok" or "error"
	AttrKeys      = attribute.Key("dogpile.keys")           // how many keys a creator run makes
	AttrTables    = attribute.Key("dogpile.tables")         // the tables a creator run's values depend on
	AttrBackendOp = attribute.Key("dogpile.backend.op")     // the backend call of a span (region.OpGetMulti, ...)
	AttrHits      = attribute.Key("dogpile.backend.hits")   // keys a read found
	AttrMisses    = attribute.Key("dogpile.backend.misses") // keys a read did not find
)

// The values of the outcome attribute.
const (
	OutcomeOK    = "ok"
	OutcomeError = "error"
)

// DurationBuckets are the bucket boundaries, in seconds, of the wait-time
// and creator-time histograms: from 10µs (a creator reading SQLite in
// memory, a wait for a creator in the same process) to 10s (a creator
// timing out).
var DurationBuckets = []float64{0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// Option configures Instrument and WrapBackend.
type Option func(*config)

type config struct {
	mp metric.MeterProvider
	tp trace.TracerProvider
}

// WithMeterProvider sets the MeterProvider that the metrics are made with;
// the default is otel's global one (otel.GetMeterProvider) at the time of
// the call.
func WithMeterProvider(mp metric.MeterProvider) Option {
	return func(c *config) { c.mp = mp }
}

// WithTracerProvider sets the TracerProvider that the spans are made with;
// the default is otel's global one (otel.GetTracerProvider) at the time of
// the call.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(c *config) { c.tp = tp }
}

func newConfig(opts []Option) config {
	var c config
	for _, o := range opts {
		if o != nil {
			o(&c)
		}
	}
	if c.mp == nil {
		c.mp = otel.GetMeterProvider()
	}
	if c.tp == nil {
		c.tp = otel.GetTracerProvider()
	}
	return c
}

// Instrumentation is a region's instrumentation, made by Instrument.
type Instrumentation struct {
	reg metric.Registration
	obs *observer
}

// Instrument exports the metrics of r (see the package documentation)
// through the MeterProvider of WithMeterProvider, and adds to r an
// observer that records its event metrics and makes a span of each creator
// run through the TracerProvider of WithTracerProvider. Call Close when the
// region is done with: the region keeps the observer, which does nothing
// after Close.
//
// Instrument a region once per MeterProvider: a second Instrumentation
// would record its events twice and observe its counters twice with the
// same attributes. Several regions share a MeterProvider, told apart by
// their names (the dogpile.region attribute), which should then differ.
func Instrument(r *region.Region, opts ...Option) (*Instrumentation, error) {
	if r == nil {
		return nil, errors.New("dogpileotel: Instrument of a nil region")
	}
	c := newConfig(opts)
	meter := c.mp.Meter(ScopeName)
	name := r.Name()
	regionAttr := AttrRegion.String(name)

	obs, err := newObserver(meter, c.tp.Tracer(ScopeName), name)
	if err != nil {
		return nil, err
	}

	var errs []error
	counter := func(name, unit, desc string) metric.Int64ObservableCounter {
		i, err := meter.Int64ObservableCounter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		errs = append(errs, err)
		return i
	}
	hits := counter("dogpile.region.hits", "{hit}", "Fresh values served.")
	misses := counter("dogpile.region.misses", "{miss}", "Calls that found no usable value.")
	stale := counter("dogpile.region.stale_served", "{hit}", "Expired or soft-invalidated values served while they are regenerated.")
	regens := counter("dogpile.region.regenerations", "{regeneration}", "Creator runs.")
	waits := counter("dogpile.region.lock_waits", "{wait}", "Callers that waited for the value another caller was making.")
	decode := counter("dogpile.region.decode_failures", "{failure}", "Stored values that could not be read back.")
	notStored := counter("dogpile.region.not_stored", "{value}", "Values made but not stored, by reason.")
	backendErrs := counter("dogpile.region.errors", "{error}", "Backend errors.")
	invs := counter("dogpile.region.invalidations", "{invalidation}", "Invalidations that reached the backend.")
	invFailed := counter("dogpile.region.invalidation.failures", "{invalidation}", "Invalidations that could not be written (retried in the background).")
	invRetries := counter("dogpile.region.invalidation.retries", "{attempt}", "Attempts of the invalidation retrier.")
	invRetried := counter("dogpile.region.invalidation.retried", "{invalidation}", "Invalidations the retrier landed.")
	breaker, err := meter.Int64ObservableGauge("dogpile.region.breaker.open", metric.WithUnit("{state}"),
		metric.WithDescription("1 while the circuit breaker of the region's backend is open, 0 while it is closed."))
	errs = append(errs, err)
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("dogpileotel: make the metrics of region %q: %w", name, err)
	}

	plain := metric.WithAttributeSet(attribute.NewSet(regionAttr))
	reasons := region.NotStoredReasons()
	byReason := make([]metric.ObserveOption, len(reasons))
	for i, rs := range reasons {
		byReason[i] = metric.WithAttributeSet(attribute.NewSet(regionAttr, AttrReason.String(rs.String())))
	}
	_, hasBreaker := r.BreakerOpen()
	instruments := []metric.Observable{hits, misses, stale, regens, waits, decode, notStored, backendErrs, invs, invFailed, invRetries, invRetried}
	if hasBreaker {
		instruments = append(instruments, breaker)
	}
	reg, err := meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		s := r.Stats()
		o.ObserveInt64(hits, s.Hits, plain)
		o.ObserveInt64(misses, s.Misses, plain)
		o.ObserveInt64(stale, s.StaleServed, plain)
		o.ObserveInt64(regens, s.Regenerations, plain)
		o.ObserveInt64(waits, s.LockWaits, plain)
		o.ObserveInt64(decode, s.DecodeFailures, plain)
		for i, rs := range reasons {
			o.ObserveInt64(notStored, s.NotStoredBy.Of(rs), byReason[i])
		}
		o.ObserveInt64(backendErrs, s.Errors, plain)
		o.ObserveInt64(invs, s.Invalidations, plain)
		o.ObserveInt64(invFailed, s.InvalidationFailures, plain)
		o.ObserveInt64(invRetries, s.InvalidationRetries, plain)
		o.ObserveInt64(invRetried, s.InvalidationsRetried, plain)
		if open, known := r.BreakerOpen(); known {
			var v int64
			if open {
				v = 1
			}
			o.ObserveInt64(breaker, v, plain)
		}
		return nil
	}, instruments...)
	if err != nil {
		return nil, fmt.Errorf("dogpileotel: register the metrics of region %q: %w", name, err)
	}
	r.AddObserver(obs)
	return &Instrumentation{reg: reg, obs: obs}, nil
}

// Close unregisters the region's metrics from the MeterProvider and stops
// the observer: it records no event and makes no span after Close. It is
// safe to call more than once.
func (i *Instrumentation) Close() error {
	if i.obs.closed.Swap(true) {
		return nil
	}
	if err := i.reg.Unregister(); err != nil {
		return fmt.Errorf("dogpileotel: unregister the metrics of region %q: %w", i.obs.region, err)
	}
	return nil
}

// observer is the region.Observer (and region.RegenerationTracer) that
// Instrument adds to a region.
type observer struct {
	region string
	closed atomic.Bool
	tracer trace.Tracer

	waitTime, creatorTime metric.Float64Histogram
	opErrors              metric.Int64Counter

	plain, ok, failed metric.MeasurementOption
	byOp              map[string]metric.MeasurementOption
	regionAttr        attribute.KeyValue
}

// knownOps are the Op values of region.EventBackendError.
var knownOps = []string{region.OpRead, region.OpStore, region.OpDelete, region.OpLock, region.OpInvalidate, region.OpTags, region.OpMetadata}

func newObserver(meter metric.Meter, tracer trace.Tracer, name string) (*observer, error) {
	regionAttr := AttrRegion.String(name)
	o := &observer{
		region:     name,
		tracer:     tracer,
		regionAttr: regionAttr,
		plain:      metric.WithAttributeSet(attribute.NewSet(regionAttr)),
		ok:         metric.WithAttributeSet(attribute.NewSet(regionAttr, AttrOutcome.String(OutcomeOK))),
		failed:     metric.WithAttributeSet(attribute.NewSet(regionAttr, AttrOutcome.String(OutcomeError))),
		byOp:       make(map[string]metric.MeasurementOption, len(knownOps)),
	}
	for _, op := range knownOps {
		o.byOp[op] = metric.WithAttributeSet(attribute.NewSet(regionAttr, AttrOp.String(op)))
	}
	var errs []error
	var err error
	o.waitTime, err = meter.Float64Histogram("dogpile.region.lock_wait.duration", metric.WithUnit("s"),
		metric.WithDescription("How long a caller waited for the value another caller was making."),
		metric.WithExplicitBucketBoundaries(DurationBuckets...))
	errs = append(errs, err)
	o.creatorTime, err = meter.Float64Histogram("dogpile.region.regeneration.duration", metric.WithUnit("s"),
		metric.WithDescription("How long a creator ran, by outcome."),
		metric.WithExplicitBucketBoundaries(DurationBuckets...))
	errs = append(errs, err)
	o.opErrors, err = meter.Int64Counter("dogpile.region.backend.errors", metric.WithUnit("{error}"),
		metric.WithDescription("Backend errors, by the region's operation."))
	errs = append(errs, err)
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("dogpileotel: make the event metrics of region %q: %w", name, err)
	}
	return o, nil
}

// Observe records the metrics of e.
func (o *observer) Observe(ctx context.Context, e region.Event) {
	if o.closed.Load() {
		return
	}
	switch e.Kind {
	case region.EventWaited:
		o.waitTime.Record(ctx, e.Duration.Seconds(), o.plain)
	case region.EventRegenerated:
		opt := o.ok
		if e.Err != nil {
			opt = o.failed
		}
		o.creatorTime.Record(ctx, e.Duration.Seconds(), opt)
	case region.EventBackendError:
		opt, ok := o.byOp[e.Op]
		if !ok {
			opt = metric.WithAttributeSet(attribute.NewSet(o.regionAttr, AttrOp.String(e.Op)))
		}
		o.opErrors.Add(ctx, 1, opt)
	}
}

// StartRegeneration starts the "dogpile.regenerate" span of a creator run
// (region.RegenerationTracer).
func (o *observer) StartRegeneration(ctx context.Context, name string, keys, tags []string) (context.Context, func(err error)) {
	if o.closed.Load() {
		return ctx, nil
	}
	ctx, span := o.tracer.Start(ctx, "dogpile.regenerate", trace.WithSpanKind(trace.SpanKindInternal),
		trace.WithAttributes(AttrRegion.String(name), AttrKeys.Int(len(keys)), AttrTables.StringSlice(Tables(tags))))
	return ctx, func(err error) {
		if err != nil {
			span.SetAttributes(AttrOutcome.String(OutcomeError))
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		} else {
			span.SetAttributes(AttrOutcome.String(OutcomeOK))
		}
		span.End()
	}
}

// Tables returns the tags of tags that name a table, in their order: the
// GORM plugin's tags (see the root package's tags.go) less the "key:"
// tags of named queries, the "<table>#..." row and coarse tags of
// relationship caches, the "*" of queries whose tables are not known and
// the region's reserved tags (beginning with a NUL byte).
func Tables(tags []string) []string {
	var out []string
	for _, t := range tags {
		if t == "" || t == "*" || t[0] == 0 || strings.HasPrefix(t, "key:") || strings.ContainsRune(t, '#') {
			continue
		}
		out = append(out, t)
	}
	return out
}
