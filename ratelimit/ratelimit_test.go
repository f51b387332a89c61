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

func TestClientKey(t *testing.T) {
	for _, tt := range []struct {
		ip   string
		bits int
		want string
	}{
		{"192.0.2.7", 64, "192.0.2.7"},
		{"::ffff:192.0.2.7", 64, "192.0.2.7"},
		{"2001:db8:1:2:aaaa:bbbb:cccc:dddd", 64, "2001:db8:1:2::/64"},
		{"2001:db8:1:2::1", 64, "2001:db8:1:2::/64"},
		{"2001:db8:1:2ff::1", 56, "2001:db8:1:200::/56"},
		{"fe80::1%eth0", 64, "fe80::/64"},
		{"2001:db8::1", 128, "2001:db8::1"},
		{"not an address", 64, "not an address"},
	} {
		if got := ClientKey(tt.ip, tt.bits); got != tt.want {
			t.Errorf("ClientKey(%q, %d) = %q, want %q", tt.ip, tt.bits, got, tt.want)
		}
	}
	// One /64 is one client: its addresses share a budget.
	l := New(2, time.Minute, 100)
	t0 := time.Now()
	for i, ip := range []string{"2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2::3"} {
		ok, _ := l.Allow(ClientKey(ip, DefaultIPv6Prefix), t0)
		if ok != (i < 2) {
			t.Fatalf("request %d from %s: allowed=%v", i+1, ip, ok)
		}
	}
	if ok, _ := l.Allow(ClientKey("2001:db8:1:3::1", DefaultIPv6Prefix), t0); !ok {
		t.Fatal("another /64 was limited")
	}
}
