//go:build unix

package filebackend

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dogpile-go/dogpile/region"
)

// Polls of Wait for a lock held by another process.
const (
	minLockPoll = time.Millisecond
	maxLockPoll = 20 * time.Millisecond
)

// Lock is the dogpile lock on one key, shared by every process on the
// backend's directory: an exclusive flock on the key's own file under keys/
// (named by the SHA-256 of the key), so that keys never wait for each
// other. The kernel releases it when its holder exits, however it exits
// (SIGKILL included): a dead holder blocks no one, and a live one holds it
// until it unlocks; the region's wait timeout bounds how long its waiters
// wait for it. It implements region.Mutex. A Lock is used by one goroutine
// at a time (the region's leader for the key); it is not reentrant.
type Lock struct {
	path string

	mu sync.Mutex
	f  *os.File // guarded by mu; the locked file, nil when not held
}

// Lock returns the lock on key. Locks are cheap: each call returns a new,
// unheld one.
func (b *Backend) Lock(key string) *Lock {
	sum := sha256.Sum256([]byte(key))
	return &Lock{path: filepath.Join(b.dir, "keys", hex.EncodeToString(sum[:16]))}
}

// Path returns the lock's file.
func (l *Lock) Path() string { return l.path }

// TryLock takes the lock if no process (this one included) holds it, and
// reports whether it did. The holder removes the file when it unlocks; a
// file that was removed or replaced between its open and its flock is not
// the lock any longer, and TryLock tries again with the file now at the
// path.
func (l *Lock) TryLock(ctx context.Context) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, fmt.Errorf("filebackend: lock: %w", err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f != nil {
		return false, nil
	}
	for range 100 {
		f, err := os.OpenFile(l.path, os.O_RDWR|os.O_CREATE, 0o600)
		if errors.Is(err, fs.ErrNotExist) {
			// keys/ was removed: make it again.
			if err = os.MkdirAll(filepath.Dir(l.path), 0o700); err == nil {
				continue
			}
		}
		if err != nil {
			return false, fmt.Errorf("filebackend: lock: %w", err)
		}
		ok, err := tryFlock(f, unix.LOCK_EX)
		if !ok || err != nil {
			_ = f.Close()
			if err != nil {
				return false, fmt.Errorf("filebackend: lock: %w", err)
			}
			return false, nil
		}
		if same, err := isAt(f, l.path); err != nil || !same {
			// The holder we waited on removed it after we opened it.
			_ = f.Close()
			if err != nil {
				return false, fmt.Errorf("filebackend: lock: %w", err)
			}
			continue
		}
		l.f = f
		return true, nil
	}
	return false, nil // the file keeps being replaced: someone holds the lock often
}

// isAt reports whether f is the file at path.
func isAt(f *os.File, path string) (bool, error) {
	fi, err := f.Stat()
	if err != nil {
		return false, err
	}
	cur, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return os.SameFile(fi, cur), nil
}

// Unlock removes the lock's file and releases the flock, if this Lock holds
// it; it does nothing otherwise. The file is removed first, while still
// locked, so that no process can take a lock on it that another would not
// see (see TryLock).
func (l *Lock) Unlock(ctx context.Context) error {
	l.mu.Lock()
	f := l.f
	l.f = nil
	l.mu.Unlock()
	if f == nil {
		return nil
	}
	rmErr := os.Remove(l.path)
	if errors.Is(rmErr, fs.ErrNotExist) {
		rmErr = nil
	}
	// Closing the file releases the flock, even if the removal failed.
	err := errors.Join(rmErr, f.Close())
	if err != nil {
		return fmt.Errorf("filebackend: unlock: %w", err)
	}
	return nil
}

// Wait blocks until the lock is free or ctx ends. It polls the lock's file
// (a shared flock taken and dropped at once: it is free when that
// succeeds, or when there is no file), sleeping from 1ms doubling up to
// 20ms between polls, with jitter: a holder that unlocks or dies is
// noticed within 20ms.
func (l *Lock) Wait(ctx context.Context) error {
	d := minLockPoll
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		free, err := l.free()
		if err != nil || free {
			return err
		}
		sleep := d/2 + rand.N(d)
		d = min(2*d, maxLockPoll)
		t.Reset(sleep)
		select {
		case <-ctx.Done():
			return fmt.Errorf("filebackend: wait for lock: %w", ctx.Err())
		case <-t.C:
		}
	}
}

// free reports whether no process holds the lock.
func (l *Lock) free() (bool, error) {
	f, err := os.Open(l.path)
	if errors.Is(err, fs.ErrNotExist) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("filebackend: wait for lock: %w", err)
	}
	defer func() { _ = f.Close() }()
	ok, err := tryFlock(f, unix.LOCK_SH)
	if err != nil {
		return false, fmt.Errorf("filebackend: wait for lock: %w", err)
	}
	return ok, nil // closing f drops the shared flock
}

// Locked reports whether some process holds the lock now
// (region.LockProber, for Region.KeyIsLocked). It probes with a shared
// flock, held for an instant: a TryLock of another process at that very
// moment fails, and that process waits for the lock as for any holder.
func (l *Lock) Locked(context.Context) (bool, error) {
	free, err := l.free()
	return !free, err
}

var (
	_ region.Mutex      = (*Lock)(nil)
	_ region.LockProber = (*Lock)(nil)
)
