package imitation

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
)

// EntraOBO is an imitation of the Microsoft identity platform's v2.0 token
// endpoint answering the on-behalf-of flow, and of a downstream API
// (Microsoft Graph's /v1.0/me) that accepts the tokens it issues,
// following https://learn.microsoft.com/entra/identity-platform/v2-oauth2-on-behalf-of-flow
// ("Middle-tier access token request", "Success response example",
// "Error response example"):
//
//   - POST /{tenant}/oauth2/v2.0/token with grant_type
//     urn:ietf:params:oauth:grant-type:jwt-bearer, client_id and
//     client_secret (or HTTP Basic), assertion (the access token the
//     middle tier received, whose aud is the middle tier's application ID
//     URI), scope, and requested_token_use=on_behalf_of;
//   - a success is token_type Bearer, scope, expires_in, ext_expires_in,
//     access_token, and a refresh_token when offline_access was asked for;
//   - a refused assertion is 400 invalid_grant with an AADSTS description
//     and error_codes; a wrong client secret is 401 invalid_client.
//
// Where it knowingly differs: the users' tokens it hands out (UserToken)
// are JWT-shaped but unsigned, and it knows them by value rather than
// validating a signature; the tokens it issues are opaque strings that the
// imitated Graph looks up here.
type EntraOBO struct {
	*httptest.Server
	// ClientID and ClientSecret are the middle tier's registration: the
	// proxy's client.
	ClientID, ClientSecret string

	mu       sync.Mutex
	n        int
	users    map[string]oboUser // the users' tokens, by value
	issued   map[string]string  // issued access token → user
	requests []url.Values
}

type oboUser struct {
	name string
	exp  time.Time
}

// NewEntraOBO starts the imitation for the middle tier clientID/secret.
func NewEntraOBO(clientID, clientSecret string) *EntraOBO {
	e := &EntraOBO{ClientID: clientID, ClientSecret: clientSecret, users: map[string]oboUser{}, issued: map[string]string{}}
	e.Server = httptest.NewServer(http.HandlerFunc(e.serve))
	return e
}

// TokenURL is the token endpoint of tenant.
func (e *EntraOBO) TokenURL(tenant string) string {
	return e.URL + "/" + url.PathEscape(tenant) + "/oauth2/v2.0/token"
}

// UserToken is an access token that the user's app got for the middle
// tier (aud api://{ClientID}), valid for ttl: what the app sends the proxy.
func (e *EntraOBO) UserToken(user string, ttl time.Duration) string {
	exp := time.Now().Add(ttl)
	enc := base64.RawURLEncoding.EncodeToString
	claims, _ := json.Marshal(map[string]any{
		"aud": "api://" + e.ClientID, "iss": e.URL + "/v2.0", "preferred_username": user,
		"scp": "access_as_user", "exp": exp.Unix(),
	})
	tok := enc([]byte(`{"typ":"JWT","alg":"RS256"}`)) + "." + enc(claims) + "." + enc([]byte("unsigned-"+user))
	e.mu.Lock()
	e.users[tok] = oboUser{name: user, exp: exp}
	e.mu.Unlock()
	return tok
}

// Requests returns the forms of the token requests received.
func (e *EntraOBO) Requests() []url.Values {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.requests)
}

// IssuedTo returns the user an access token was issued for, if it was.
func (e *EntraOBO) IssuedTo(accessToken string) (string, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	u, ok := e.issued[accessToken]
	return u, ok
}

func (e *EntraOBO) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/v1.0/me" {
		e.graphMe(w, r)
		return
	}
	if r.Method != http.MethodPost || !strings.HasSuffix(r.URL.Path, "/oauth2/v2.0/token") || r.ParseForm() != nil {
		http.NotFound(w, r)
		return
	}
	f := r.PostForm
	e.mu.Lock()
	e.requests = append(e.requests, f)
	e.mu.Unlock()
	id, secret := f.Get("client_id"), f.Get("client_secret")
	if u, p, ok := r.BasicAuth(); ok {
		id, secret = u, p
	}
	switch {
	case id != e.ClientID || secret != e.ClientSecret:
		oboError(w, http.StatusUnauthorized, "invalid_client", 7000215, "Invalid client secret provided.")
		return
	case f.Get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
		oboError(w, http.StatusBadRequest, "unsupported_grant_type", 70003, "The app requested an unsupported grant type.")
		return
	case f.Get("requested_token_use") != "on_behalf_of":
		oboError(w, http.StatusBadRequest, "invalid_request", 900144, "The request body must contain the following parameter: 'requested_token_use'.")
		return
	case f.Get("scope") == "":
		oboError(w, http.StatusBadRequest, "invalid_request", 900144, "The request body must contain the following parameter: 'scope'.")
		return
	}
	e.mu.Lock()
	user, ok := e.users[f.Get("assertion")]
	e.mu.Unlock()
	if !ok || !time.Now().Before(user.exp) {
		oboError(w, http.StatusBadRequest, "invalid_grant", 50013, "Assertion failed signature validation.")
		return
	}
	e.mu.Lock()
	e.n++
	at := fmt.Sprintf("obo-access-%d", e.n)
	e.issued[at] = user.name
	n := e.n
	e.mu.Unlock()
	out := map[string]any{
		"token_type": "Bearer", "scope": f.Get("scope"), "expires_in": 3599, "ext_expires_in": 3599,
		"access_token": at,
	}
	if slices.Contains(strings.Fields(f.Get("scope")), "offline_access") {
		out["refresh_token"] = fmt.Sprintf("obo-refresh-%d", n)
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(out)
}

// graphMe imitates GET https://graph.microsoft.com/v1.0/me: the user the
// token was issued for, or 401 InvalidAuthenticationToken.
func (e *EntraOBO) graphMe(w http.ResponseWriter, r *http.Request) {
	tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	user, ok := e.IssuedTo(tok)
	w.Header().Set("Content-Type", "application/json")
	if !ok {
		w.Header().Set("WWW-Authenticate", `Bearer realm="", error="invalid_token"`)
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, `{"error":{"code":"InvalidAuthenticationToken","message":"Access token validation failure."}}`)
		return
	}
	json.NewEncoder(w).Encode(map[string]string{"userPrincipalName": user})
}

// oboError writes the token endpoint's error response.
func oboError(w http.ResponseWriter, status int, code string, aadsts int, desc string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{
		"error":             code,
		"error_description": fmt.Sprintf("AADSTS%d: %s", aadsts, desc),
		"error_codes":       []int{aadsts},
		"timestamp":         time.Now().UTC().Format("2006-01-02 15:04:05Z"),
	})
}
