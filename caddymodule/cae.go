package caddymodule

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-oauthconn/caddy-oauthconn/connector"
	"github.com/caddy-oauthconn/caddy-oauthconn/flow"
	"github.com/caddy-oauthconn/caddy-oauthconn/kv"
	"github.com/caddy-oauthconn/caddy-oauthconn/tokens"
)

// Claims challenges (Continuous Access Evaluation, Conditional Access
// authentication context). A resource that refuses a token for lacking
// claims answers 401 with
//
//	WWW-Authenticate: Bearer realm="", authorization_uri="…", error="insufficient_claims", claims="<base64 JSON>"
//
// (https://learn.microsoft.com/entra/identity-platform/claims-challenge).
// A refresh cannot satisfy it: the person must sign in again, with the
// claims in the authorization request. So the app gets 401
// authorization_required with the claims and an authorize URL that carries
// them to the provider.
//
// The authorize URL does not carry the claims themselves, which anyone
// could then choose: it names a challenge record (a random id) that the
// proxy wrote in the store for the connection, where any replica's
// authorize route reads it. The authorize route uses the claims only if the
// record is the connection's (the subject is the requester's), its id
// matches and it has not expired.

// challengeTTL is how long a recorded claims challenge may be used to
// authorize.
const challengeTTL = time.Hour

// maxClaims bounds a claims challenge's size (decoded).
const maxClaims = 8 << 10

// claimsChallenge returns the claims (compact JSON) of an insufficient_claims
// Bearer challenge in h's WWW-Authenticate, if there is one.
func claimsChallenge(h http.Header) (string, bool) {
	for _, v := range h.Values("Www-Authenticate") {
		params := authParams(v)
		if params["error"] != "insufficient_claims" || params["claims"] == "" {
			continue
		}
		raw := params["claims"]
		if len(raw) > maxClaims*4/3+4 {
			continue
		}
		var b []byte
		var err error
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
			if b, err = enc.DecodeString(raw); err == nil {
				break
			}
		}
		if err != nil {
			continue
		}
		if claims, err := connector.ParseClaims(b); err == nil {
			return claims, true
		}
	}
	return "", false
}

// authParams parses the auth-params of a Bearer challenge (RFC 9110
// 11.6.1): name=token or name="quoted string", comma-separated. Names are
// lower-cased; the first of a repeated name wins.
func authParams(v string) map[string]string {
	scheme, rest, _ := strings.Cut(strings.TrimSpace(v), " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return nil
	}
	out := map[string]string{}
	for rest != "" {
		rest = strings.TrimLeft(rest, " \t,")
		name, after, ok := strings.Cut(rest, "=")
		if !ok {
			break
		}
		name = strings.ToLower(strings.TrimSpace(name))
		after = strings.TrimLeft(after, " \t")
		var val string
		if strings.HasPrefix(after, `"`) {
			var sb strings.Builder
			i := 1
			for ; i < len(after) && after[i] != '"'; i++ {
				if after[i] == '\\' && i+1 < len(after) {
					i++
				}
				sb.WriteByte(after[i])
			}
			val, rest = sb.String(), after[min(i+1, len(after)):]
		} else {
			val, rest, _ = strings.Cut(after, ",")
			val = strings.TrimSpace(val)
		}
		if _, seen := out[name]; !seen {
			out[name] = val
		}
	}
	return out
}

// claimsChallengeError answers a request whose upstream asked for claims.
type claimsChallengeError struct {
	claims string // compact JSON
	id     string // the challenge record's id; empty if none was written
}

func (e *claimsChallengeError) Error() string {
	return "the upstream asks for claims the access token lacks"
}

// challengeMemo remembers the challenges this instance recorded, so that a
// storm of requests refused with the same claims writes one record.
type challengeMemo struct {
	mu sync.Mutex
	m  map[tokens.Key]challengeRecord
}

type challengeRecord struct {
	id, claims string
	until      time.Time
}

// challengePath is where a connection's pending claims challenge is kept.
func challengePath(key tokens.Key) string {
	if key.Subject == "" {
		return "claims/" + key.Connector
	}
	return "claims/" + key.Connector + "/" + url.PathEscape(key.Subject)
}

// recordChallenge keeps claims as the connection's pending challenge and
// returns the id that authorize URLs name it by.
func (a *App) recordChallenge(ctx context.Context, key tokens.Key, claims string) (string, error) {
	now := time.Now()
	a.challenges.mu.Lock()
	if rec, ok := a.challenges.m[key]; ok && rec.claims == claims && now.Before(rec.until.Add(-challengeTTL/2)) {
		a.challenges.mu.Unlock()
		return rec.id, nil
	}
	a.challenges.mu.Unlock()
	b := make([]byte, 16)
	rand.Read(b)
	rec := challengeRecord{id: hex.EncodeToString(b), claims: claims, until: now.Add(challengeTTL)}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	data := map[string]string{"id": rec.id, "claims": claims, "expires": rec.until.UTC().Format(time.RFC3339)}
	for range 3 {
		e, err := a.store.Get(ctx, challengePath(key))
		if err != nil && !errors.Is(err, kv.ErrNotFound) {
			return "", err
		}
		if until, perr := time.Parse(time.RFC3339, e.Data["expires"]); perr == nil && e.Data["claims"] == claims &&
			e.Data["id"] != "" && now.Before(until.Add(-challengeTTL/2)) {
			// Another replica recorded the same challenge: one id for
			// both, so that either's authorize URL works.
			rec.id, rec.until = e.Data["id"], until
		} else {
			_, err = a.store.Put(ctx, challengePath(key), data, e.Version)
		}
		if errors.Is(err, kv.ErrConflict) {
			continue
		}
		if err != nil {
			return "", err
		}
		a.challenges.mu.Lock()
		if a.challenges.m == nil {
			a.challenges.m = map[tokens.Key]challengeRecord{}
		}
		a.challenges.m[key] = rec
		a.challenges.mu.Unlock()
		return rec.id, nil
	}
	return "", kv.ErrConflict
}

// challengeClaims returns the claims of the connection's pending challenge
// named id, or "" when there is no such unexpired challenge.
func (a *App) challengeClaims(ctx context.Context, key tokens.Key, id string) (string, error) {
	if id == "" {
		return "", nil
	}
	e, err := a.store.Get(ctx, challengePath(key))
	if errors.Is(err, kv.ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	until, err := time.Parse(time.RFC3339, e.Data["expires"])
	if err != nil || !time.Now().Before(until) || subtle.ConstantTimeCompare([]byte(e.Data["id"]), []byte(id)) != 1 {
		return "", nil
	}
	claims, err := connector.ParseClaims([]byte(e.Data["claims"]))
	if err != nil {
		return "", nil
	}
	return claims, nil
}

// challenged records the claims an upstream asked for on key's behalf and
// returns the error that answers the app.
func (h *ProxyHandler) challenged(ctx context.Context, key tokens.Key, claims string) error {
	id, err := h.app.recordChallenge(ctx, key, claims)
	if err != nil {
		// The app still learns what is needed; the person authorizes
		// without the claims, which a fresh sign-in often satisfies.
		h.logger.Warn("recording a claims challenge", zap.String("connection", key.String()), zap.Error(err))
	}
	h.logger.Info("the upstream asks for claims the access token lacks; the connection needs the person",
		zap.String("connection", key.String()))
	return &claimsChallengeError{claims: claims, id: id}
}

// writeChallenge answers 401 authorization_required with the claims and an
// authorize URL that carries them to the provider.
func (h *ProxyHandler) writeChallenge(w http.ResponseWriter, ce *claimsChallengeError) error {
	u := h.app.authorizeURL(h.conn.name)
	if ce.id != "" {
		u += "?challenge=" + ce.id
	}
	return writeJSON(w, http.StatusUnauthorized, struct {
		apiError
		Claims json.RawMessage `json:"claims"`
	}{
		apiError: apiError{Error: "authorization_required", Connector: h.conn.name, AuthorizeURL: u,
			Message: "the upstream requires claims the access token lacks (Continuous Access Evaluation or Conditional Access); open authorize_url in a browser to sign in again"},
		Claims: json.RawMessage(ce.claims),
	})
}

// challengeQuery is the authorize URL's query naming a challenge, if any.
func challengeQuery(id string) string {
	if id == "" {
		return ""
	}
	return "?challenge=" + url.QueryEscape(id)
}

// authCodeURL is the provider's authorization URL for a flow started with
// the authorize route, carrying the claims of the connection's pending
// challenge id, if the request names one that is still pending.
func (h *ConnectHandler) authCodeURL(r *http.Request, c *Connector, conn *connector.Connector, subject, id string, started flow.Started) string {
	claims, err := h.app.challengeClaims(r.Context(), tokens.Key{Connector: c.name, Subject: subject}, id)
	if err != nil {
		h.logger.Warn("reading a claims challenge; authorizing without its claims", zap.String("connector", c.name), zap.Error(err))
	}
	if id != "" && claims == "" && err == nil {
		h.logger.Info("the authorize request names no pending claims challenge of the connection; authorizing without claims", zap.String("connector", c.name))
	}
	if claims == "" {
		return conn.AuthCodeURL(started.State, started.Verifier)
	}
	return conn.AuthCodeURLWithClaims(started.State, started.Verifier, claims)
}
