package flow

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestCookie(t *testing.T) {
	f, _ := newFlows(t, nil)
	ctx := context.Background()
	s, err := f.Begin(ctx, Params{Connector: "demo"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		c          Cookie
		name, path string
	}{
		{Cookie{Path: "/oauth", TTL: 10 * time.Minute}, "oauthconn_flow_demo", "/oauth"},
		{Cookie{Secure: true, Path: "/oauth", TTL: 10 * time.Minute}, "__Host-oauthconn_flow_demo", "/"},
	} {
		ck := tt.c.New("demo", s)
		if ck.Name != tt.name || ck.Path != tt.path || ck.Secure != tt.c.Secure || !ck.HttpOnly || ck.MaxAge != 600 ||
			ck.SameSite != http.SameSiteLaxMode || ck.Domain != "" || strings.Contains(ck.Value, s.State) {
			t.Fatalf("cookie %s", ck)
		}
		r := httptest.NewRequest("GET", "/oauth/callback", nil)
		r.AddCookie(&http.Cookie{Name: "theme", Value: "dark"})
		r.AddCookie(&http.Cookie{Name: tt.c.Name("other"), Value: strings.Repeat("0", 64) + ".x"})
		r.AddCookie(ck)
		if name, binding := Find(r, s.State); name != ck.Name || binding != s.Binding {
			t.Fatalf("Find = %q, %q", name, binding)
		}
		if name, _ := Find(r, "another state"); name != "" {
			t.Fatalf("Find found %q for another state", name)
		}
		if id, binding, ok := tt.c.Previous(r, "demo"); !ok || id != s.ID || binding != s.Binding {
			t.Fatalf("Previous = %q, %q, %v", id, binding, ok)
		}
		if cl := tt.c.Clear(ck.Name); cl.MaxAge >= 0 || cl.Path != ck.Path || cl.Secure != ck.Secure {
			t.Fatalf("clearing cookie %s", cl)
		}
	}
	if n := (Cookie{}).Name("a b;c=d"); !strings.HasPrefix(n, CookiePrefix+"~") || strings.ContainsAny(n, " ;=") {
		t.Fatalf("cookie name for an awkward connector name: %q", n)
	}
	for name, want := range map[string]bool{"oauthconn_flow_demo": true, "__Host-oauthconn_flow_demo": true, "theme": false, "__Host-theme": false} {
		if IsCookie(name) != want {
			t.Errorf("IsCookie(%q) = %v", name, !want)
		}
	}
}

func TestAbandon(t *testing.T) {
	f, st := newFlows(t, nil)
	ctx := context.Background()
	s, err := f.Begin(ctx, Params{Connector: "demo"})
	if err != nil {
		t.Fatal(err)
	}
	// Only the browser holding the binding can abandon its flow.
	if ok, err := f.Abandon(ctx, s.ID, "someone else's guess"); ok || err != nil {
		t.Fatalf("abandoned with a wrong binding: %v %v", ok, err)
	}
	if ok, err := f.Abandon(ctx, s.ID, s.Binding); !ok || err != nil {
		t.Fatalf("abandon: %v %v", ok, err)
	}
	if ids, _ := st.List(ctx, "states"); len(ids) != 0 {
		t.Fatalf("abandoned flow left records %v", ids)
	}
	if ok, err := f.Abandon(ctx, s.ID, s.Binding); ok || err != nil {
		t.Fatalf("abandoning twice: %v %v", ok, err)
	}
}
