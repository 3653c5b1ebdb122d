package testharness

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// clusterSlots is the number of hash slots of a Redis Cluster.
const clusterSlots = 16384

// RedisClusterServer is a Redis Cluster of master nodes (no replicas) on
// 127.0.0.1, with the hash slots split evenly between them.
type RedisClusterServer struct {
	// Addrs are the node addresses, "127.0.0.1:PORT", in slot order: the
	// first node holds the first slots.
	Addrs []string
	// Nodes are the node servers, in the order of Addrs.
	Nodes []*RedisServer
}

// RedisCluster starts a Redis Cluster of nodes master nodes (3 is the usual
// minimum) and waits until every node reports cluster_state:ok. Each node
// has its own folder in t.TempDir() and two free ports: the client port and
// the cluster bus port (set with cluster-port, which needs Redis 7.0 or
// later). The nodes are joined with CLUSTER ADDSLOTS and CLUSTER MEET, so
// redis-cli is not needed. The cluster is killed when the test ends.
func RedisCluster(t testing.TB, nodes int) *RedisClusterServer {
	t.Helper()
	if nodes < 1 {
		t.Fatalf("testharness: RedisCluster needs at least 1 node, got %d", nodes)
	}
	c := &RedisClusterServer{}
	t.Cleanup(c.Kill)
	for range nodes {
		s, err := startRedis(t.TempDir(), clusterConf)
		if err != nil {
			failStart(t, "redis cluster node", err)
		}
		c.Nodes = append(c.Nodes, s)
		c.Addrs = append(c.Addrs, s.Addr)
	}
	if err := c.join(); err != nil {
		t.Fatalf("testharness: form redis cluster: %v", err)
	}
	return c
}

// clusterConf returns the cluster configuration lines of a node, with a
// free port for the cluster bus.
func clusterConf() ([]string, error) {
	busPort, err := freePort()
	if err != nil {
		return nil, err
	}
	return []string{
		"cluster-enabled yes",
		"cluster-config-file nodes.conf",
		"cluster-port " + strconv.Itoa(busPort),
		"cluster-node-timeout 5000",
	}, nil
}

// Kill kills every node (see RedisServer.Kill).
func (c *RedisClusterServer) Kill() {
	for _, n := range c.Nodes {
		n.Kill()
	}
}

// Stop stops every node (see RedisServer.Stop).
func (c *RedisClusterServer) Stop() {
	for _, n := range c.Nodes {
		n.Stop()
	}
}

// join assigns the slots, introduces the nodes to each other and waits
// until every node sees a healthy cluster.
func (c *RedisClusterServer) join() error {
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	clients := make([]*redis.Client, len(c.Nodes))
	for i, n := range c.Nodes {
		clients[i] = redis.NewClient(&redis.Options{Addr: n.Addr, MaxRetries: -1})
		defer clients[i].Close()
	}
	n := len(clients)
	for i, cl := range clients {
		// Distinct config epochs avoid a round of epoch collision
		// resolution, as redis-cli --cluster create does.
		if err := cl.Do(ctx, "CLUSTER", "SET-CONFIG-EPOCH", i+1).Err(); err != nil {
			return fmt.Errorf("CLUSTER SET-CONFIG-EPOCH on %s: %w", c.Addrs[i], err)
		}
		first, last := i*clusterSlots/n, (i+1)*clusterSlots/n-1
		slots := make([]int, 0, last-first+1)
		for s := first; s <= last; s++ {
			slots = append(slots, s)
		}
		if err := cl.ClusterAddSlots(ctx, slots...).Err(); err != nil {
			return fmt.Errorf("CLUSTER ADDSLOTS %d-%d on %s: %w", first, last, c.Addrs[i], err)
		}
	}
	for i := 1; i < n; i++ {
		busPort, err := clusterBusPort(ctx, clients[i])
		if err != nil {
			return fmt.Errorf("cluster bus port of %s: %w", c.Addrs[i], err)
		}
		port := strings.TrimPrefix(c.Addrs[i], "127.0.0.1:")
		// go-redis ClusterMeet has no bus port argument.
		if err := clients[0].Do(ctx, "CLUSTER", "MEET", "127.0.0.1", port, busPort).Err(); err != nil {
			return fmt.Errorf("CLUSTER MEET %s from %s: %w", c.Addrs[i], c.Addrs[0], err)
		}
	}
	want := []string{
		"cluster_state:ok",
		"cluster_slots_assigned:" + strconv.Itoa(clusterSlots),
		"cluster_known_nodes:" + strconv.Itoa(n),
	}
	backoff := 10 * time.Millisecond
	for {
		err := clusterHealthy(ctx, clients, c.Addrs, want)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster not ready after %v: %w", startTimeout, err)
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 200*time.Millisecond)
	}
}

// clusterBusPort reads the cluster-port setting of a node.
func clusterBusPort(ctx context.Context, cl *redis.Client) (string, error) {
	res, err := cl.ConfigGet(ctx, "cluster-port").Result()
	if err != nil {
		return "", fmt.Errorf("CONFIG GET cluster-port: %w", err)
	}
	port := res["cluster-port"]
	if port == "" || port == "0" {
		return "", errors.New("cluster-port is not set")
	}
	return port, nil
}

// clusterHealthy checks that CLUSTER INFO of every node contains all the
// want lines.
func clusterHealthy(ctx context.Context, clients []*redis.Client, addrs, want []string) error {
	for i, cl := range clients {
		info, err := cl.ClusterInfo(ctx).Result()
		if err != nil {
			return fmt.Errorf("CLUSTER INFO on %s: %w", addrs[i], err)
		}
		lines := strings.Split(strings.ReplaceAll(info, "\r", ""), "\n")
		for _, w := range want {
			if !slices.Contains(lines, w) {
				return fmt.Errorf("node %s: no %q in CLUSTER INFO", addrs[i], w)
			}
		}
	}
	return nil
}
