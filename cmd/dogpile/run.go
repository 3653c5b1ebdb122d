package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/dogpile-go/dogpile"
	redisbackend "github.com/dogpile-go/dogpile/backends/redis"
	"github.com/dogpile-go/dogpile/region"
)

// Exit statuses.
const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

// errUsage marks an error as the caller's: it exits 2.
var errUsage = errors.New("usage")

const globalUsage = `Usage: dogpile [global flags] <command> [flags]

Inspect and invalidate a dogpile cache region kept in Redis.

Commands:
  stats                        count the region's entries, bytes, stale and expired ones, tag counters
  keys                         list the region's keys (--match GLOB, --limit N, --long)
  get <key>                    show one entry: metadata and payload
  invalidate-table <table>...  invalidate what a write to each table invalidates
  invalidate-region            invalidate every entry of the region (--soft: make them stale)

Run "dogpile <command> -h" for a command's flags.

Global flags:
`

// globals are the global flags.
type globals struct {
	redisURL, cluster, prefix, region string
	timeout                           time.Duration
}

// command is one subcommand.
type command struct {
	usage string // after "Usage: dogpile [global flags] "
	about string
	flags func(fs *flag.FlagSet) func(ctx context.Context, c *conn, args []string, stdout io.Writer) error
}

var commands = map[string]command{
	"stats": {
		usage: "stats",
		about: "Count the region's entries, their bytes, the stale and expired ones, and its tag counters.",
		flags: func(fs *flag.FlagSet) func(context.Context, *conn, []string, io.Writer) error {
			return stats
		},
	},
	"keys": {
		usage: "keys [--match GLOB] [--limit N] [--long]",
		about: "List the region's keys as stored (after the application's key mangler), one a line.",
		flags: func(fs *flag.FlagSet) func(context.Context, *conn, []string, io.Writer) error {
			match := fs.String("match", "", "list only keys matching `GLOB` (* any run, ? one character, [a-z] a class)")
			limit := fs.Int("limit", 0, "list at most `N` keys (0: all)")
			long := fs.Bool("long", false, "add each key's state, size, age and tags")
			return func(ctx context.Context, c *conn, args []string, w io.Writer) error {
				return keys(ctx, c, args, w, *match, *limit, *long)
			}
		},
	},
	"get": {
		usage: "get <key>",
		about: "Show one entry (a key as \"keys\" lists it): its metadata, then its payload, decoded from msgpack to JSON, or in hex.",
		flags: func(fs *flag.FlagSet) func(context.Context, *conn, []string, io.Writer) error {
			return get
		},
	},
	"invalidate-table": {
		usage: "invalidate-table <table>...",
		about: "Invalidate, in the region, what the application's write to each table invalidates (the table's tag, its RelationshipCache tag and \"*\"): every cached answer that read it becomes a miss in every process.",
		flags: func(fs *flag.FlagSet) func(context.Context, *conn, []string, io.Writer) error {
			return invalidateTables
		},
	},
	"invalidate-region": {
		usage: "invalidate-region [--soft]",
		about: "Invalidate every entry of the region: a miss for every caller (hard), or with --soft stale (served while one caller regenerates it).",
		flags: func(fs *flag.FlagSet) func(context.Context, *conn, []string, io.Writer) error {
			soft := fs.Bool("soft", false, "make the entries stale instead of misses")
			return func(ctx context.Context, c *conn, args []string, w io.Writer) error {
				return invalidateRegion(ctx, c, args, w, *soft)
			}
		},
	},
}

// run is the command line: it returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var g globals
	fs := flag.NewFlagSet("dogpile", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&g.redisURL, "redis", os.Getenv("DOGPILE_REDIS_URL"), "redis:// or rediss:// `URL` of the server (default $DOGPILE_REDIS_URL)")
	fs.StringVar(&g.cluster, "cluster", "", "comma-separated `ADDRS` of Redis Cluster nodes, instead of --redis")
	fs.StringVar(&g.prefix, "prefix", "", "the key `PREFIX` of the application's Redis backend (redisbackend.WithPrefix)")
	fs.StringVar(&g.region, "region", "default", "the region's `NAME`")
	fs.DurationVar(&g.timeout, "timeout", 5*time.Second, "`DURATION` bound of the connection and of each Redis operation")
	usage := func(w io.Writer) {
		fmt.Fprint(w, globalUsage)
		fs.SetOutput(w)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage(stdout)
			return exitOK
		}
		fmt.Fprintf(stderr, "dogpile: %v\n", err)
		usage(stderr)
		return exitUsage
	}
	rest := fs.Args()
	if len(rest) == 0 {
		fmt.Fprintln(stderr, "dogpile: no command")
		usage(stderr)
		return exitUsage
	}
	if rest[0] == "help" {
		usage(stdout)
		return exitOK
	}
	cmd, ok := commands[rest[0]]
	if !ok {
		fmt.Fprintf(stderr, "dogpile: unknown command %q\n", rest[0])
		usage(stderr)
		return exitUsage
	}
	cfs := flag.NewFlagSet("dogpile "+rest[0], flag.ContinueOnError)
	cfs.SetOutput(io.Discard)
	do := cmd.flags(cfs)
	cusage := func(w io.Writer) {
		fmt.Fprintf(w, "Usage: dogpile [global flags] %s\n\n%s\n", cmd.usage, cmd.about)
		n := 0
		cfs.VisitAll(func(*flag.Flag) { n++ })
		if n > 0 {
			fmt.Fprintln(w, "\nFlags:")
			cfs.SetOutput(w)
			cfs.PrintDefaults()
			cfs.SetOutput(io.Discard)
		}
		fmt.Fprintln(w, "\nRun \"dogpile -h\" for the global flags.")
	}
	if err := cfs.Parse(rest[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			cusage(stdout)
			return exitOK
		}
		fmt.Fprintf(stderr, "dogpile %s: %v\n", rest[0], err)
		cusage(stderr)
		return exitUsage
	}
	if err := checkArgs(rest[0], cfs.Args()); err != nil {
		fmt.Fprintf(stderr, "dogpile %s: %v\n", rest[0], err)
		cusage(stderr)
		return exitUsage
	}
	c, err := connect(ctx, g)
	if err != nil {
		fmt.Fprintf(stderr, "dogpile: %v\n", err)
		if errors.Is(err, errUsage) {
			usage(stderr)
			return exitUsage
		}
		return exitFail
	}
	defer c.close()
	if err := do(ctx, c, cfs.Args(), stdout); err != nil {
		fmt.Fprintf(stderr, "dogpile %s: %v\n", rest[0], err)
		return exitFail
	}
	return exitOK
}

// checkArgs checks the positional arguments of command.
func checkArgs(command string, args []string) error {
	switch command {
	case "get":
		if len(args) != 1 {
			return fmt.Errorf("want one key, got %d arguments", len(args))
		}
	case "invalidate-table":
		if len(args) == 0 {
			return errors.New("want at least one table")
		}
	default:
		if len(args) > 0 {
			return fmt.Errorf("unexpected arguments %q", args)
		}
	}
	return nil
}

// conn is a connection to Redis and the region over it.
type conn struct {
	client  goredis.UniversalClient
	backend *redisbackend.Backend
	region  *region.Region
}

func (c *conn) close() {
	_ = c.region.Close()
	_ = c.backend.Close()
	_ = c.client.Close()
}

// connect opens the client the global flags describe and pings it within
// the timeout, without retries: an unreachable Redis fails fast, with one
// line saying where.
func connect(ctx context.Context, g globals) (*conn, error) {
	if g.timeout <= 0 {
		return nil, fmt.Errorf("--timeout must be positive: %w", errUsage)
	}
	if strings.ContainsRune(g.prefix, '{') {
		return nil, fmt.Errorf("--prefix %q contains '{', which no Redis backend's prefix does: %w", g.prefix, errUsage)
	}
	var (
		client goredis.UniversalClient
		where  string
	)
	switch {
	case g.redisURL != "" && g.cluster != "":
		return nil, fmt.Errorf("give --redis or --cluster, not both: %w", errUsage)
	case g.cluster != "":
		addrs := strings.Split(g.cluster, ",")
		for i := range addrs {
			addrs[i] = strings.TrimSpace(addrs[i])
		}
		client = goredis.NewClusterClient(&goredis.ClusterOptions{
			Addrs:       addrs,
			DialTimeout: g.timeout, ReadTimeout: g.timeout, WriteTimeout: g.timeout,
			MaxRetries: -1, MaxRedirects: 3, DialerRetries: 1,
		})
		where = strings.Join(addrs, ",")
	case g.redisURL != "":
		opts, err := goredis.ParseURL(g.redisURL)
		if err != nil {
			return nil, fmt.Errorf("--redis %q: %w: %w", g.redisURL, err, errUsage)
		}
		opts.DialTimeout, opts.ReadTimeout, opts.WriteTimeout = g.timeout, g.timeout, g.timeout
		opts.MaxRetries, opts.DialerRetries = -1, 1
		client = goredis.NewClient(opts)
		where = opts.Addr
	default:
		return nil, fmt.Errorf("no Redis: give --redis URL, --cluster ADDRS or set DOGPILE_REDIS_URL: %w", errUsage)
	}
	pctx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()
	if err := client.Ping(pctx).Err(); err != nil {
		_ = client.Close()
		return nil, fmt.Errorf("cannot reach Redis at %s: %w", where, err)
	}
	b := redisbackend.New(client, redisbackend.WithPrefix(g.prefix), redisbackend.WithTimeout(g.timeout))
	return &conn{client: client, backend: b, region: region.New(b, region.WithName(g.region))}, nil
}

func stats(ctx context.Context, c *conn, _ []string, w io.Writer) error {
	sum, err := c.region.Inspect(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "region   %s\n", c.region.Name())
	fmt.Fprintf(w, "entries  %d\n", sum.Entries)
	fmt.Fprintf(w, "bytes    %d\n", sum.Bytes)
	fmt.Fprintf(w, "fresh    %d\n", sum.Entries-sum.Stale-sum.Expired)
	fmt.Fprintf(w, "stale    %d\n", sum.Stale)
	fmt.Fprintf(w, "expired  %d\n", sum.Expired)
	fmt.Fprintf(w, "tags     %d\n", sum.Tags)
	return nil
}

func keys(ctx context.Context, c *conn, _ []string, w io.Writer, match string, limit int, long bool) error {
	var opts []region.InspectOption
	if match != "" {
		opts = append(opts, region.InspectMatch(match))
	}
	n := 0
	now := time.Now()
	for e, err := range c.region.Entries(ctx, opts...) {
		if err != nil {
			return err
		}
		if limit > 0 && n == limit {
			break
		}
		n++
		if !long {
			fmt.Fprintln(w, e.Key)
			continue
		}
		age := "-"
		if !e.Created.IsZero() {
			age = now.Sub(e.Created).Round(time.Second).String()
		}
		fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%s\n", e.Key, state(e), e.Size, age, strings.Join(e.Tags, ","))
	}
	return nil
}

// state names an entry's state.
func state(e region.EntryInfo) string {
	switch {
	case e.Expired:
		return "expired"
	case e.Stale:
		return "stale"
	}
	return "fresh"
}

func get(ctx context.Context, c *conn, args []string, w io.Writer) error {
	key := args[0]
	e, ok, err := c.region.Entry(ctx, key)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("no entry %q in region %s", key, c.region.Name())
	}
	at := func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return t.UTC().Format(time.RFC3339Nano)
	}
	fmt.Fprintf(w, "key      %s\n", e.Key)
	fmt.Fprintf(w, "redis    %s\n", c.backend.Key(e.BackendKey))
	fmt.Fprintf(w, "state    %s\n", state(e))
	fmt.Fprintf(w, "size     %d\n", e.Size)
	if !e.Created.IsZero() {
		fmt.Fprintf(w, "created  %s\n", at(e.Created))
		fmt.Fprintf(w, "expires  %s\n", at(e.Expires))
		fmt.Fprintf(w, "dies     %s\n", at(e.Dies))
	}
	fmt.Fprintf(w, "tags     %s\n", strings.Join(e.Tags, ", "))
	payload, ok, err := c.region.EntryPayload(ctx, key)
	if err != nil {
		return err
	}
	if !ok {
		fmt.Fprintln(w, "payload  (stored in a format this version does not read)")
		return nil
	}
	kind, text := describePayload(payload)
	fmt.Fprintf(w, "payload  %s, %d bytes\n%s\n", kind, len(payload), text)
	return nil
}

func invalidateTables(ctx context.Context, c *conn, tables []string, w io.Writer) error {
	var tags []string
	seen := map[string]bool{}
	for _, t := range tables {
		for _, tag := range dogpile.TableTags(t) {
			if !seen[tag] {
				seen[tag] = true
				tags = append(tags, tag)
			}
		}
	}
	if err := c.region.InvalidateTags(ctx, tags...); err != nil {
		return err
	}
	fmt.Fprintf(w, "invalidated in region %s: tags %s\n", c.region.Name(), strings.Join(tags, " "))
	return nil
}

func invalidateRegion(ctx context.Context, c *conn, _ []string, w io.Writer, soft bool) error {
	if err := c.region.Invalidate(ctx, !soft); err != nil {
		return err
	}
	how := "hard"
	if soft {
		how = "soft"
	}
	fmt.Fprintf(w, "invalidated region %s (%s)\n", c.region.Name(), how)
	return nil
}
