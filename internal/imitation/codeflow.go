package imitation

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
)

// The client credentials every provider imitation accepts.
const (
	ClientID     = "imitation-client"
	ClientSecret = "imitation-secret"
)

// Provider is the imitation of one provider's authorization code flow on
// an httptest server: an authorization endpoint that approves at once
// (redirecting back with a code and the state), a token endpoint that
// redeems codes (checking the client, the redirect URI and PKCE) and
// refresh tokens with the provider's quirks, and the provider's
// revocation endpoint. Each provider's file says which document it follows.
type Provider struct {
	*httptest.Server
	// Name is the provider's preset name.
	Name string

	spec spec
	mu   sync.Mutex
	n    int
	// codes are the unredeemed authorization codes.
	codes map[string]codeGrant
	// refresh and access are the live tokens, by value.
	refresh map[string]*Grant
	access  map[string]*Grant
	reqs    []Request
	authQ   []url.Values
	revokes int
}

// Grant is what one token stands for.
type Grant struct {
	// ID names the authorization that made the grant.
	ID int
	// Kind distinguishes grants of one authorization (Slack: bot, user).
	Kind string
	// Scope is what was asked at authorization.
	Scope string
	// Auth is the authorization request's query.
	Auth url.Values
}

type codeGrant struct {
	redirect, challenge string
	auth                url.Values
}

// Request is a request to the token or revocation endpoint, as the
// imitation received it.
type Request struct {
	Method, Path string
	Header       http.Header
	// Params are the form or JSON body's parameters.
	Params map[string]string
	// JSON says the body was JSON.
	JSON bool
	// BasicUser and BasicPass are the HTTP Basic credentials, if any.
	BasicUser, BasicPass string
}

// spec is what differs from one provider to another.
type spec struct {
	authPath, tokenPath, revokePath string
	// clientAuth is how the client must authenticate at the token
	// endpoint: basic, post or either.
	clientAuth string
	// json: token requests must be JSON.
	json bool
	// header is a header every token request must carry.
	header string
	// rotate: a refresh invalidates the refresh token used.
	rotate bool
	// issue answers a successful exchange (refresh false) or refresh of
	// g, making its tokens with p.issue.
	issue func(p *Provider, g *Grant, refresh bool) (status int, body any)
	// fail answers an error, given RFC 6749's code for it.
	fail func(code string, refresh bool) (status int, body any)
	// revoke serves the revocation endpoint.
	revoke func(p *Provider, w http.ResponseWriter, r *http.Request, req Request)
}

func newProvider(t testing.TB, name string, s spec) *Provider {
	p := &Provider{Name: name, spec: s, codes: map[string]codeGrant{}, refresh: map[string]*Grant{}, access: map[string]*Grant{}}
	mux := http.NewServeMux()
	mux.HandleFunc(s.authPath, p.authorize)
	mux.HandleFunc(s.tokenPath, p.token)
	if s.revokePath != "" {
		mux.HandleFunc(s.revokePath, func(w http.ResponseWriter, r *http.Request) {
			req := p.record(r)
			p.mu.Lock()
			p.revokes++
			p.mu.Unlock()
			s.revoke(p, w, r, req)
		})
	}
	p.Server = httptest.NewServer(mux)
	t.Cleanup(p.Close)
	return p
}

// At returns the imitation's URL for path.
func (p *Provider) At(path string) string { return p.Server.URL + path }

// AuthURL returns the imitation's authorization endpoint.
func (p *Provider) AuthURL() string { return p.At(p.spec.authPath) }

// TokenURL returns the imitation's token endpoint.
func (p *Provider) TokenURL() string { return p.At(p.spec.tokenPath) }

// RevocationURL returns the imitation's revocation endpoint, empty when
// the provider has none. (GitHub's names the client: see At.)
func (p *Provider) RevocationURL() string {
	if p.spec.revokePath == "" {
		return ""
	}
	return p.At(strings.TrimSuffix(p.spec.revokePath, "/"))
}

// Requests returns the token and revocation requests received so far.
func (p *Provider) Requests() []Request {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Request(nil), p.reqs...)
}

// Authorizations returns the authorization requests' queries.
func (p *Provider) Authorizations() []url.Values {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]url.Values(nil), p.authQ...)
}

// Revocations returns how many revocation requests arrived.
func (p *Provider) Revocations() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.revokes
}

// Valid reports whether access is a live access token, and of which grant.
func (p *Provider) Valid(access string) (*Grant, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	g, ok := p.access[access]
	return g, ok
}

// Authorize follows authURL (the connector's authorization URL) as a
// browser whose user consents, and returns the code and state of the
// redirect back.
func (p *Provider) Authorize(authURL string) (code, state string, err error) {
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get(authURL)
	if err != nil {
		return "", "", err
	}
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || resp.StatusCode != http.StatusFound {
		return "", "", fmt.Errorf("authorize: %d, location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if e := loc.Query().Get("error"); e != "" {
		return "", "", fmt.Errorf("authorize: %s", e)
	}
	return loc.Query().Get("code"), loc.Query().Get("state"), nil
}

func (p *Provider) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	p.mu.Lock()
	p.authQ = append(p.authQ, q)
	p.mu.Unlock()
	redirect, err := url.Parse(q.Get("redirect_uri"))
	if err != nil || redirect.Scheme == "" || q.Get("client_id") != ClientID {
		http.Error(w, "unknown client or redirect URI", http.StatusBadRequest)
		return
	}
	if m := q.Get("code_challenge_method"); q.Get("code_challenge") != "" && m != "S256" {
		http.Error(w, "unsupported code_challenge_method", http.StatusBadRequest)
		return
	}
	code := p.newToken("code")
	p.mu.Lock()
	p.codes[code] = codeGrant{redirect: q.Get("redirect_uri"), challenge: q.Get("code_challenge"), auth: q}
	p.mu.Unlock()
	back := redirect.Query()
	back.Set("code", code)
	back.Set("state", q.Get("state"))
	redirect.RawQuery = back.Encode()
	http.Redirect(w, r, redirect.String(), http.StatusFound)
}

func (p *Provider) newToken(kind string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.n++
	return fmt.Sprintf("%s-%s-%d", p.Name, kind, p.n)
}

// record reads r's parameters (form or JSON body) and keeps the request.
func (p *Provider) record(r *http.Request) Request {
	req := Request{Method: r.Method, Path: r.URL.Path, Header: r.Header.Clone(), Params: map[string]string{}}
	req.BasicUser, req.BasicPass, _ = r.BasicAuth()
	req.BasicUser, _ = url.QueryUnescape(req.BasicUser)
	req.BasicPass, _ = url.QueryUnescape(req.BasicPass)
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt == "application/json" {
		req.JSON = true
		var obj map[string]any
		json.Unmarshal(body, &obj)
		for k, v := range obj {
			if s, ok := v.(string); ok {
				req.Params[k] = s
			}
		}
	} else {
		vals, _ := url.ParseQuery(string(body))
		for k := range vals {
			req.Params[k] = vals.Get(k)
		}
	}
	for k := range r.URL.Query() {
		if _, ok := req.Params[k]; !ok {
			req.Params[k] = r.URL.Query().Get(k)
		}
	}
	p.mu.Lock()
	p.reqs = append(p.reqs, req)
	p.mu.Unlock()
	return req
}

func (p *Provider) clientOK(req Request) bool {
	basic := req.BasicUser == ClientID && req.BasicPass == ClientSecret
	post := req.Params["client_id"] == ClientID && req.Params["client_secret"] == ClientSecret
	switch p.spec.clientAuth {
	case "basic":
		return basic && req.Params["client_secret"] == ""
	case "post":
		return post
	default:
		return basic != post // one way, not both (RFC 6749 2.3)
	}
}

func (p *Provider) token(w http.ResponseWriter, r *http.Request) {
	req := p.record(r)
	refresh := req.Params["grant_type"] == "refresh_token"
	switch {
	case r.Method != http.MethodPost:
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	case p.spec.json && !req.JSON, p.spec.header != "" && r.Header.Get(p.spec.header) == "":
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": "invalid_request"})
		return
	case !p.clientOK(req):
		respond(w)(p.spec.fail("invalid_client", refresh))
		return
	}
	var g *Grant
	switch req.Params["grant_type"] {
	case "authorization_code":
		p.mu.Lock()
		cg, ok := p.codes[req.Params["code"]]
		delete(p.codes, req.Params["code"])
		p.mu.Unlock()
		if !ok || cg.redirect != req.Params["redirect_uri"] || !pkceOK(cg.challenge, req.Params["code_verifier"]) {
			respond(w)(p.spec.fail("invalid_grant", false))
			return
		}
		p.mu.Lock()
		p.n++
		g = &Grant{ID: p.n, Auth: cg.auth, Scope: cg.auth.Get("scope")}
		p.mu.Unlock()
	case "refresh_token":
		p.mu.Lock()
		g = p.refresh[req.Params["refresh_token"]]
		if g != nil && p.spec.rotate {
			delete(p.refresh, req.Params["refresh_token"])
		}
		p.mu.Unlock()
		if g == nil {
			respond(w)(p.spec.fail("invalid_grant", true))
			return
		}
	default:
		respond(w)(p.spec.fail("unsupported_grant_type", refresh))
		return
	}
	respond(w)(p.spec.issue(p, g, refresh))
}

// issue makes a new access token for g, and a refresh token when withRT.
func (p *Provider) issue(g *Grant, withRT bool) (at, rt string) {
	at = p.newToken("at")
	p.mu.Lock()
	p.access[at] = g
	p.mu.Unlock()
	if withRT {
		rt = p.newToken("rt")
		p.mu.Lock()
		p.refresh[rt] = g
		p.mu.Unlock()
	}
	return at, rt
}

// revokeGrant ends every token of g's authorization, as revoking a
// refresh token (or a grant) does.
func (p *Provider) revokeGrant(g *Grant) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, v := range p.refresh {
		if v.ID == g.ID {
			delete(p.refresh, k)
		}
	}
	for k, v := range p.access {
		if v.ID == g.ID {
			delete(p.access, k)
		}
	}
}

// revokeToken revokes tok, a refresh or access token, and reports
// whether it was one.
func (p *Provider) revokeToken(tok string) bool {
	p.mu.Lock()
	g := p.refresh[tok]
	if g == nil {
		g = p.access[tok]
	}
	p.mu.Unlock()
	if g == nil {
		return false
	}
	p.revokeGrant(g)
	return true
}

// revokeRFC7009 serves an RFC 7009 revocation endpoint: the client
// authenticates as at the token endpoint; 200 whether or not the token
// was valid.
func revokeRFC7009(p *Provider, w http.ResponseWriter, r *http.Request, req Request) {
	if r.Method != http.MethodPost || !p.clientOK(req) {
		writeJSON(w, http.StatusUnauthorized, map[string]any{"error": "invalid_client"})
		return
	}
	p.revokeToken(req.Params["token"])
	w.WriteHeader(http.StatusOK)
}

func pkceOK(challenge, verifier string) bool {
	if challenge == "" {
		return true
	}
	sum := sha256.Sum256([]byte(verifier))
	return base64.RawURLEncoding.EncodeToString(sum[:]) == challenge
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(body)
}

// respond returns a function writing a JSON answer to w, so that a
// spec's (status, body) results can be passed straight to it.
func respond(w http.ResponseWriter) func(int, any) {
	return func(status int, body any) { writeJSON(w, status, body) }
}

// rfcError is RFC 6749 5.2's error response.
func rfcError(code string, _ bool) (int, any) {
	status := http.StatusBadRequest
	if code == "invalid_client" {
		status = http.StatusUnauthorized
	}
	return status, map[string]any{"error": code, "error_description": "imitation: " + code}
}

// bearer returns the request's bearer token.
func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "Bearer ") {
		return h[7:]
	}
	return ""
}

// Expire ends an access token before its time, as its expiry would: the
// API refuses it from now on.
func (p *Provider) Expire(access string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.access, access)
}

// APICall is a request the provider's API imitation received.
type APICall struct {
	Path  string
	Token string
	// OK says the token was a live access token of this provider.
	OK bool
}

// API imitates the provider's resource server: it answers 200 with the
// grant's ID to a request carrying a live access token of this provider,
// and 401 to any other, as a real API does to an expired or revoked
// token. calls receives every request.
func (p *Provider) API(calls chan<- APICall) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok := bearer(r)
		g, ok := p.Valid(tok)
		if calls != nil {
			calls <- APICall{Path: r.URL.Path, Token: tok, OK: ok}
		}
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
			writeJSON(w, http.StatusUnauthorized, map[string]any{"error": "invalid_token"})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"grant": g.ID, "path": r.URL.Path})
	})
}
