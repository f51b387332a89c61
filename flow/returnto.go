package flow

import (
	"net/url"
	"strings"
)

// SafeReturnTo returns s if it is a same-site relative path that a browser
// cannot read as pointing elsewhere, and fallback otherwise. It rejects
// scheme-relative ("//host") and backslash ("/\host") forms, control
// characters, and their percent-encoded variants.
func SafeReturnTo(s, fallback string) string {
	if validReturnTo(s) {
		return s
	}
	return fallback
}

func validReturnTo(s string) bool {
	if s == "" || len(s) > 2048 || s[0] != '/' {
		return false
	}
	// Decode repeatedly so that encoded slashes, backslashes and control
	// characters are judged as the browser may eventually see them.
	cur := s
	for range 3 {
		if !plainSafe(cur) {
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
	if !plainSafe(cur) {
		return false
	}
	u, err := url.Parse(s)
	return err == nil && u.Scheme == "" && u.Host == "" && u.User == nil && u.Opaque == ""
}

func plainSafe(s string) bool {
	if !strings.HasPrefix(s, "/") || strings.HasPrefix(s, "//") || strings.ContainsRune(s, '\\') {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f || r == '\u2028' || r == '\u2029' || r == '\ufeff' {
			return false
		}
	}
	return true
}
