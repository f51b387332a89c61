package flow

import (
	"net/url"
	"strings"
	"unicode"
	"unicode/utf8"
)

// ReturnTo decides where a browser may be sent after authorizing: a
// same-site relative path, or an absolute URL on one of AllowedOrigins.
// Anything else falls back, so that the callback is never an open redirect.
type ReturnTo struct {
	// AllowedOrigins are origins ("https://app.example.com") that absolute
	// return_to URLs may point at.
	AllowedOrigins []string
}

// Safe returns s if it is an acceptable destination and fallback otherwise.
func (p ReturnTo) Safe(s, fallback string) string {
	if p.valid(s) {
		return s
	}
	return fallback
}

// SafeReturnTo is Safe with no allowed origins: only same-site paths pass.
func SafeReturnTo(s, fallback string) string { return ReturnTo{}.Safe(s, fallback) }

func (p ReturnTo) valid(s string) bool {
	if s == "" || len(s) > 2048 || !plainSafe(s) {
		return false
	}
	if s[0] == '/' {
		return validPath(s)
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.User != nil || u.Opaque != "" || u.Host == "" {
		return false
	}
	origin := u.Scheme + "://" + u.Host
	for _, o := range p.AllowedOrigins {
		if origin == strings.TrimRight(o, "/") {
			rest := strings.TrimPrefix(s, origin)
			return rest == "" || (rest[0] == '/' && validPath(rest)) || rest[0] == '?' || rest[0] == '#'
		}
	}
	return false
}

// validPath accepts a path (with query and fragment) that every browser
// reads as a path on this site, whatever decoding it goes through.
func validPath(s string) bool {
	cur := s
	for range 4 {
		folded := strings.Map(func(r rune) rune {
			if unicode.IsSpace(r) {
				return -1
			}
			return r
		}, cur)
		if !strings.HasPrefix(cur, "/") || strings.HasPrefix(folded, "//") || !decodedSafe(cur) || hasDotSegment(cur) {
			return false
		}
		next, err := url.PathUnescape(cur)
		if err != nil {
			return false
		}
		if next == cur {
			break
		}
		cur = next
	}
	u, err := url.Parse(s)
	return err == nil && u.Scheme == "" && u.Host == "" && u.User == nil && u.Opaque == ""
}

// plainSafe rejects backslashes (browsers read them as slashes), control
// characters and whitespace (stripped or folded by browsers), and anything
// outside printable ASCII (Unicode slashes and dots, bidi controls):
// legitimate non-ASCII must be percent-encoded.
func plainSafe(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || c == '\\' {
			return false
		}
	}
	return true
}

// decodedSafe is plainSafe for a percent-decoded path: encoded non-ASCII
// text is fine, but not control and format characters or the Unicode
// look-alikes of slash and backslash.
func decodedSafe(s string) bool {
	for _, r := range s {
		switch {
		case r < ' ' || r == 0x7f || r == '\\' || r == utf8.RuneError:
			return false
		case unicode.In(r, unicode.Cc, unicode.Cf, unicode.Zl, unicode.Zp, unicode.Zs) && r != ' ':
			return false
		case strings.ContainsRune("\u2215\u2044\u29f8\u29f9\uff0f\uff3c\u2216\ufe68\u3002\uff0e", r):
			return false
		}
	}
	return true
}

// hasDotSegment reports "." or ".." path segments, which can fold a path
// into "//host" after normalisation.
func hasDotSegment(s string) bool {
	path, _, _ := strings.Cut(s, "?")
	path, _, _ = strings.Cut(path, "#")
	for _, seg := range strings.Split(path, "/") {
		if seg == "." || seg == ".." {
			return true
		}
	}
	return false
}
