package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/caddy-oauthconn/caddy-oauthconn/kv"
	"github.com/caddy-oauthconn/caddy-oauthconn/tokens"
)

// mapStore holds records in memory for the memory benchmark, handing out
// fresh copies as a network store does, so the cache owns what it keeps.
type mapStore struct {
	mu   sync.Mutex
	recs map[string]map[string]string
}

func (m *mapStore) Get(_ context.Context, p string) (kv.Entry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.recs[p]
	if !ok {
		return kv.Entry{}, kv.ErrNotFound
	}
	cp := make(map[string]string, len(r))
	for k, v := range r {
		cp[k] = strings.Clone(v)
	}
	return kv.Entry{Data: cp, Version: 1}, nil
}

func (m *mapStore) Put(context.Context, string, map[string]string, int) (int, error) {
	return 0, fmt.Errorf("read-only")
}

func (m *mapStore) Delete(context.Context, string) error { return nil }

func (m *mapStore) List(context.Context, string) ([]string, error) { return nil, nil }

// memResult is what memoryPerConnection measured.
type memResult struct {
	connections int
	heapPerConn float64
	rssPerConn  float64
	// missTime is the mean time of a cache miss (a store read and an
	// insertion) while the cache fills, and missAllocs its allocations.
	missTime   time.Duration
	missAllocs float64
	// evicted connections while another tenth of connections were read
	// into the full cache; evictTime and evictAllocs are what each
	// eviction added to the misses that caused it, longestMiss the
	// slowest of those misses (the one that ran an eviction pass).
	evicted     int
	evictTime   time.Duration
	evictAllocs float64
	longestMiss time.Duration
	// hits are cache hits (Keeper.Token with a fresh token) from
	// hitWorkers goroutines over random connections.
	hits                   result
	hitP50, hitP99, hitMax time.Duration
}

// hitWorkers is the number of goroutines reading the cache at once.
const hitWorkers = 16

// memoryPerConnection fills a bounded cache of n connections (one per
// subject) through Keeper.Token, the path every proxied request takes, and
// measures the heap it grew by per connection, then the latency of cache
// hits from hitWorkers goroutines, then the cost of evicting: a tenth more
// connections are read into the full cache. Tokens are the size Hydra
// issues (ory_at_/ory_rt_, 87 characters).
func memoryPerConnection(n int) memResult {
	extra := max(n/10, 1)
	st := &mapStore{recs: make(map[string]map[string]string, n+extra)}
	exp := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	now := time.Now().UTC().Format(time.RFC3339)
	for i := range n + extra {
		st.recs[fmt.Sprintf("tokens/demo/user-%07d", i)] = map[string]string{
			"schema": "2", "access_token": fmt.Sprintf("ory_at_%080d", i), "refresh_token": fmt.Sprintf("ory_rt_%080d", i),
			"token_type": "bearer", "scope": "openid offline_access", "expiry": exp,
			"obtained_at": now, "connected_at": now,
		}
	}
	cache := tokens.NewBoundedCache(n)
	k := tokens.NewKeeper(tokens.Options{Store: st, Cache: cache})
	// A miss waits for its store read however long the machine takes (a
	// shared machine can stall a process for seconds). No revalidation:
	// past its interval every hit would start a store read in the
	// background, and a revalidation of an evicted connection inserts it
	// again; this measures the cache.
	policy := tokens.Policy{Margin: 5 * time.Minute, Cooldown: 30 * time.Second, MaxWait: time.Hour, Revalidate: -1}
	key := func(i int) tokens.Key { return tokens.Key{Connector: "demo", Subject: fmt.Sprintf("user-%07d", i)} }
	token := func(key tokens.Key) {
		if _, err := k.Access(context.Background(), key, nil, policy); err != nil {
			panic(err)
		}
	}
	keys := make([]tokens.Key, n)
	for i := range keys {
		keys[i] = key(i)
	}

	res := memResult{connections: n}
	before, rss0, m0 := heap(), rss(), mallocs()
	t0 := time.Now()
	for _, key := range keys {
		token(key)
	}
	fill := time.Since(t0)
	m1 := mallocs()
	after, rss1 := heap(), rss()
	res.heapPerConn = float64(after-before) / float64(n)
	res.rssPerConn = float64(rss1-rss0) / float64(n)
	res.missTime = fill / time.Duration(n)
	res.missAllocs = float64(m1-m0) / float64(n)

	// Hits from hitWorkers goroutines, each over the connections in an
	// order of its own.
	per := max(2_000_000/hitWorkers, n/hitWorkers)
	lat := make([][]time.Duration, hitWorkers)
	var wg sync.WaitGroup
	t0 = time.Now()
	for w := range hitWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rnd := rand.New(rand.NewPCG(uint64(w), 1))
			l := make([]time.Duration, per)
			for i := range l {
				key := keys[rnd.IntN(n)]
				s := time.Now()
				token(key)
				l[i] = time.Since(s)
			}
			lat[w] = l
		}()
	}
	wg.Wait()
	res.hits = result{requests: per * hitWorkers, elapsed: time.Since(t0), latencies: slices.Concat(lat...)}
	res.hitP50, res.hitP99, res.hitMax = res.hits.percentile(0.5), res.hits.percentile(0.99), res.hits.percentile(1)
	res.hits.latencies = nil

	// Eviction: another tenth of connections into the full cache.
	m0 = mallocs()
	t0 = time.Now()
	for i := n; i < n+extra; i++ {
		s := time.Now()
		token(key(i))
		res.longestMiss = max(res.longestMiss, time.Since(s))
	}
	spent := time.Since(t0)
	m1 = mallocs()
	res.evicted = n + extra - cache.Len()
	if res.evicted > 0 {
		res.evictTime = (spent - time.Duration(extra)*res.missTime) / time.Duration(res.evicted)
		res.evictAllocs = (float64(m1-m0) - float64(extra)*res.missAllocs) / float64(res.evicted)
	}
	runtime.KeepAlive(k)
	runtime.KeepAlive(st)
	return res
}

func heap() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

func mallocs() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.Mallocs
}

// rss is the process's resident set size in bytes (Linux), or 0.
func rss() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	var size, resident int64
	fmt.Sscan(string(b), &size, &resident)
	return resident * int64(os.Getpagesize())
}

// memoryMarkdown writes the memory section of the report.
func memoryMarkdown(out io.Writer, rows []memResult) {
	p := func(format string, a ...any) { fmt.Fprintf(out, format+"\n", a...) }
	p("### 5. A million connections: memory, eviction and hits (cache filled and hit through Keeper.Access, as proxied requests are, one subject per connection, Hydra-sized tokens)")
	p("")
	p("| connections | heap bytes per connection | resident bytes per connection | miss (store read + insert) | evictions | time per eviction | allocations per eviction | slowest miss while evicting |")
	p("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	for _, m := range rows {
		p("| %d | %.0f | %.0f | %s | %d | %s | %.2f | %s |", m.connections, m.heapPerConn, m.rssPerConn,
			us(m.missTime), m.evicted, us(m.evictTime), m.evictAllocs, ms(m.longestMiss))
	}
	p("")
	p("Cache hits, %d goroutines over random connections (each timed with two clock reads, included):", hitWorkers)
	p("")
	p("| connections | hits/s | p50 | p99 | max |")
	p("| ---: | ---: | ---: | ---: | ---: |")
	for _, m := range rows {
		p("| %d | %.0f | %s | %s | %s |", m.connections, m.hits.throughput(), us(m.hitP50), us(m.hitP99), us(m.hitMax))
	}
	p("")
	p("Resident growth is coarse (pages, and the runtime keeps freed memory); the heap figure is the cache's own.")
	p("The cache holds at most as many connections as measured: the next tenth evicts (a pass over the table, lock-free for readers).")
}

func us(d time.Duration) string { return fmt.Sprintf("%.2f µs", float64(d)/float64(time.Microsecond)) }

// memoryOnly runs section 5 alone (go run ./bench -memory 1000000).
func memoryOnly(sizes string) {
	var rows []memResult
	for _, f := range strings.Split(sizes, ",") {
		var n int
		if _, err := fmt.Sscan(f, &n); err != nil || n <= 0 {
			fmt.Fprintf(os.Stderr, "bench: -memory: %q is not a size\n", f)
			os.Exit(2)
		}
		fmt.Fprintf(os.Stderr, "memory with %d connections\n", n)
		rows = append(rows, memoryPerConnection(n))
	}
	fmt.Fprintf(os.Stdout, "Machine: %s.\n\n", machine())
	memoryMarkdown(os.Stdout, rows)
}
