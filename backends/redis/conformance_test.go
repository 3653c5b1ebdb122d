package redisbackend

import (
	"testing"

	"github.com/dogpile-go/dogpile/internal/testharness"
	"github.com/dogpile-go/dogpile/region"
	"github.com/dogpile-go/dogpile/region/regiontest"
)

// TestRegionSingle runs the region conformance suite on one server; every
// backend gets a prefix of its own. The suite on a cluster is in
// TestCluster/Region.
func TestRegionSingle(t *testing.T) {
	srv := testharness.SharedRedis(t)
	client := newClient(t, srv.Addr)
	regiontest.Run(t, func(t testing.TB) region.Backend {
		return newBackend(t, client, WithPrefix(uniquePrefix(t)))
	})
}
