package imitation

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"time"
)

// Resource is an imitation of a Microsoft API protected by Entra access
// tokens, as far as its tokens go: Microsoft Graph or SharePoint Online's
// REST service. It accepts only access tokens that the Entra imitation
// issued for its audience, and answers as these documents describe:
//
//   - Microsoft Graph, GET /v1.0/me:
//     https://learn.microsoft.com/graph/api/user-get
//   - SharePoint REST, GET /_api/web:
//     https://learn.microsoft.com/sharepoint/dev/sp-add-ins/get-to-know-the-sharepoint-rest-service
//   - Continuous Access Evaluation: after a critical event (Revoke), a token
//     of a client that declared the cp1 capability is refused with 401 and
//     a claims challenge, error="insufficient_claims" and the base64 claims
//     the client must request, while a client without cp1 keeps its token
//     until it expires:
//     https://learn.microsoft.com/entra/identity-platform/claims-challenge
//     https://learn.microsoft.com/entra/identity-platform/app-resilience-continuous-access-evaluation
//
// Where it knowingly differs: tokens are looked up in the Entra imitation
// rather than validated as JWTs, and the bodies hold a few fields only.
type Resource struct {
	*httptest.Server
	// Audience is the resource's identifier: https://graph.microsoft.com,
	// or https://<tenant>.sharepoint.com.
	Audience string

	entra    *Entra
	mu       sync.Mutex
	requests []ResourceRequest
	cutoff   int    // tokens issued up to this one are refused
	claims   string // the challenge's claims (JSON); empty: plain expiry
}

// ResourceRequest is one request as the resource received it.
type ResourceRequest struct {
	Path  string
	Token string
	// Audience is the audience of the token sent, empty if the token is
	// not one the Entra imitation issued.
	Audience string
	Status   int
}

// NewGraph starts an imitation of Microsoft Graph that trusts entra.
func NewGraph(entra *Entra) *Resource {
	return newResource(entra, "https://graph.microsoft.com", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1.0/me" {
			graphError(w, http.StatusNotFound, "Request_ResourceNotFound", "Resource not found")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"@odata.context":"https://graph.microsoft.com/v1.0/$metadata#users/$entity","displayName":"Adele Vance","userPrincipalName":"adele@contoso.com"}`)
	})
}

// NewSharePoint starts an imitation of SharePoint Online's REST service of
// host (such as contoso.sharepoint.com) that trusts entra.
func NewSharePoint(entra *Entra, host string) *Resource {
	return newResource(entra, "https://"+host, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/_api/web" {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, `{"error":{"code":"-1, Microsoft.SharePoint.Client.ResourceNotFoundException","message":{"lang":"en-US","value":"Cannot find resource for the request."}}}`)
			return
		}
		w.Header().Set("Content-Type", "application/json;odata=nometadata")
		fmt.Fprint(w, `{"Title":"Contoso","Url":"https://contoso.sharepoint.com"}`)
	})
}

func newResource(entra *Entra, audience string, api http.HandlerFunc) *Resource {
	res := &Resource{Audience: audience, entra: entra}
	res.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		at, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		a, ok := entra.Lookup(at)
		rr := ResourceRequest{Path: r.URL.Path, Token: at}
		if ok {
			rr.Audience = a.Audience
		}
		rec := &statusRecorder{ResponseWriter: w}
		defer func() {
			rr.Status = rec.status
			res.mu.Lock()
			res.requests = append(res.requests, rr)
			res.mu.Unlock()
		}()
		res.mu.Lock()
		cutoff, claims := res.cutoff, res.claims
		res.mu.Unlock()
		switch {
		case !ok || a.Audience != audience:
			rec.Header().Set("WWW-Authenticate", `Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", error="invalid_token", error_description="Invalid audience"`)
			graphError(rec, http.StatusUnauthorized, "InvalidAuthenticationToken", "Access token validation failure. Invalid audience.")
		case a.Seq <= cutoff && claims != "" && a.CP1:
			rec.Header().Set("WWW-Authenticate", `Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", error="insufficient_claims", claims="`+
				base64.StdEncoding.EncodeToString([]byte(claims))+`"`)
			graphError(rec, http.StatusUnauthorized, "InvalidAuthenticationToken", "Continuous access evaluation resulted in challenge with result: InteractionRequired and code: TokenIssuedBeforeRevocationTimestamp")
		case a.Seq <= cutoff && claims == "":
			rec.Header().Set("WWW-Authenticate", `Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", error="invalid_token", error_description="The token is expired"`)
			graphError(rec, http.StatusUnauthorized, "InvalidAuthenticationToken", "Lifetime validation failed, the token is expired.")
		default:
			api(rec, r)
		}
	}))
	return res
}

func graphError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": code, "message": msg}})
}

// Revoke imitates a critical event (the user's sessions revoked): from now
// on, the tokens issued so far to cp1 clients are refused with a claims
// challenge, which a token issued later satisfies. It returns the
// challenge's claims.
func (r *Resource) Revoke() string {
	claims := fmt.Sprintf(`{"access_token":{"nbf":{"essential":true,"value":"%d"}}}`, time.Now().Unix())
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cutoff, r.claims = r.entra.Issued(), claims
	return claims
}

// Expire makes the tokens issued so far refused as expired (401
// invalid_token), whatever their capabilities.
func (r *Resource) Expire() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cutoff, r.claims = r.entra.Issued(), ""
}

// Requests returns the requests received so far.
func (r *Resource) Requests() []ResourceRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.requests)
}
