package ratelimit

import (
	"fmt"
	"testing"
	"time"
)

func TestAllow(t *testing.T) {
	t0 := time.Now()
	l := New(3, time.Minute, 100)
	for i := range 3 {
		if ok, _ := l.Allow("1.2.3.4", t0); !ok {
			t.Fatalf("request %d refused within the burst", i+1)
		}
	}
	ok, wait := l.Allow("1.2.3.4", t0)
	if ok || wait < 19*time.Second || wait > 21*time.Second {
		t.Fatalf("4th request: ok=%v wait=%v; want refused for about 20s", ok, wait)
	}
	if ok, _ := l.Allow("5.6.7.8", t0); !ok {
		t.Fatal("another client was limited")
	}
	if ok, _ := l.Allow("1.2.3.4", t0.Add(21*time.Second)); !ok {
		t.Fatal("the client was not allowed again after the wait")
	}
}

func TestBoundedClients(t *testing.T) {
	t0 := time.Now()
	l := New(1, time.Hour, 10)
	for i := range 1000 {
		l.Allow(fmt.Sprint("10.0.", i/256, ".", i%256), t0)
	}
	if l.Len() != 10 {
		t.Fatalf("remembers %d clients, want 10", l.Len())
	}
	// The most recent clients are still limited.
	if ok, _ := l.Allow("10.0.3.231", t0); ok {
		t.Fatal("a recent client's limit was forgotten")
	}
}
