package imitation

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
)

// Entra is an imitation of the Microsoft identity platform's v2.0
// authorization and token endpoints (Microsoft Entra ID), for a confidential
// web client, following:
//
//   - the authorization code flow, with PKCE and the refresh token grant:
//     https://learn.microsoft.com/entra/identity-platform/v2-oauth2-auth-code-flow
//   - refresh tokens valid for every resource the client may call (a token
//     for https://contoso.sharepoint.com/.default from a Graph grant's
//     refresh token), and their replacement on every use:
//     https://learn.microsoft.com/entra/identity-platform/refresh-tokens
//   - the claims request parameter and client capabilities (xms_cc, "cp1")
//     of clients that handle claims challenges:
//     https://learn.microsoft.com/entra/identity-platform/claims-challenge
//
// It serves /{tenant}/oauth2/v2.0/authorize, which consents at once and
// redirects back with a code (no sign-in page), and /{tenant}/oauth2/v2.0/token.
// Where it knowingly differs: a refresh token is honoured only until it is
// redeemed (Entra keeps an old one valid until it expires), so that a test
// notices a rotated refresh token that was not kept; access tokens are
// opaque strings that the imitated resources (graph.go) look up here rather
// than JWTs they validate.
type Entra struct {
	*httptest.Server
	// ClientID and ClientSecret are the registered client's
	// (client_secret_post or client_secret_basic).
	ClientID, ClientSecret string
	// AccessTTL is the access tokens' lifetime (expires_in). Default: 1h.
	AccessTTL time.Duration

	mu       sync.Mutex
	n        int
	codes    map[string]entraGrant
	refresh  map[string]entraGrant // the refresh tokens honoured
	access   map[string]Access
	denied   map[string]bool // resources without consent
	requests []TokenRequest
	authz    []url.Values
}

// Access is what the imitation knows of an access token it issued.
type Access struct {
	// Audience is the resource the token is for, such as
	// https://graph.microsoft.com.
	Audience string
	// Scopes are the scopes granted, as requested.
	Scopes []string
	// CP1 is set when the request declared the cp1 client capability.
	CP1 bool
	// Seq orders tokens by issue: the n-th token issued has Seq n.
	Seq int
}

// TokenRequest is one request to the token endpoint, as received.
type TokenRequest struct {
	GrantType    string
	Scope        string
	Claims       string
	RefreshToken string
	// Status is the HTTP status answered.
	Status int
}

type entraGrant struct {
	scopes    []string // as authorized, the grant's own
	redirect  string
	challenge string // PKCE S256
}

// NewEntra starts the imitation for client id and secret; it stops when
// Close is called.
func NewEntra(clientID, clientSecret string) *Entra {
	e := &Entra{ClientID: clientID, ClientSecret: clientSecret,
		codes: map[string]entraGrant{}, refresh: map[string]entraGrant{},
		access: map[string]Access{}, denied: map[string]bool{}}
	e.Server = httptest.NewServer(http.HandlerFunc(e.serve))
	return e
}

// AuthorizeURL is the tenant's authorization endpoint.
func (e *Entra) AuthorizeURL(tenant string) string {
	return e.URL + "/" + tenant + "/oauth2/v2.0/authorize"
}

// TokenURL is the tenant's token endpoint.
func (e *Entra) TokenURL(tenant string) string {
	return e.URL + "/" + tenant + "/oauth2/v2.0/token"
}

// Lookup returns what the imitation issued access token at as, if it did.
func (e *Entra) Lookup(at string) (Access, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	a, ok := e.access[at]
	return a, ok
}

// Issued is how many tokens the imitation has issued.
func (e *Entra) Issued() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.n
}

// Requests returns the token requests received so far.
func (e *Entra) Requests() []TokenRequest {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.requests)
}

// Authorizations returns the query of each authorization request received.
func (e *Entra) Authorizations() []url.Values {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.authz)
}

// Deny makes refresh requests for resource's scopes fail with invalid_grant
// (AADSTS65001: the user or an administrator has not consented), as when
// the app registration lacks that API's permissions.
func (e *Entra) Deny(resource string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.denied[resource] = true
}

func (e *Entra) serve(w http.ResponseWriter, r *http.Request) {
	switch {
	case strings.HasSuffix(r.URL.Path, "/oauth2/v2.0/authorize") && r.Method == http.MethodGet:
		e.authorize(w, r)
	case strings.HasSuffix(r.URL.Path, "/oauth2/v2.0/token") && r.Method == http.MethodPost:
		e.token(w, r)
	default:
		http.NotFound(w, r)
	}
}

func (e *Entra) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	e.mu.Lock()
	defer e.mu.Unlock()
	e.authz = append(e.authz, q)
	if q.Get("client_id") != e.ClientID || q.Get("response_type") != "code" || q.Get("redirect_uri") == "" {
		http.Error(w, "AADSTS700016: application not found, or a malformed request", http.StatusBadRequest)
		return
	}
	if c := q.Get("claims"); c != "" && !json.Valid([]byte(c)) {
		http.Error(w, "AADSTS90014: the claims parameter is not JSON", http.StatusBadRequest)
		return
	}
	if q.Get("code_challenge") != "" && q.Get("code_challenge_method") != "S256" {
		http.Error(w, "AADSTS501491: code_challenge_method must be S256", http.StatusBadRequest)
		return
	}
	e.n++
	code := fmt.Sprintf("entra-code-%d", e.n)
	e.codes[code] = entraGrant{scopes: strings.Fields(q.Get("scope")), redirect: q.Get("redirect_uri"), challenge: q.Get("code_challenge")}
	back, err := url.Parse(q.Get("redirect_uri"))
	if err != nil {
		http.Error(w, "bad redirect_uri", http.StatusBadRequest)
		return
	}
	bq := back.Query()
	bq.Set("code", code)
	bq.Set("state", q.Get("state"))
	back.RawQuery = bq.Encode()
	http.Redirect(w, r, back.String(), http.StatusFound)
}

// tokenError answers as Entra does: a JSON body with error and
// error_description.
func tokenError(w http.ResponseWriter, status int, code, desc string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": desc})
}

func (e *Entra) token(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		tokenError(w, http.StatusBadRequest, "invalid_request", "AADSTS900144: malformed body")
		return
	}
	f := r.PostForm
	req := TokenRequest{GrantType: f.Get("grant_type"), Scope: f.Get("scope"), Claims: f.Get("claims"), RefreshToken: f.Get("refresh_token")}
	e.mu.Lock()
	defer e.mu.Unlock()
	rec := &statusRecorder{ResponseWriter: w}
	defer func() { req.Status = rec.status; e.requests = append(e.requests, req) }()
	w = rec

	id, secret, basic := r.BasicAuth()
	if !basic {
		id, secret = f.Get("client_id"), f.Get("client_secret")
	}
	if id != e.ClientID || secret != e.ClientSecret {
		tokenError(w, http.StatusUnauthorized, "invalid_client", "AADSTS7000215: invalid client secret provided")
		return
	}
	cp1 := false
	if c := f.Get("claims"); c != "" {
		var claims struct {
			AccessToken struct {
				XmsCC struct {
					Values []string `json:"values"`
				} `json:"xms_cc"`
			} `json:"access_token"`
		}
		if json.Unmarshal([]byte(c), &claims) != nil {
			tokenError(w, http.StatusBadRequest, "invalid_request", "AADSTS90014: the claims parameter is not JSON")
			return
		}
		cp1 = slices.Contains(claims.AccessToken.XmsCC.Values, "cp1")
	}
	var g entraGrant
	switch req.GrantType {
	case "authorization_code":
		var ok bool
		g, ok = e.codes[f.Get("code")]
		delete(e.codes, f.Get("code"))
		if !ok || g.redirect != f.Get("redirect_uri") {
			tokenError(w, http.StatusBadRequest, "invalid_grant", "AADSTS70008: the authorization code is invalid or has expired")
			return
		}
		if g.challenge != "" {
			sum := sha256.Sum256([]byte(f.Get("code_verifier")))
			if base64.RawURLEncoding.EncodeToString(sum[:]) != g.challenge {
				tokenError(w, http.StatusBadRequest, "invalid_grant", "AADSTS501481: the code_verifier does not match the code_challenge")
				return
			}
		}
	case "refresh_token":
		var ok bool
		g, ok = e.refresh[req.RefreshToken]
		if !ok {
			tokenError(w, http.StatusBadRequest, "invalid_grant", "AADSTS70000: the refresh token is invalid, expired or already redeemed")
			return
		}
	default:
		tokenError(w, http.StatusBadRequest, "unsupported_grant_type", "AADSTS70003: unsupported grant type")
		return
	}
	scopes := g.scopes
	if req.Scope != "" {
		scopes = strings.Fields(req.Scope)
	}
	aud, err := audience(scopes)
	if err != nil {
		tokenError(w, http.StatusBadRequest, "invalid_scope", err.Error())
		return
	}
	if e.denied[aud] {
		tokenError(w, http.StatusBadRequest, "invalid_grant", "AADSTS65001: the user or administrator has not consented to use the application")
		return
	}
	delete(e.refresh, req.RefreshToken)
	e.n++
	at, rt := fmt.Sprintf("entra-at-%d", e.n), fmt.Sprintf("entra-rt-%d", e.n)
	e.access[at] = Access{Audience: aud, Scopes: scopes, CP1: cp1, Seq: e.n}
	resp := map[string]any{
		"token_type": "Bearer", "scope": strings.Join(scopes, " "),
		"expires_in": int(e.ttl().Seconds()), "ext_expires_in": int(e.ttl().Seconds()),
		"access_token": at,
	}
	if slices.Contains(g.scopes, "offline_access") {
		// The refresh token keeps the grant's own scopes: it may be
		// redeemed for them, or for another resource's.
		e.refresh[rt] = entraGrant{scopes: g.scopes}
		resp["refresh_token"] = rt
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(resp)
}

func (e *Entra) ttl() time.Duration {
	if e.AccessTTL <= 0 {
		return time.Hour
	}
	return e.AccessTTL
}

// audience is the one resource that scopes name: the scheme and host of
// URL scopes (https://contoso.sharepoint.com/.default), Microsoft Graph
// for bare ones (User.Read). OpenID Connect scopes and offline_access name
// none. Entra refuses scopes of two resources in one request (AADSTS28000).
func audience(scopes []string) (string, error) {
	aud := ""
	for _, s := range scopes {
		var a string
		switch {
		case s == "openid" || s == "profile" || s == "email" || s == "offline_access":
			continue
		case strings.HasPrefix(s, "https://") || strings.HasPrefix(s, "api://"):
			u, err := url.Parse(s)
			if err != nil || u.Host == "" {
				return "", fmt.Errorf("AADSTS70011: the scope %q is not valid", s)
			}
			a = u.Scheme + "://" + u.Host
		default:
			a = "https://graph.microsoft.com"
		}
		if aud != "" && aud != a {
			return "", fmt.Errorf("AADSTS28000: the scopes name more than one resource")
		}
		aud = a
	}
	if aud == "" {
		aud = "https://graph.microsoft.com"
	}
	return aud, nil
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}
