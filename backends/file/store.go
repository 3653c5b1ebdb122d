//go:build unix

package filebackend

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
	"golang.org/x/sys/unix"
)

// store is the bbolt file as the goroutines of one Backend share it (see
// "Sharing the file" in the package documentation). The file is open only
// while this Backend holds the store lock, shared for a read-only handle and
// exclusive (behind the writer lock) for a read-write one. A handle serves
// every operation of the process that starts while it is open, for at most
// hold; then it is closed as soon as the operations in flight end, so that
// the other processes get their turn.
type store struct {
	path    string   // the bbolt file
	lock    *os.File // store.lock: shared by readers, exclusive for a writer
	intent  *os.File // writer.lock: held by a writer from before it waits for the store lock
	queue   *os.File // wait.lock: shared by every process that waits for the store lock
	hold    time.Duration
	timeout time.Duration // bounds each wait for the store lock; 0: ctx only
	sync    bool          // fsync each commit

	// prepare makes the layout of a file opened read-write (buckets and
	// format marker); it is the Backend's.
	prepare func(tx *bolt.Tx) error

	mu      sync.Mutex
	db      *bolt.DB      // guarded by mu; nil when closed
	rw      bool          // guarded by mu; db is read-write
	refs    int           // guarded by mu; operations using db
	expired bool          // guarded by mu; db takes no new operation: it closes when refs is 0
	opening bool          // guarded by mu; a goroutine is opening the file
	gen     uint64        // guarded by mu; counts handles, so a late timer knows its own
	timer   *time.Timer   // guarded by mu; expires db after hold
	ident   os.FileInfo   // guarded by mu; the file db was opened on
	changed chan struct{} // guarded by mu; closed and replaced when the state above changes
	waiting int           // guarded by mu; goroutines waiting on changed
	writers int           // guarded by mu; writers among them
	closed  bool          // guarded by mu
	yielded bool          // guarded by mu; the last handle was closed early for a process that waits
	// lookedAt is when release last looked for processes waiting;
	// openedAt when the handle was opened; lastUse when an operation
	// last released it. Guarded by mu.
	lookedAt, openedAt, lastUse time.Time

	// damaged is the file a transaction or an open found damaged: the
	// next read-write open replaces it, unless it was replaced already.
	damaged atomic.Pointer[damage]

	opens  atomic.Int64 // handles opened
	resets atomic.Int64 // damaged files replaced by an empty one
}

// overlapHold bounds how long, without a hold (WithHold(0)), operations
// that overlap keep sharing one handle: a process whose operations never
// stop overlapping still lets the file go that often.
const overlapHold = time.Millisecond

// damage records which file was found damaged (nil ident: the file could
// not be opened at all).
type damage struct{ ident os.FileInfo }

// Errors of the store.
var (
	// errBusy: the store lock was not free within the operation timeout.
	errBusy = errors.New("store lock held by another process")
	// errClosedStore: the Backend was closed.
	errClosedStore = errors.New("backend closed")
)

func newStore(dir, path string, hold, timeout time.Duration, fsync bool) (*store, error) {
	lock, err := os.OpenFile(dir+"/store.lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	intent, err := os.OpenFile(dir+"/writer.lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		_ = lock.Close()
		return nil, err
	}
	queue, err := os.OpenFile(dir+"/wait.lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		_ = lock.Close()
		_ = intent.Close()
		return nil, err
	}
	return &store{path: path, lock: lock, intent: intent, queue: queue, hold: hold, timeout: timeout, sync: fsync, changed: make(chan struct{})}, nil
}

// broadcast wakes every goroutine waiting for a change; s.mu is held.
func (s *store) broadcast() {
	if s.waiting == 0 {
		return
	}
	close(s.changed)
	s.changed = make(chan struct{})
}

// acquire returns the open handle for an operation, read-write if write,
// opening the file if needed; the caller calls release once done with it.
// The wait for the store lock, when it opens the file, is bounded by the
// timeout; a wait for the process's own goroutines (opening the file,
// finishing with a handle that takes no one new) by ctx only: each of those
// ends by itself, within a timeout and a hold.
func (s *store) acquire(ctx context.Context, write bool) (*bolt.DB, error) {
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return nil, errClosedStore
		}
		// A damaged file is replaced by the next open, which must be
		// read-write.
		write := write || s.damaged.Load() != nil
		if s.db != nil && !s.expired && (s.rw || !write) {
			s.refs++
			db := s.db
			s.mu.Unlock()
			return db, nil
		}
		if s.db != nil && s.refs == 0 {
			s.closeLocked()
			s.mu.Unlock()
			continue
		}
		if s.db == nil && !s.opening {
			// A writer waits: open read-write, for it and for us, so
			// that readers cannot keep reopening read-only before it.
			write := write || s.writers > 0
			s.opening = true
			s.mu.Unlock()
			var deadline time.Time
			if s.timeout > 0 {
				deadline = time.Now().Add(s.timeout)
			}
			yielded := s.yielded
			s.yielded = false
			db, ident, err := s.open(ctx, deadline, write, yielded)
			s.mu.Lock()
			s.opening = false
			if err == nil {
				s.gen++
				s.db, s.rw, s.refs, s.ident = db, write, 1, ident
				s.expired = s.closed
				gen := s.gen
				s.openedAt = time.Now()
				s.lastUse = s.openedAt
				s.timer = time.AfterFunc(s.nextTick(s.openedAt), func() { s.tick(gen) })
			}
			s.broadcast()
			s.mu.Unlock()
			if err == nil {
				s.opens.Add(1)
			}
			return db, err
		}
		if s.db != nil && write && !s.rw {
			// In-process writer preference: the read-only handle
			// takes no one new, and closes when its readers are done.
			s.expired = true
		}
		ch := s.changed
		s.waiting++
		if write {
			s.writers++
		}
		s.mu.Unlock()
		err := waitChange(ctx, ch)
		s.mu.Lock()
		s.waiting--
		if write {
			s.writers--
		}
		s.mu.Unlock()
		if err != nil {
			return nil, err
		}
	}
}

// release ends an operation on the handle acquire returned. The last
// operation on a handle that takes no new ones (its hold ended, it is
// damaged, or it is read-only and a writer waits) closes it; without a hold
// (WithHold(0)) the last operation in flight does when no other waits. So
// does the last operation in flight when another process waits for the
// store lock (see queue): the hold is for a process alone.
func (s *store) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refs--
	if s.refs > 0 {
		return
	}
	now := time.Now()
	s.lastUse = now
	switch {
	case s.expired || (s.hold <= 0 && s.waiting == 0):
		s.closeLocked()
	case now.Sub(s.lookedAt) >= lookEvery:
		s.lookedAt = now
		if othersWait(s.queue) {
			// Another process waits for the file: let it go now
			// rather than at the end of the hold.
			s.expired, s.yielded = true, true
			s.closeLocked()
		}
	}
	s.broadcast()
}

// holdOf is how long a handle may take operations.
func (s *store) holdOf() time.Duration {
	if s.hold <= 0 {
		return overlapHold
	}
	return s.hold
}

// nextTick is how long after now the timer of the handle looks at it
// again: after idleClose, or at the end of its hold if sooner. s.mu is
// held.
func (s *store) nextTick(now time.Time) time.Duration {
	return max(min(idleClose, s.openedAt.Add(s.holdOf()).Sub(now)), 0)
}

// tick is the timer of handle gen: it closes the handle once its hold has
// ended, or earlier when the process has not used it for idleClose or when
// another process waits for the file; it looks again otherwise.
func (s *store) tick(gen uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.db == nil || s.gen != gen {
		return
	}
	now := time.Now()
	switch {
	case now.Sub(s.openedAt) >= s.holdOf():
		s.expired = true
		if s.refs == 0 {
			s.closeLocked()
		}
	case s.refs == 0 && now.Sub(s.lastUse) >= idleClose:
		s.closeLocked()
	case s.refs == 0 && othersWait(s.queue):
		s.yielded = true
		s.closeLocked()
	default:
		s.timer.Reset(s.nextTick(now))
		return
	}
	s.broadcast()
}

// idleClose is how long a handle stays open while the process makes no
// operation, however long its hold: holding the file is worth it only for
// operations that follow each other closely.
const idleClose = time.Millisecond

// markDamaged records that the file of the current handle is damaged: the
// handle takes no new operation, and the next open replaces the file.
func (s *store) markDamaged() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.damaged.Store(&damage{ident: s.ident})
	s.expired = true
}

// closeLocked closes the handle and releases the store lock; s.mu is held
// and no operation uses the handle.
func (s *store) closeLocked() {
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
	_ = s.db.Close() // a read-only or committed handle: nothing is lost
	s.unlockStore(s.rw)
	s.db, s.ident = nil, nil
}

// close waits for the operations in flight, closes the handle and the lock
// files; operations started afterwards fail.
func (s *store) close() error {
	s.mu.Lock()
	s.closed = true
	s.expired = true
	for s.refs > 0 || s.opening {
		ch := s.changed
		s.waiting++
		s.mu.Unlock()
		<-ch
		s.mu.Lock()
		s.waiting--
	}
	if s.db != nil {
		s.closeLocked()
	}
	s.broadcast()
	s.mu.Unlock()
	return errors.Join(s.lock.Close(), s.intent.Close(), s.queue.Close())
}

// waitChange waits for ch to be closed or ctx to end.
func waitChange(ctx context.Context, ch <-chan struct{}) error {
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// open takes the store lock and opens the file, read-write if write. A
// read-write open replaces a damaged file (see replace). It returns the
// identity of the file it opened. A process that has just let the file go
// for another one (yielded) first gives it way.
func (s *store) open(ctx context.Context, deadline time.Time, write, yielded bool) (*bolt.DB, os.FileInfo, error) {
	if yielded {
		s.giveWay(ctx)
	}
	if err := s.lockStore(ctx, deadline, write); err != nil {
		return nil, nil, err
	}
	db, ident, err := s.openLocked(deadline, write)
	if err != nil {
		s.unlockStore(write)
		return nil, nil, err
	}
	return db, ident, nil
}

// openLocked opens the file under the store lock.
func (s *store) openLocked(deadline time.Time, write bool) (*bolt.DB, os.FileInfo, error) {
	if write {
		if d := s.damaged.Load(); d != nil {
			if err := s.replace(d); err != nil {
				return nil, nil, err
			}
		}
	}
	db, err := s.boltOpen(deadline, write)
	if err == nil && write {
		err = s.layout(db)
	}
	if err != nil {
		if !errors.Is(err, ErrCorrupt) {
			return nil, nil, err
		}
		if !write {
			// A reader cannot repair it: the next operation will,
			// with a read-write open. This one is a miss.
			ident, _ := os.Stat(s.path)
			s.damaged.Store(&damage{ident: ident})
			return nil, nil, err
		}
		if err := s.replace(&damage{}); err != nil {
			return nil, nil, err
		}
		if db, err = s.boltOpen(deadline, write); err == nil {
			err = s.layout(db)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("file %s is damaged and could not be replaced: %w", s.path, err)
		}
	}
	ident, err := os.Stat(s.path)
	if err != nil {
		_ = db.Close()
		return nil, nil, err
	}
	return db, ident, nil
}

// layout prepares a file opened read-write; ErrCorrupt when it panics.
func (s *store) layout(db *bolt.DB) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: %v", ErrCorrupt, p)
		}
		if err != nil {
			_ = db.Close()
		}
	}()
	return db.Update(s.prepare)
}

// boltOpen opens the bbolt file. Every failure of bbolt to read the file as
// a database (bad meta pages, bad page size, a file too short, a panic) is
// ErrCorrupt; failures to reach the file at all are returned as they are.
func (s *store) boltOpen(deadline time.Time, write bool) (db *bolt.DB, err error) {
	defer func() {
		if p := recover(); p != nil {
			db, err = nil, fmt.Errorf("%w: opening %s: %v", ErrCorrupt, s.path, p)
		}
	}()
	// No other process of ours holds the file (we hold the store lock),
	// so bbolt's own flock is free at once unless a foreign program has
	// the file open; do not wait for that beyond the operation.
	timeout := 10 * time.Millisecond
	if !deadline.IsZero() {
		timeout = max(time.Until(deadline), time.Millisecond)
	}
	db, err = bolt.Open(s.path, 0o600, &bolt.Options{
		Timeout:      timeout,
		ReadOnly:     !write,
		NoSync:       !s.sync,
		NoGrowSync:   !s.sync,
		FreelistType: bolt.FreelistArrayType,
		NoStatistics: true,
	})
	var pe *fs.PathError
	switch {
	case err == nil:
		return db, nil
	case errors.Is(err, bolterrors.ErrTimeout):
		return nil, fmt.Errorf("%s is locked by a program that does not take the store lock: %w", s.path, errBusy)
	case errors.Is(err, fs.ErrNotExist) && !write:
		// Removed by hand: the next read-write open makes it again.
		return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
	case errors.As(err, &pe) && pe.Op == "open":
		return nil, err
	}
	return nil, fmt.Errorf("%w: opening %s: %w", ErrCorrupt, s.path, err)
}

// replace removes the damaged file d names, unless the file at the path is
// no longer that one (another process replaced it already); the next open
// makes an empty file. The store lock is held exclusively.
func (s *store) replace(d *damage) error {
	if d.ident != nil {
		cur, err := os.Stat(s.path)
		if err == nil && !os.SameFile(cur, d.ident) {
			s.damaged.CompareAndSwap(d, nil)
			return nil
		}
	}
	if err := os.Remove(s.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove damaged %s: %w", s.path, err)
	}
	s.damaged.CompareAndSwap(d, nil)
	s.resets.Add(1)
	return nil
}

// Backoff of the polls for a store lock held by another process.
const (
	minStorePoll = 20 * time.Microsecond
	maxStorePoll = time.Millisecond
)

// lockStore takes the store lock: exclusively for a writer, which first
// takes the writer lock, so that readers stop coming in while it waits;
// shared for a reader, which goes in only while no writer waits or writes.
func (s *store) lockStore(ctx context.Context, deadline time.Time, write bool) error {
	if !write {
		err := s.pollQueued(ctx, deadline, func() (bool, error) {
			// No writer holds or waits for the writer lock: come in.
			ok, err := tryFlock(s.intent, unix.LOCK_SH)
			if !ok || err != nil {
				return ok, err
			}
			defer func() { _ = unix.Flock(int(s.intent.Fd()), unix.LOCK_UN) }()
			return tryFlock(s.lock, unix.LOCK_SH)
		})
		if err != nil {
			return fmt.Errorf("store lock: %w", err)
		}
		return nil
	}
	if err := s.pollQueued(ctx, deadline, func() (bool, error) { return tryFlock(s.intent, unix.LOCK_EX) }); err != nil {
		return fmt.Errorf("writer lock: %w", err)
	}
	if err := s.pollQueued(ctx, deadline, func() (bool, error) { return tryFlock(s.lock, unix.LOCK_EX) }); err != nil {
		_ = unix.Flock(int(s.intent.Fd()), unix.LOCK_UN)
		return fmt.Errorf("store lock: %w", err)
	}
	return nil
}

// pollQueued is poll(try) with this process in the queue after its first
// failed try: it holds wait.lock shared while it waits, which tells the
// holders of the store that someone waits (othersWait).
func (s *store) pollQueued(ctx context.Context, deadline time.Time, try func() (bool, error)) error {
	if ok, err := try(); ok || err != nil {
		return err
	}
	queued := false
	defer func() {
		if queued {
			_ = unix.Flock(int(s.queue.Fd()), unix.LOCK_UN)
		}
	}()
	return poll(ctx, deadline, func() (bool, error) {
		if !queued {
			// Fails only while a holder looks (othersWait): then
			// next time.
			ok, err := tryFlock(s.queue, unix.LOCK_SH)
			if err != nil {
				return false, err
			}
			queued = ok
		}
		return try()
	})
}

// othersWait reports whether a process waits for the store lock: it holds
// wait.lock shared, so an exclusive try fails.
func othersWait(queue *os.File) bool {
	ok, err := tryFlock(queue, unix.LOCK_EX)
	if err != nil {
		return false
	}
	if ok {
		_ = unix.Flock(int(queue.Fd()), unix.LOCK_UN)
	}
	return !ok
}

// giveWay waits, for at most giveWayFor, until no process waits for the
// store lock: the one this process let the file go for has taken it (and
// left the queue). Without it the goroutines of this process, which never
// sleep to poll, would take the lock again before the other process, which
// does, wakes up.
func (s *store) giveWay(ctx context.Context) {
	_ = poll(ctx, time.Now().Add(giveWayFor), func() (bool, error) { return !othersWait(s.queue), nil })
}

// lookEvery is how often, at most, release looks for processes waiting
// for the store lock (two flock calls).
const lookEvery = 100 * time.Microsecond

// giveWayFor bounds giveWay: twice the longest sleep of a poll, so that a
// waiting process has woken up at least once.
const giveWayFor = 2 * maxStorePoll

// unlockStore releases what lockStore took.
func (s *store) unlockStore(write bool) {
	_ = unix.Flock(int(s.lock.Fd()), unix.LOCK_UN)
	if write {
		_ = unix.Flock(int(s.intent.Fd()), unix.LOCK_UN)
	}
}

// tryFlock takes how (LOCK_SH or LOCK_EX) on f without blocking and
// reports whether it did.
func tryFlock(f *os.File, how int) (bool, error) {
	for {
		err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB)
		switch {
		case err == nil:
			return true, nil
		case errors.Is(err, unix.EWOULDBLOCK):
			return false, nil
		case errors.Is(err, unix.EINTR):
			continue
		}
		return false, fmt.Errorf("flock %s: %w", f.Name(), err)
	}
}

// poll calls try until it succeeds, fails, ctx ends or deadline passes,
// sleeping between tries from minStorePoll doubling up to maxStorePoll,
// with jitter so that processes do not poll in step.
func poll(ctx context.Context, deadline time.Time, try func() (bool, error)) error {
	d := minStorePoll
	var t *time.Timer
	for {
		ok, err := try()
		if ok || err != nil {
			return err
		}
		if !deadline.IsZero() && !time.Now().Before(deadline) {
			return errBusy
		}
		sleep := d/2 + rand.N(d)
		d = min(2*d, maxStorePoll)
		if t == nil {
			t = time.NewTimer(sleep)
			defer t.Stop()
		} else {
			t.Reset(sleep)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}
