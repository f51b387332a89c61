// Package kvtest is a conformance suite for kv.Store implementations: every
// store runs the same tests, so the token and flow logic above them can rely
// on one behaviour.
package kvtest

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/caddy-oauthconn/caddy-oauthconn/kv"
)

// Run runs the conformance suite against stores made by open. Each call of
// open must return an empty store.
func Run(t *testing.T, open func(t *testing.T) kv.Store) {
	ctx := context.Background()

	t.Run("missing record", func(t *testing.T) {
		s := open(t)
		if _, err := s.Get(ctx, "tokens/a/b"); !errors.Is(err, kv.ErrNotFound) {
			t.Fatalf("Get missing: err = %v, want ErrNotFound", err)
		}
		if err := s.Delete(ctx, "tokens/a/b"); err != nil {
			t.Fatalf("Delete missing: %v", err)
		}
		names, err := s.List(ctx, "nothing/here")
		if err != nil || len(names) != 0 {
			t.Fatalf("List missing dir = %v, %v; want empty", names, err)
		}
	})

	t.Run("check-and-set versions", func(t *testing.T) {
		s := open(t)
		v1, err := s.Put(ctx, "tokens/c/s", map[string]string{"access_token": "one"}, 0)
		if err != nil {
			t.Fatalf("create: %v", err)
		}
		if _, err := s.Put(ctx, "tokens/c/s", map[string]string{"access_token": "dup"}, 0); !errors.Is(err, kv.ErrConflict) {
			t.Fatalf("second create: err = %v, want ErrConflict", err)
		}
		v2, err := s.Put(ctx, "tokens/c/s", map[string]string{"access_token": "two", "scope": "x y"}, v1)
		if err != nil {
			t.Fatalf("update at v%d: %v", v1, err)
		}
		if v2 <= v1 {
			t.Fatalf("version went from %d to %d", v1, v2)
		}
		if _, err := s.Put(ctx, "tokens/c/s", map[string]string{"access_token": "stale"}, v1); !errors.Is(err, kv.ErrConflict) {
			t.Fatalf("stale update: err = %v, want ErrConflict", err)
		}
		e, err := s.Get(ctx, "tokens/c/s")
		if err != nil {
			t.Fatal(err)
		}
		if e.Version != v2 || e.Data["access_token"] != "two" || e.Data["scope"] != "x y" {
			t.Fatalf("Get = %+v, want version %d with the second write", e, v2)
		}
	})

	t.Run("delete removes every version", func(t *testing.T) {
		s := open(t)
		v, err := s.Put(ctx, "states/abc", map[string]string{"k": "v"}, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Put(ctx, "states/abc", map[string]string{"k": "w"}, v); err != nil {
			t.Fatal(err)
		}
		if err := s.Delete(ctx, "states/abc"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Get(ctx, "states/abc"); !errors.Is(err, kv.ErrNotFound) {
			t.Fatalf("Get after delete: err = %v", err)
		}
		// A deleted record starts over: a create (cas 0) succeeds.
		if _, err := s.Put(ctx, "states/abc", map[string]string{"k": "new"}, 0); err != nil {
			t.Fatalf("create after delete: %v", err)
		}
	})

	t.Run("list", func(t *testing.T) {
		s := open(t)
		for _, p := range []string{"states/one", "states/two", "tokens/x/_shared"} {
			if _, err := s.Put(ctx, p, map[string]string{"a": "b"}, 0); err != nil {
				t.Fatal(err)
			}
		}
		names, err := s.List(ctx, "states")
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(names)
		if !slices.Equal(names, []string{"one", "two"}) {
			t.Fatalf("List(states) = %v", names)
		}
	})

	t.Run("long segments", func(t *testing.T) {
		// The longest subjects a connection accepts, 512 bytes, escaped
		// into one segment as package tokens does: ASCII, and characters
		// of 3 bytes that escape to 9.
		s := open(t)
		names := []string{
			url.PathEscape(strings.Repeat("a", 512)),
			url.PathEscape(strings.Repeat("€", 170)),
			"short",
		}
		for i, n := range names {
			v, err := s.Put(ctx, "tokens/long/"+n, map[string]string{"i": fmt.Sprint(i)}, 0)
			if err != nil {
				t.Fatalf("create %d: %v", i, err)
			}
			if _, err := s.Put(ctx, "tokens/long/"+n, map[string]string{"i": fmt.Sprint(i, "+")}, v); err != nil {
				t.Fatalf("update %d: %v", i, err)
			}
			e, err := s.Get(ctx, "tokens/long/"+n)
			if err != nil || e.Data["i"] != fmt.Sprint(i, "+") {
				t.Fatalf("Get %d = %+v, %v", i, e, err)
			}
		}
		got, err := s.List(ctx, "tokens/long")
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(got)
		want := slices.Sorted(slices.Values(names))
		if !slices.Equal(got, want) {
			t.Fatalf("List = %q, want %q", got, want)
		}
		for i, n := range names {
			if err := s.Delete(ctx, "tokens/long/"+n); err != nil {
				t.Fatalf("Delete %d: %v", i, err)
			}
			if _, err := s.Get(ctx, "tokens/long/"+n); !errors.Is(err, kv.ErrNotFound) {
				t.Fatalf("Get %d after Delete: err = %v", i, err)
			}
		}
		if got, err := s.List(ctx, "tokens/long"); err != nil || len(got) != 0 {
			t.Fatalf("List after deletes = %q, %v", got, err)
		}
	})

	t.Run("concurrent check-and-set writers", func(t *testing.T) {
		s := open(t)
		const writers, rounds = 8, 5
		var wg sync.WaitGroup
		var mu sync.Mutex
		won := 0
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for r := range rounds {
					// Each writer reads, then writes at the version read;
					// on conflict it re-reads and tries again.
					for {
						e, err := s.Get(ctx, "tokens/race/_shared")
						if err != nil && !errors.Is(err, kv.ErrNotFound) {
							t.Error(err)
							return
						}
						_, err = s.Put(ctx, "tokens/race/_shared", map[string]string{"w": fmt.Sprint(w, "-", r)}, e.Version)
						if errors.Is(err, kv.ErrConflict) {
							continue
						}
						if err != nil {
							t.Error(err)
							return
						}
						mu.Lock()
						won++
						mu.Unlock()
						break
					}
				}
			}()
		}
		wg.Wait()
		e, err := s.Get(ctx, "tokens/race/_shared")
		if err != nil {
			t.Fatal(err)
		}
		// Every successful write produced exactly one new version: no
		// write was lost or doubled.
		if won != writers*rounds || e.Version != writers*rounds {
			t.Fatalf("successful writes = %d, final version = %d; want %d each", won, e.Version, writers*rounds)
		}
	})
}
