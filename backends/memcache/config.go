package memcachebackend

import (
	"errors"

	"github.com/dogpile-go/dogpile/region"
)

// ConfigName is the name under which the package registers its backend for
// region.FromConfig, when it is imported. Its arguments, after the
// configuration's prefix, are:
//
//	addrs             host:port of each server, comma-separated (required)
//	prefix            WithPrefix
//	timeout           WithTimeout, a duration ("100ms")
//	lock_ttl          WithLockTTL
//	breaker_failures  WithBreaker's failures
//	breaker_cooldown  WithBreaker's cooldown
//	max_item_size     WithMaxItemSize: bytes, or KiB, MiB ("1MiB")
//	max_idle_conns    WithMaxIdleConns
const ConfigName = "memcached"

func init() { region.RegisterBackend(ConfigName, fromConfig) }

// fromConfig is the region.BackendFactory of the memcached backend.
func fromConfig(cfg map[string]string) (region.Backend, error) {
	a := region.ConfigArgs(cfg)
	if err := a.Unknown("addrs", "prefix", "timeout", "lock_ttl", "breaker_failures", "breaker_cooldown", "max_item_size", "max_idle_conns"); err != nil {
		return nil, err
	}
	addrs := a.List("addrs", nil)
	if len(addrs) == 0 {
		return nil, &region.ConfigError{Key: "addrs", Err: errors.New("missing: host:port of each server, comma-separated")}
	}
	timeout, err1 := a.Duration("timeout", DefaultTimeout)
	lockTTL, err2 := a.Duration("lock_ttl", DefaultLockTTL)
	failures, err3 := a.Int("breaker_failures", DefaultBreakerFailures)
	cooldown, err4 := a.Duration("breaker_cooldown", DefaultBreakerCooldown)
	itemSize, err5 := a.Bytes("max_item_size", DefaultMaxItemSize)
	idle, err6 := a.Int("max_idle_conns", DefaultMaxIdleConns)
	if err := errors.Join(err1, err2, err3, err4, err5, err6); err != nil {
		return nil, err
	}
	return Open(addrs, WithPrefix(a.String("prefix", "")), WithTimeout(timeout), WithLockTTL(lockTTL),
		WithBreaker(failures, cooldown), WithMaxItemSize(int(itemSize)), WithMaxIdleConns(idle))
}
