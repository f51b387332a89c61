package connector

import (
	"strings"
	"testing"
)

func TestHostPatternMatch(t *testing.T) {
	for _, tt := range []struct {
		pattern, scheme, host string
		want                  bool
	}{
		// A name without a port: the scheme's default port only.
		{"api.example.com", "https", "api.example.com", true},
		{"api.example.com", "https", "API.Example.COM", true},
		{"API.example.com", "https", "api.example.com", true},
		{"api.example.com", "https", "api.example.com:443", true},
		{"api.example.com", "https", "api.example.com:8443", false},
		{"api.example.com", "http", "api.example.com", true},
		{"api.example.com", "http", "api.example.com:80", true},
		{"api.example.com", "http", "api.example.com:443", false},
		{"api.example.com", "https", "example.com", false},
		{"api.example.com", "https", "xapi.example.com", false},
		{"api.example.com", "https", "api.example.com.evil.net", false},
		{"api.example.com", "https", "evil.api.example.com", false},
		{"api.example.com", "https", "api.example.com.", false},
		{"api.example.com", "https", "api.example.com:", false},
		{"api.example.com", "https", "", false},
		// Ports.
		{"api.example.com:8443", "https", "api.example.com:8443", true},
		{"api.example.com:8443", "https", "api.example.com", false},
		{"api.example.com:8443", "https", "api.example.com:443", false},
		{"api.example.com:443", "https", "api.example.com", true},
		{"api.example.com:*", "https", "api.example.com:1", true},
		{"api.example.com:*", "https", "api.example.com", true},
		{"api.example.com:*", "http", "api.example.com:65535", true},
		{"api.example.com:*", "https", "api.example.com:65536", false},
		{"api.example.com:*", "https", "api.example.com:0", false},
		{"api.example.com:*", "https", "api.example.com:08443", false},
		{"api.example.com:*", "https", "api.example.com:*", false},
		// A * label: one or more labels.
		{"*.my.salesforce.com", "https", "acme.my.salesforce.com", true},
		{"*.my.salesforce.com", "https", "acme.sandbox.my.salesforce.com", true},
		{"*.my.salesforce.com", "https", "my.salesforce.com", false},
		{"*.my.salesforce.com", "https", "acme.my.salesforce.com.evil.net", false},
		{"*.my.salesforce.com", "https", "acmemy.salesforce.com", false},
		{"*.my.salesforce.com", "https", "acme.my.salesforce.com:8443", false},
		{"*.my.salesforce.com:*", "https", "acme.my.salesforce.com:8443", true},
		{"api.*.example.com", "https", "api.eu.example.com", true},
		{"api.*.example.com", "https", "api.eu.west.example.com", true},
		{"api.*.example.com", "https", "api.example.com", false},
		{"api.*.example.com", "https", "www.eu.example.com", false},
		{"*.*.example.com", "https", "a.example.com", false},
		{"*.*.example.com", "https", "a.b.example.com", true},
		{"*.*.example.com", "https", "a.b.c.example.com", true},
		{"*.example.com", "https", "127.0.0.1", false},
		{"*.example.com", "https", "a_b.example.com", true},
		// IP literals.
		{"127.0.0.1:*", "http", "127.0.0.1:8080", true},
		{"127.0.0.1", "http", "127.0.0.1", true},
		{"127.0.0.1", "http", "127.0.0.1:8080", false},
		{"127.0.0.1:*", "http", "127.0.0.2:8080", false},
		{"127.0.0.1:*", "http", "[::ffff:127.0.0.1]:8080", true},
		{"[::1]:*", "http", "[::1]:8080", true},
		{"[::1]:*", "http", "[0:0:0:0:0:0:0:1]:8080", true},
		{"[::1]", "https", "[::1]", true},
		{"[::1]", "https", "::1", false},
		{"[::1]:*", "http", "[::1%25lo]:8080", false},
		{"127.0.0.1:*", "http", "localhost:8080", false},
		{"localhost:*", "http", "127.0.0.1:8080", false},
		{"localhost:*", "http", "localhost:8080", true},
		// Hosts that read as numbers are refused, not guessed at.
		{"2130706433:*", "http", "2130706433:80", false},
		// Names with characters a host name cannot have.
		{"api.example.com", "https", "api.example.com/x", false},
		{"api.example.com", "https", "api.example.com@evil.net", false},
		{"api.example.com", "https", "api..example.com", false},
		{"*.example.com", "https", "a b.example.com", false},
		{"*.example.com", "https", "a%2e.example.com", false},
	} {
		p, err := ParseHostPattern(tt.pattern)
		if err != nil {
			if tt.pattern != "2130706433:*" {
				t.Errorf("%s: %v", tt.pattern, err)
			}
			continue
		}
		if got := p.Match(tt.scheme, tt.host); got != tt.want {
			t.Errorf("%s matches %s://%s: %v, want %v", tt.pattern, tt.scheme, tt.host, got, tt.want)
		}
	}
}

func TestHostPatternErrors(t *testing.T) {
	for _, tt := range []struct{ pattern, want string }{
		{"", "empty host"},
		{"*", "at least two other labels"},
		{"*.com", "at least two other labels"},
		{"*.*", "at least two other labels"},
		{"api.*", "at least two other labels"},
		{"a*.example.com", "* must be a whole label"},
		{"api.example.com:", "empty port"},
		{"api.example.com:0", "port"},
		{"api.example.com:70000", "port"},
		{"api.example.com:http", "port"},
		{"api.example.com:+443", "port"},
		{"::1", "brackets"},
		{"[::1", "unclosed"},
		{"[example.com]", "IPv6"},
		{"[127.0.0.1]", "IPv6"},
		{"[::1]x", "after the IPv6"},
		{"api..example.com", "empty label"},
		{"api.example.com.", "empty label"},
		{"https://api.example.com", "port"},
		{"api.example.com/v1", "character"},
		{"1.2.3", "numeric"},
		{strings.Repeat("a", 64) + ".example.com", "63"},
		{strings.Repeat("a.", 127) + "com", "253"},
	} {
		_, err := ParseHostPattern(tt.pattern)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: %v, want an error with %q", tt.pattern, err, tt.want)
		}
	}
}

func TestValidHost(t *testing.T) {
	for host, ok := range map[string]bool{
		"api.example.com": true, "api.example.com:8443": true, "127.0.0.1:1": true, "[::1]:80": true,
		"": false, "a b": false, "api.example.com:0": false, "::1": false, "x.com.": false, "x:y": false,
	} {
		if err := ValidHost(host); (err == nil) != ok {
			t.Errorf("ValidHost(%q): %v", host, err)
		}
	}
}

// FuzzHostPattern: no pattern or host makes matching panic, and a pattern
// without * and port always matches itself.
func FuzzHostPattern(f *testing.F) {
	for _, s := range []string{"*.my.salesforce.com", "api.example.com:8443", "[::1]:*", "127.0.0.1", "a.*.*.b.c"} {
		f.Add(s, "acme.my.salesforce.com:443")
	}
	f.Fuzz(func(t *testing.T, pattern, host string) {
		p, err := ParseHostPattern(pattern)
		if err != nil {
			return
		}
		p.Match("https", host)
		p.Match("http", host)
		if !strings.Contains(pattern, "*") && !p.Match("https", pattern) {
			t.Errorf("%q does not match itself", pattern)
		}
	})
}
