package flow

import (
	"net/url"
	"strings"
	"testing"
)

func FuzzParseCallback(f *testing.F) {
	for _, s := range []string{
		"code=abc&state=xyz", "state=xyz&error=access_denied&error_description=no",
		"code=a&code=b&state=s", "state=s&code=c&iss=https%3A%2F%2Fas", "%zz", "state=&code=", "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		cb, err := ParseCallback(raw)
		if err != nil {
			return
		}
		// What is accepted is well-formed: a state, exactly one of code
		// and error, nothing over the cap, each from a single value.
		if cb.State == "" || (cb.Code == "") == (cb.Error == "") {
			t.Fatalf("accepted %q as %+v", raw, cb)
		}
		q, _ := url.ParseQuery(raw)
		for _, name := range []string{"state", "code", "iss", "error", "error_description"} {
			if len(q[name]) > 1 || len(q.Get(name)) > maxParam {
				t.Fatalf("accepted %q with %s repeated or too long", raw, name)
			}
		}
	})
}

func FuzzSafeReturnTo(f *testing.F) {
	for _, s := range []string{"/", "/a?b#c", "//evil", "/\\evil", "https://good.example/x", "/%2f%2fevil", "javascript:x", "/%E2%80%A8"} {
		f.Add(s)
	}
	policy := ReturnTo{AllowedOrigins: []string{"https://good.example"}}
	f.Fuzz(func(t *testing.T, s string) {
		got := policy.Safe(s, "FALLBACK")
		if got == "FALLBACK" {
			return
		}
		if got != s {
			t.Fatalf("Safe(%q) = %q: neither the input nor the fallback", s, got)
		}
		// Whatever is accepted resolves against this site to this site
		// or the allowed origin.
		base, _ := url.Parse("https://this.example/oauth/")
		ref, err := url.Parse(s)
		if err != nil {
			t.Fatalf("accepted unparseable %q", s)
		}
		host := base.ResolveReference(ref).Host
		if host != "this.example" && host != "good.example" {
			t.Fatalf("accepted %q, which leads to %q", s, host)
		}
		if strings.ContainsAny(s, "\\\r\n\t") {
			t.Fatalf("accepted %q with a backslash or control character", s)
		}
	})
}
