package connector

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// HostPattern is one allowed_hosts entry: the hosts an upstream that
// depends on a connection's metadata may resolve to.
//
// A pattern is a host name or an IP literal (IPv6 in brackets), with an
// optional ":port" or ":*". Without a port it matches the scheme's default
// port only (443 for https, 80 for http); ":*" matches any port. In a host
// name, a label that is "*" matches one or more labels, so
// "*.my.salesforce.com" matches "acme.my.salesforce.com" and
// "acme.sandbox.my.salesforce.com" but not "my.salesforce.com". A pattern
// with a "*" needs at least two other labels, so that no entry allows a
// whole top-level domain. Names are compared case-insensitively.
type HostPattern struct {
	labels []string   // lower-case labels of a host name; nil for an IP
	ip     netip.Addr // the IP literal, if the pattern is one
	port   int        // 0: the scheme's default; -1: any
	raw    string
}

// maxLabels bounds a pattern's and a host's labels (DNS allows 127).
const maxLabels = 127

// ParseHostPattern parses an allowed_hosts entry.
func ParseHostPattern(s string) (HostPattern, error) {
	p := HostPattern{raw: s}
	host, port, err := splitHostPort(s)
	if err != nil {
		return HostPattern{}, fmt.Errorf("allowed host %q: %w", s, err)
	}
	switch port {
	case "":
	case "*":
		p.port = -1
	default:
		if p.port, err = parsePort(port); err != nil {
			return HostPattern{}, fmt.Errorf("allowed host %q: %w", s, err)
		}
	}
	if ip, ok := parseIP(host); ok {
		p.ip = ip
		return p, nil
	}
	labels, err := hostLabels(host, true)
	if err != nil {
		return HostPattern{}, fmt.Errorf("allowed host %q: %w", s, err)
	}
	literal := 0
	for _, l := range labels {
		if l != "*" {
			literal++
		}
	}
	if literal < len(labels) && literal < 2 {
		return HostPattern{}, fmt.Errorf("allowed host %q: a pattern with * needs at least two other labels, such as *.example.com", s)
	}
	p.labels = labels
	return p, nil
}

// String returns the pattern as written.
func (p HostPattern) String() string { return p.raw }

// Match reports whether hostport (a URL's host, with its port if it has
// one) of a URL with scheme matches the pattern.
func (p HostPattern) Match(scheme, hostport string) bool {
	host, port, err := splitHostPort(hostport)
	if err != nil || port == "*" {
		return false
	}
	n := defaultPort(scheme)
	if port != "" {
		if n, err = parsePort(port); err != nil {
			return false
		}
	}
	switch {
	case p.port == -1:
	case p.port == 0 && n != defaultPort(scheme):
		return false
	case p.port > 0 && n != p.port:
		return false
	}
	if ip, ok := parseIP(host); ok {
		return p.ip.IsValid() && p.ip == ip
	}
	if p.ip.IsValid() {
		return false
	}
	labels, err := hostLabels(host, false)
	if err != nil {
		return false
	}
	return matchLabels(p.labels, labels)
}

// MatchAny reports whether any of patterns matches.
func MatchAny(patterns []HostPattern, scheme, hostport string) bool {
	for _, p := range patterns {
		if p.Match(scheme, hostport) {
			return true
		}
	}
	return false
}

// ValidHost checks that hostport is a host name or IP literal with an
// optional port, as a URL's host must be to be dialed.
func ValidHost(hostport string) error {
	host, port, err := splitHostPort(hostport)
	if err != nil {
		return err
	}
	if port != "" {
		if _, err := parsePort(port); err != nil {
			return err
		}
	}
	if _, ok := parseIP(host); ok {
		return nil
	}
	_, err = hostLabels(host, false)
	return err
}

// matchLabels matches host labels against pattern labels, where "*"
// stands for one or more labels: a table over the two positions, so no
// pattern costs more than len(pattern)·len(host) steps.
func matchLabels(pattern, host []string) bool {
	// ok[j] is whether pattern[i:] matches host[j:], for the current i.
	ok := make([]bool, len(host)+1)
	ok[len(host)] = true
	for i := len(pattern) - 1; i >= 0; i-- {
		next := make([]bool, len(host)+1)
		for j := len(host) - 1; j >= 0; j-- {
			if pattern[i] == "*" {
				// One label, then either the pattern's next label or
				// more labels for the same star.
				next[j] = ok[j+1] || next[j+1]
			} else {
				next[j] = pattern[i] == host[j] && ok[j+1]
			}
		}
		ok = next
	}
	return ok[0]
}

func defaultPort(scheme string) int {
	if strings.EqualFold(scheme, "http") {
		return 80
	}
	return 443
}

// splitHostPort splits "host", "host:port", "[ipv6]" or "[ipv6]:port".
func splitHostPort(s string) (host, port string, err error) {
	if s == "" {
		return "", "", errors.New("empty host")
	}
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return "", "", errors.New("unclosed [ in an IPv6 literal")
		}
		host, rest := s[1:end], s[end+1:]
		if _, ok := parseIP(host); !ok || !strings.Contains(host, ":") {
			return "", "", errors.New("brackets must hold an IPv6 address")
		}
		switch {
		case rest == "":
			return "[" + host + "]", "", nil
		case strings.HasPrefix(rest, ":") && len(rest) > 1:
			return "[" + host + "]", rest[1:], nil
		}
		return "", "", errors.New("unexpected text after the IPv6 literal")
	}
	if strings.Count(s, ":") > 1 {
		return "", "", errors.New("an IPv6 literal must be in brackets")
	}
	host, port, found := strings.Cut(s, ":")
	if found && port == "" {
		return "", "", errors.New("empty port")
	}
	return host, port, nil
}

func parsePort(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 65535 || s[0] == '0' || s[0] == '+' {
		return 0, fmt.Errorf("port %q is not a number from 1 to 65535", s)
	}
	return n, nil
}

// parseIP reads an IP literal: dotted IPv4 or bracketed IPv6, no zone.
func parseIP(host string) (netip.Addr, bool) {
	h := strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if net.ParseIP(h) == nil {
		return netip.Addr{}, false
	}
	ip, err := netip.ParseAddr(h)
	if err != nil || ip.Zone() != "" {
		return netip.Addr{}, false
	}
	return ip.Unmap(), true
}

// hostLabels splits a host name into lower-case labels of letters,
// digits, hyphens and underscores (and, in patterns, "*" labels). A
// trailing dot, an empty label or a name that reads as a number are
// refused.
func hostLabels(host string, pattern bool) ([]string, error) {
	if len(host) > 253 {
		return nil, errors.New("host name longer than 253 characters")
	}
	labels := strings.Split(strings.ToLower(host), ".")
	if len(labels) > maxLabels {
		return nil, errors.New("host name has too many labels")
	}
	for _, l := range labels {
		if l == "" {
			return nil, errors.New("host name has an empty label")
		}
		if pattern && l == "*" {
			continue
		}
		if len(l) > 63 {
			return nil, errors.New("host name label longer than 63 characters")
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				if c == '*' {
					return nil, errors.New("* must be a whole label")
				}
				return nil, fmt.Errorf("host name has the character %q", c)
			}
		}
	}
	if last := labels[len(labels)-1]; last != "*" && strings.Trim(last, "0123456789") == "" {
		// 1.2.3 or 010.1.1.1: an IP in a form that is not dotted
		// quad, read differently by different resolvers.
		return nil, errors.New("host name ends with a numeric label")
	}
	return labels, nil
}
