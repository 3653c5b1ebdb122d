// Command prometheus shows a dogpile-go region's metrics as Prometheus
// scrapes them: it instruments a memory region with package dogpileotel,
// exports the metrics through OpenTelemetry's Prometheus exporter, runs a
// small GORM workload on SQLite in memory, and serves /metrics.
//
//	go run . -addr localhost:9464   # then: curl localhost:9464/metrics
//	go run . -once                  # print the exposition once and exit
//
// The workload: 3 products each read 4 times through FromCache (3 misses,
// 9 hits), an update of one of them (its table invalidated), and that
// product read again (a miss): dogpile_region_hits_total is 9,
// dogpile_region_misses_total 4, dogpile_region_regenerations_total 4, and
// dogpile_region_invalidations_total counts the update's invalidations
// (one before the commit, one after).
package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	promclient "github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/otlptranslator"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"gorm.io/driver/sqlite"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/dogpile-go/dogpile"
	"github.com/dogpile-go/dogpile/backends/memory"
	dogpileotel "github.com/dogpile-go/dogpile/otel"
	"github.com/dogpile-go/dogpile/region"
)

// Product is the example's model.
type Product struct {
	ID        uint
	Name      string
	Price     int
	UpdatedAt time.Time
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		log.Fatal(err)
	}
}

// run is the command with its arguments: it serves /metrics on -addr until
// ctx ends, or with -once fetches /metrics from itself, writes the
// exposition to out and returns.
func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("prometheus", flag.ContinueOnError)
	addr := fs.String("addr", "localhost:9464", "address to serve /metrics on")
	once := fs.Bool("once", false, "print the metrics exposition once and exit")
	if err := fs.Parse(args); err != nil {
		return err
	}

	// OpenTelemetry's Prometheus exporter is a metric reader: a
	// MeterProvider with it registers the metrics in a Prometheus registry.
	reg := promclient.NewRegistry()
	exporter, err := otelprom.New(otelprom.WithRegisterer(reg),
		otelprom.WithTranslationStrategy(otlptranslator.UnderscoreEscapingWithSuffixes))
	if err != nil {
		return fmt.Errorf("prometheus exporter: %w", err)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exporter))
	defer func() { _ = mp.Shutdown(context.Background()) }()

	// The region, instrumented.
	r := region.New(memory.New(memory.WithMaxBytes(16<<20)), region.WithName("default"), region.WithExpiration(10*time.Minute))
	defer r.Close()
	inst, err := dogpileotel.Instrument(r, dogpileotel.WithMeterProvider(mp))
	if err != nil {
		return err
	}
	defer inst.Close()

	if err := workload(ctx, r); err != nil {
		return err
	}

	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", *addr, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }() // ends with Shutdown below
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()

	url := "http://" + ln.Addr().String() + "/metrics"
	if *once {
		return fetch(ctx, url, out)
	}
	fmt.Fprintf(out, "serving %s (Ctrl-C to stop)\n", url)
	select {
	case <-ctx.Done():
		return nil
	case err := <-served:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("serve: %w", err)
	}
}

// fetch GETs url and copies the body to out.
func fetch(ctx context.Context, url string, out io.Writer) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("get %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("get %s: %s", url, resp.Status)
	}
	if _, err := io.Copy(out, resp.Body); err != nil {
		return fmt.Errorf("read %s: %w", url, err)
	}
	return nil
}

// workload runs the queries the package documentation lists, on SQLite in
// memory with the plugin over r.
func workload(ctx context.Context, r *region.Region) error {
	sqlDB, err := sql.Open("sqlite3", ":memory:")
	if err != nil {
		return err
	}
	defer sqlDB.Close()
	sqlDB.SetMaxOpenConns(1) // one connection: one database in memory
	db, err := gorm.Open(sqlite.New(sqlite.Config{Conn: sqlDB}), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		return err
	}
	db = db.WithContext(ctx)
	if err := db.AutoMigrate(&Product{}); err != nil {
		return err
	}
	for i := 1; i <= 10; i++ {
		if err := db.Create(&Product{Name: fmt.Sprint("product ", i), Price: 10 * i}).Error; err != nil {
			return err
		}
	}
	// The plugin from here on: the seeding above invalidated nothing.
	if err := db.Use(dogpile.New(map[string]*region.Region{"default": r})); err != nil {
		return err
	}
	read := func(id uint) error {
		var p Product
		return db.Scopes(dogpile.FromCache("default")).First(&p, id).Error
	}
	for id := uint(1); id <= 3; id++ {
		for range 4 {
			if err := read(id); err != nil {
				return err
			}
		}
	}
	if err := db.Model(&Product{}).Where("id = ?", 1).Update("price", 5).Error; err != nil {
		return err
	}
	return read(1)
}
