package caddymodule

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
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

// Pending challenges. An upstream can refuse a token for something no
// refresh gives it: claims (a claims challenge, cae.go) or scopes (RFC 6750
// insufficient_scope, step-up). The person must authorize again, asking for
// them; the app gets 401 authorization_required with what is asked and an
// authorize URL.
//
// The authorize URL does not carry what is asked, which anyone could then
// choose: it names a challenge record (a random id) that the proxy wrote in
// the store for the connection, where any replica's authorize route reads
// it. The authorize route uses it only if the record is the connection's
// (the subject is the requester's), its id matches and it has not expired.

// challengeTTL is how long a recorded challenge may be used to authorize.
const challengeTTL = time.Hour

// ask is what an upstream asked for that the token lacks.
type ask struct {
	// claims is a claims request (compact JSON), or empty.
	claims string
	// scope is the space-separated scopes asked for, or empty.
	scope string
}

// challengeError answers a request whose upstream asked for claims or
// scopes.
type challengeError struct {
	ask
	id string // the challenge record's id; empty if none was written
}

func (e *challengeError) Error() string {
	if e.claims != "" {
		return "the upstream asks for claims the access token lacks"
	}
	return "the upstream asks for scopes the access token lacks"
}

// challengeMemo remembers the challenges this instance recorded, so that a
// storm of requests refused alike writes one record.
type challengeMemo struct {
	mu sync.Mutex
	m  map[tokens.Key]challengeRecord
}

type challengeRecord struct {
	id    string
	ask   ask
	until time.Time
}

// challengePath is where a connection's pending challenge is kept.
func challengePath(key tokens.Key) string {
	if key.Subject == "" {
		return "claims/" + key.Connector
	}
	return "claims/" + key.Connector + "/" + url.PathEscape(key.Subject)
}

// recordChallenge keeps what is asked as the connection's pending
// challenge and returns the id that authorize URLs name it by.
func (a *App) recordChallenge(ctx context.Context, key tokens.Key, want ask) (string, error) {
	now := time.Now()
	a.challenges.mu.Lock()
	if rec, ok := a.challenges.m[key]; ok && rec.ask == want && now.Before(rec.until.Add(-challengeTTL/2)) {
		a.challenges.mu.Unlock()
		return rec.id, nil
	}
	a.challenges.mu.Unlock()
	b := make([]byte, 16)
	rand.Read(b)
	rec := challengeRecord{id: hex.EncodeToString(b), ask: want, until: now.Add(challengeTTL)}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	data := map[string]string{"id": rec.id, "claims": want.claims, "scope": want.scope, "expires": rec.until.UTC().Format(time.RFC3339)}
	for range 3 {
		e, err := a.store.Get(ctx, challengePath(key))
		if err != nil && !errors.Is(err, kv.ErrNotFound) {
			return "", err
		}
		if until, perr := time.Parse(time.RFC3339, e.Data["expires"]); perr == nil && e.Data["claims"] == want.claims &&
			e.Data["scope"] == want.scope && e.Data["id"] != "" && now.Before(until.Add(-challengeTTL/2)) {
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

// pendingChallenge returns what the connection's pending challenge named
// id asks for, or nothing when there is no such unexpired challenge.
func (a *App) pendingChallenge(ctx context.Context, key tokens.Key, id string) (ask, error) {
	if id == "" {
		return ask{}, nil
	}
	e, err := a.store.Get(ctx, challengePath(key))
	if errors.Is(err, kv.ErrNotFound) {
		return ask{}, nil
	}
	if err != nil {
		return ask{}, err
	}
	until, err := time.Parse(time.RFC3339, e.Data["expires"])
	if err != nil || !time.Now().Before(until) || subtle.ConstantTimeCompare([]byte(e.Data["id"]), []byte(id)) != 1 {
		return ask{}, nil
	}
	var out ask
	if e.Data["claims"] != "" {
		claims, err := connector.ParseClaims([]byte(e.Data["claims"]))
		if err != nil {
			return ask{}, nil
		}
		out.claims = claims
	}
	if validScope(e.Data["scope"]) {
		out.scope = e.Data["scope"]
	}
	return out, nil
}

// validScope reports whether s is a scope list (RFC 6749 3.3: printable
// ASCII but space, quote and backslash, space-separated), bounded.
func validScope(s string) bool {
	if s == "" || len(s) > 2048 {
		return false
	}
	for _, r := range s {
		if r != ' ' && (r < 0x21 || r > 0x7e || r == '"' || r == '\\') {
			return false
		}
	}
	return true
}

// challenged records what an upstream asked for on key's behalf and returns
// the error that answers the app.
func (h *ProxyHandler) challenged(ctx context.Context, key tokens.Key, want ask) error {
	id, err := h.app.recordChallenge(ctx, key, want)
	if err != nil {
		// The app still learns what is needed; the person authorizes
		// without it, which a fresh sign-in often satisfies.
		h.logger.Warn("recording a challenge", zap.String("connection", key.String()), zap.Error(err))
	}
	h.logger.Info("the upstream asks for more than the access token has; the connection needs the person",
		zap.String("connection", key.String()), zap.Bool("claims", want.claims != ""), zap.String("scope", want.scope))
	return &challengeError{ask: want, id: id}
}

// writeChallenge answers 401 authorization_required with what is asked and
// an authorize URL that carries it to the provider.
func (h *ProxyHandler) writeChallenge(w http.ResponseWriter, ce *challengeError) error {
	u := h.app.authorizeURL(h.conn.name) + challengeQuery(ce.id)
	body := struct {
		apiError
		Claims json.RawMessage `json:"claims,omitempty"`
		Scopes []string        `json:"scopes,omitempty"`
	}{apiError: apiError{Error: "authorization_required", Connector: h.conn.name, AuthorizeURL: u}}
	if ce.claims != "" {
		body.Claims = json.RawMessage(ce.claims)
		body.Message = "the upstream requires claims the access token lacks (Continuous Access Evaluation or Conditional Access); open authorize_url in a browser to sign in again"
	} else {
		body.Scopes = strings.Fields(ce.scope)
		body.Message = "the upstream requires scopes the connection was not granted; open authorize_url in a browser to grant them"
	}
	return writeJSON(w, http.StatusUnauthorized, body)
}

// challengeQuery is the authorize URL's query naming a challenge, if any.
func challengeQuery(id string) string {
	if id == "" {
		return ""
	}
	return "?challenge=" + url.QueryEscape(id)
}

// authCodeURL is the provider's authorization URL for a flow started with
// the authorize route, carrying what the connection's pending challenge id
// asks for, if the request names one that is still pending.
func (h *ConnectHandler) authCodeURL(r *http.Request, c *Connector, conn *connector.Connector, subject, id string, started flow.Started) string {
	want, err := h.app.pendingChallenge(r.Context(), tokens.Key{Connector: c.name, Subject: subject}, id)
	if err != nil {
		h.logger.Warn("reading a challenge; authorizing without it", zap.String("connector", c.name), zap.Error(err))
	}
	if id != "" && want == (ask{}) && err == nil {
		h.logger.Info("the authorize request names no pending challenge of the connection; authorizing without one", zap.String("connector", c.name))
	}
	if want == (ask{}) {
		return conn.AuthCodeURL(started.State, started.Verifier)
	}
	return conn.AuthCodeURLFor(started.State, started.Verifier, want.claims, strings.Fields(want.scope))
}
