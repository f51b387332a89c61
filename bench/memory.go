package main

import (
	"context"
	"fmt"
	"os"
	"runtime"
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

type memResult struct {
	connections int
	heapPerConn float64
	rssPerConn  float64
}

// memoryPerConnection fills a Keeper's cache with n connections (one per
// subject) through Keeper.Token, the path every proxied request takes, and
// returns the heap it grew by, per connection. Tokens are the size Hydra
// issues (ory_at_/ory_rt_, 87 characters).
func memoryPerConnection(n int) memResult {
	st := &mapStore{recs: make(map[string]map[string]string, n)}
	exp := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	for i := range n {
		st.recs[fmt.Sprintf("tokens/demo/user-%07d", i)] = map[string]string{
			"schema": "2", "access_token": fmt.Sprintf("ory_at_%080d", i), "refresh_token": fmt.Sprintf("ory_rt_%080d", i),
			"token_type": "bearer", "scope": "openid offline_access", "expiry": exp,
			"obtained_at": time.Now().UTC().Format(time.RFC3339), "connected_at": time.Now().UTC().Format(time.RFC3339),
		}
	}
	k := tokens.NewKeeper(tokens.Options{Store: st})
	policy := tokens.Policy{Margin: 5 * time.Minute, Cooldown: 30 * time.Second}
	before, rss0 := heap(), rss()
	for i := range n {
		if _, err := k.Token(context.Background(), tokens.Key{Connector: "demo", Subject: fmt.Sprintf("user-%07d", i)}, nil, policy); err != nil {
			panic(err)
		}
	}
	after, rss1 := heap(), rss()
	runtime.KeepAlive(k)
	runtime.KeepAlive(st)
	return memResult{connections: n, heapPerConn: float64(after-before) / float64(n), rssPerConn: float64(rss1-rss0) / float64(n)}
}

func heap() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
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
