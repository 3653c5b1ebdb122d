package dogpileotel

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/dogpile-go/dogpile/region"
)

// WrapBackend returns b wrapped so that each call a region makes of it,
// and of its locks, is a span (see the package documentation) made through
// the TracerProvider of WithTracerProvider; regionName is the
// dogpile.region attribute of the spans, the name of the region the
// backend is for. The wrapper is a region.Proxy: it keeps the optional
// interfaces of b, and its Mutex is nil where b's is. Pass it to
// region.New:
//
//	r := region.New(dogpileotel.WrapBackend(redisbackend.New(client), "default"), region.WithName("default"))
//
// A span per call is worth its cost on a shared backend (Redis, memcached),
// whose calls are round trips; over a memory backend, whose hits take
// nanoseconds, it costs more than the call. The one-key lookup a region
// makes of a process-local backend (region.ValueAppender) has no context
// to parent a span and is not traced.
func WrapBackend(b region.Backend, regionName string, opts ...Option) region.Backend {
	c := newConfig(opts)
	return traced{Proxy: region.Proxy{Next: b}, t: &spans{
		tracer: c.tp.Tracer(ScopeName),
		region: AttrRegion.String(regionName),
	}}
}

// spans makes the spans of a traced backend.
type spans struct {
	tracer trace.Tracer
	region attribute.KeyValue
}

// start starts the span of op.
func (s *spans) start(ctx context.Context, op string) (context.Context, trace.Span) {
	return s.tracer.Start(ctx, "dogpile.backend."+op, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(s.region, AttrBackendOp.String(op)))
}

// end ends span with the outcome of its call.
func end(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// traced is the Backend WrapBackend returns.
type traced struct {
	region.Proxy
	t *spans
}

func (w traced) GetMulti(ctx context.Context, keys []string) ([][]byte, error) {
	ctx, span := w.t.start(ctx, region.OpGetMulti)
	vals, err := w.Next.GetMulti(ctx, keys)
	if err == nil {
		hits := 0
		for _, v := range vals {
			if v != nil {
				hits++
			}
		}
		span.SetAttributes(AttrHits.Int(hits), AttrMisses.Int(len(keys)-hits))
	}
	end(span, err)
	return vals, err
}

func (w traced) SetMulti(ctx context.Context, items []region.Item) error {
	ctx, span := w.t.start(ctx, region.OpSetMulti)
	err := w.Next.SetMulti(ctx, items)
	end(span, err)
	return err
}

func (w traced) SetIf(ctx context.Context, item region.Item, guards []region.Guard) (bool, error) {
	ctx, span := w.t.start(ctx, region.OpSetIf)
	ok, err := w.Next.SetIf(ctx, item, guards)
	end(span, err)
	return ok, err
}

func (w traced) Delete(ctx context.Context, keys ...string) error {
	ctx, span := w.t.start(ctx, region.OpDelete)
	err := w.Next.Delete(ctx, keys...)
	end(span, err)
	return err
}

func (w traced) Incr(ctx context.Context, key string) (int64, error) {
	ctx, span := w.t.start(ctx, region.OpIncr)
	n, err := w.Next.Incr(ctx, key)
	end(span, err)
	return n, err
}

func (w traced) BumpTags(ctx context.Context, counters, markers []string, delta int64, lease time.Duration) error {
	ctx, span := w.t.start(ctx, region.OpBumpTags)
	err := w.Proxy.BumpTags(ctx, counters, markers, delta, lease)
	end(span, err)
	return err
}

func (w traced) Mutex(key string) region.Mutex {
	mu := w.Next.Mutex(key)
	if mu == nil {
		return nil // the region locks in-process only: keep it so
	}
	return tracedMutex{MutexProxy: region.MutexProxy{Next: mu}, t: w.t}
}

// tracedMutex is the Mutex of a traced backend.
type tracedMutex struct {
	region.MutexProxy
	t *spans
}

func (w tracedMutex) TryLock(ctx context.Context) (bool, error) {
	ctx, span := w.t.start(ctx, region.OpLock)
	ok, err := w.Next.TryLock(ctx)
	end(span, err)
	return ok, err
}

func (w tracedMutex) Unlock(ctx context.Context) error {
	ctx, span := w.t.start(ctx, region.OpUnlock)
	err := w.Next.Unlock(ctx)
	end(span, err)
	return err
}

func (w tracedMutex) Wait(ctx context.Context) error {
	ctx, span := w.t.start(ctx, region.OpWait)
	err := w.Next.Wait(ctx)
	end(span, err)
	return err
}

func (w tracedMutex) Locked(ctx context.Context) (bool, error) {
	ctx, span := w.t.start(ctx, region.OpLocked)
	ok, err := w.MutexProxy.Locked(ctx)
	end(span, err)
	return ok, err
}
