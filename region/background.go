package region

import (
	"context"
	"sync"
	"sync/atomic"
)

// background is the goroutines a region runs by itself, outside any call:
// the coarse clock's refresher and the retrier of unconfirmed tag
// invalidations. Close stops them.
type background struct {
	// Set by init; read-only afterwards. ctx is cancelled by close: it is
	// the goroutines' signal to stop, and the context of their backend calls.
	ctx    context.Context
	cancel context.CancelFunc

	closed atomic.Bool // set by close: no goroutine starts from then on

	mu sync.Mutex     // orders each start's wg.Add before close's wg.Wait
	wg sync.WaitGroup // the goroutines running
}

// init makes the context the goroutines run on.
func (b *background) init() {
	b.ctx, b.cancel = context.WithCancel(context.Background())
}

// start runs f in a goroutine of the region's unless the region is closed,
// and reports whether it did. f must return soon after ctx is done.
func (b *background) start(f func(ctx context.Context)) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed.Load() {
		return false
	}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		f(b.ctx)
	}()
	return true
}

// close stops the goroutines and waits for them to return. It may be
// called more than once, and concurrently.
func (b *background) close() {
	b.mu.Lock()
	b.closed.Store(true)
	b.mu.Unlock()
	b.cancel()
	b.wg.Wait()
}
