package redisbackend

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	goredis "github.com/redis/go-redis/v9"

	"github.com/dogpile-go/dogpile/region"
)

// ConfigName is the name under which the package registers its backend for
// region.FromConfig, when it is imported. Its arguments, after the
// configuration's prefix, are:
//
//	url               required: redis://[user:password@]host:port[/db][?option=value...]
//	                  or rediss:// for TLS, as redis.ParseURL reads it (its query
//	                  sets client options: dial_timeout=1s, pool_size=100, ...)
//	cluster           true: a Redis Cluster, the url read by redis.ParseClusterURL
//	                  (more nodes with &addr=host:port); default false
//	prefix            WithPrefix
//	timeout           WithTimeout (a duration, "100ms"); default DefaultTimeout
//	lock_ttl          WithLockTTL; default DefaultLockTTL
//	breaker_failures  WithBreaker's failures; 0 turns the breaker off
//	breaker_cooldown  WithBreaker's cooldown
//
// The client it makes applies context deadlines to its sockets
// (ContextTimeoutEnabled), and is the backend's: the backend's Close closes
// it too, so a region made by FromConfig, which closes its backend, leaves
// no connection behind.
const ConfigName = "redis"

func init() { region.RegisterBackend(ConfigName, fromConfig) }

var configKeys = []string{"url", "cluster", "prefix", "timeout", "lock_ttl", "breaker_failures", "breaker_cooldown"}

// fromConfig is the region.BackendFactory of the Redis backend.
func fromConfig(cfg map[string]string) (region.Backend, error) {
	a := region.ConfigArgs(cfg)
	if err := a.Unknown(configKeys...); err != nil {
		return nil, err
	}
	var opts []Option
	prefix := a.String("prefix", "")
	if strings.ContainsRune(prefix, '{') {
		return nil, &region.ConfigError{Key: "prefix", Value: prefix, Err: errors.New("a prefix cannot contain '{'")}
	}
	opts = append(opts, WithPrefix(prefix))
	timeout, err := a.Duration("timeout", DefaultTimeout)
	if err != nil {
		return nil, err
	}
	lockTTL, err := a.Duration("lock_ttl", DefaultLockTTL)
	if err != nil {
		return nil, err
	}
	failures, err := a.Int("breaker_failures", DefaultBreakerFailures)
	if err != nil {
		return nil, err
	}
	cooldown, err := a.Duration("breaker_cooldown", DefaultBreakerCooldown)
	if err != nil {
		return nil, err
	}
	opts = append(opts, WithTimeout(timeout), WithLockTTL(lockTTL), WithBreaker(failures, cooldown))
	cluster, err := a.Bool("cluster", false)
	if err != nil {
		return nil, err
	}
	client, err := configClient(a.String("url", ""), cluster)
	if err != nil {
		return nil, err
	}
	return ownedClient{New(client, opts...)}, nil
}

// configClient makes the client of a configuration's url.
func configClient(raw string, cluster bool) (goredis.UniversalClient, error) {
	bad := func(err error) error {
		shown := raw
		if u, perr := url.Parse(raw); perr == nil {
			shown = u.Redacted() // never a password in an error
		}
		return &region.ConfigError{Key: "url", Value: shown, Err: err}
	}
	if raw == "" {
		return nil, bad(errors.New("missing: the server's redis:// or rediss:// URL"))
	}
	if cluster {
		o, err := goredis.ParseClusterURL(raw)
		if err != nil {
			return nil, bad(fmt.Errorf("not a Redis Cluster URL: %w", err))
		}
		o.ContextTimeoutEnabled = true
		return goredis.NewClusterClient(o), nil
	}
	o, err := goredis.ParseURL(raw)
	if err != nil {
		return nil, bad(fmt.Errorf("not a Redis URL: %w", err))
	}
	o.ContextTimeoutEnabled = true
	return goredis.NewClient(o), nil
}

// ownedClient is a Backend made from a configuration: it owns its client,
// which Close closes after the backend.
type ownedClient struct{ *Backend }

// Close closes the backend, then its client.
func (o ownedClient) Close() error {
	return errors.Join(o.Backend.Close(), o.Client().Close())
}

// Unwrap returns the Backend, for region.ActualBackend.
func (o ownedClient) Unwrap() region.Backend { return o.Backend }
