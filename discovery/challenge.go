package discovery

import (
	"net/http"
	"strings"
)

// Challenge is what a resource's Bearer challenge (RFC 6750 section 3,
// RFC 9728 section 5.1) says.
type Challenge struct {
	// ResourceMetadata is the URL of the resource's metadata.
	ResourceMetadata string
	// Error is the error code, such as invalid_token or insufficient_scope.
	Error string
	// Scope is the scope the resource asks for (space-separated).
	Scope string
	// Claims is a claims challenge (base64 of a JSON claims request), as
	// Microsoft Entra's resources send with insufficient_claims.
	Claims string
}

// ParseChallenge reads the first Bearer challenge of a response's
// WWW-Authenticate headers. A response without one yields the zero value.
func ParseChallenge(h http.Header) Challenge {
	for _, v := range h.Values("WWW-Authenticate") {
		for _, c := range parseChallenges(v) {
			if strings.EqualFold(c.scheme, "bearer") {
				return Challenge{ResourceMetadata: c.params["resource_metadata"], Error: c.params["error"],
					Scope: c.params["scope"], Claims: c.params["claims"]}
			}
		}
	}
	return Challenge{}
}

type challenge struct {
	scheme string
	params map[string]string
}

// parseChallenges splits a WWW-Authenticate value into its challenges
// (RFC 9110 section 11.6.1): a scheme, then comma-separated auth-params
// name=token or name="quoted string" (empty ones too, as Microsoft sends
// realm=""). A token68 is skipped. Parameter names are lower-cased; the
// first of a repeated name wins.
func parseChallenges(v string) []challenge {
	var out []challenge
	p := &lexer{s: v}
	for {
		p.skip(" \t,")
		scheme := p.token()
		if scheme == "" {
			return out
		}
		c := challenge{scheme: scheme, params: map[string]string{}}
		for {
			p.skip(" \t")
			start := p.i
			name := p.token()
			p.skip(" \t")
			if name == "" || !p.consume('=') {
				// A new challenge's scheme, a token68, or the end.
				if name != "" && p.i < len(p.s) && p.s[p.i] != ',' {
					p.i = start
					break
				}
				if name == "" && !p.consume(',') {
					break
				}
				continue
			}
			p.skip(" \t")
			var val string
			if p.consume('"') {
				val = p.quoted()
			} else {
				val = p.token()
				for p.i < len(p.s) && p.s[p.i] == '=' { // token68 padding
					p.i++
				}
			}
			name = strings.ToLower(name)
			if _, seen := c.params[name]; !seen {
				c.params[name] = val
			}
			p.skip(" \t")
			if !p.consume(',') {
				break
			}
		}
		out = append(out, c)
	}
}

type lexer struct {
	s string
	i int
}

func (l *lexer) skip(set string) {
	for l.i < len(l.s) && strings.IndexByte(set, l.s[l.i]) >= 0 {
		l.i++
	}
}

func (l *lexer) consume(b byte) bool {
	if l.i < len(l.s) && l.s[l.i] == b {
		l.i++
		return true
	}
	return false
}

// token reads an RFC 9110 token (and the characters of a token68).
func (l *lexer) token() string {
	start := l.i
	for l.i < len(l.s) {
		c := l.s[l.i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),;<=>?@[\]{}`, c) >= 0 {
			break
		}
		l.i++
	}
	return l.s[start:l.i]
}

// quoted reads the rest of a quoted string, unescaping quoted pairs.
func (l *lexer) quoted() string {
	var b strings.Builder
	for l.i < len(l.s) {
		c := l.s[l.i]
		l.i++
		switch {
		case c == '"':
			return b.String()
		case c == '\\' && l.i < len(l.s):
			b.WriteByte(l.s[l.i])
			l.i++
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}
