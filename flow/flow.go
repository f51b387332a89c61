// Package flow keeps pending authorizations: the record made when a browser
// starts the authorization code grant, holding the PKCE verifier, the
// connection it is for and where to send the browser afterwards, until the
// provider redirects back with the state. Records live in a kv store so that
// any replica can finish a flow another started; each is single-use and
// expires after a TTL.
package flow

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"golang.org/x/oauth2"

	"github.com/caddy-oauthconn/caddy-oauthconn/kv"
)

// Store is what flows need of a kv.Store.
type Store interface {
	Get(ctx context.Context, path string) (kv.Entry, error)
	Put(ctx context.Context, path string, data map[string]string, cas int) (int, error)
	Delete(ctx context.Context, path string) error
	List(ctx context.Context, dir string) ([]string, error)
}

// DefaultTTL is how long a pending authorization may take.
const DefaultTTL = 10 * time.Minute

// Flow is a pending authorization.
type Flow struct {
	// Connector and Subject name the connection being authorized.
	Connector string
	Subject   string
	// Verifier is the PKCE code verifier.
	Verifier string
	// ReturnTo is where the browser goes after success.
	ReturnTo string
	// CreatedBy is the authenticated user who started the flow, if any;
	// only the same user may finish it.
	CreatedBy string
	// Popup says the flow runs in a popup window opened by the connect
	// page, which the callback notifies and closes.
	Popup bool
	// CreatedAt and ExpiresAt bound the flow's life.
	CreatedAt time.Time
	ExpiresAt time.Time

	bindingHash string
}

// Errors a finishing flow can meet. Their text is safe to show a user.
var (
	ErrUnknownState = errors.New("unknown or already used authorization state")
	ErrExpired      = errors.New("the authorization took too long; start again")
	ErrNotBound     = errors.New("the authorization was started in another browser")
	ErrOtherUser    = errors.New("the authorization was started by another user")
)

// Flows creates and finishes pending authorizations.
type Flows struct {
	store Store
	ttl   time.Duration
	now   func() time.Time
}

// New makes Flows over store. ttl 0 means DefaultTTL; now nil means
// time.Now.
func New(store Store, ttl time.Duration, now func() time.Time) *Flows {
	if ttl == 0 {
		ttl = DefaultTTL
	}
	if now == nil {
		now = time.Now
	}
	return &Flows{store: store, ttl: ttl, now: now}
}

// TTL returns how long a flow lives.
func (f *Flows) TTL() time.Duration { return f.ttl }

// Started is a new flow's secrets, to hand to the browser and the provider.
type Started struct {
	// State goes into the authorization URL.
	State string
	// Binding goes into the browser's flow cookie (see Cookie).
	Binding string
	// Verifier is the PKCE verifier, whose challenge goes into the URL.
	Verifier string
	// ID names the flow's record: the SHA-256 of its state, as ID returns.
	// It is not a secret, and nothing can finish the flow with it.
	ID string
}

// Params describe a flow to begin.
type Params struct {
	Connector, Subject string
	// ReturnTo is where to send the browser afterwards (already checked).
	ReturnTo string
	// CreatedBy is the authenticated user starting the flow, if any.
	CreatedBy string
	// Popup says the flow runs in a popup of the connect page.
	Popup bool
}

// Begin records a new flow and returns its secrets.
func (f *Flows) Begin(ctx context.Context, p Params) (Started, error) {
	connector, subject, returnTo, createdBy := p.Connector, p.Subject, p.ReturnTo, p.CreatedBy
	s := Started{State: random(32), Binding: random(32), Verifier: oauth2.GenerateVerifier()}
	id := stateID(s.State)
	s.ID = id
	now := f.now()
	data := map[string]string{
		"schema":       schemaVersion,
		"connector":    connector,
		"verifier":     s.Verifier,
		"binding_hash": hash(s.Binding),
		"return_to":    returnTo,
		"created_at":   now.UTC().Format(time.RFC3339Nano),
		"expires_at":   now.Add(f.ttl).UTC().Format(time.RFC3339Nano),
	}
	if subject != "" {
		data["subject"] = subject
	}
	if createdBy != "" {
		data["created_by"] = createdBy
	}
	if p.Popup {
		data["popup"] = "1"
	}
	if _, err := f.store.Put(ctx, "states/"+id, data, 0); err != nil {
		return Started{}, fmt.Errorf("recording authorization state: %w", err)
	}
	return s, nil
}

// Finish checks state, the browser's binding and the user (by, empty if
// none) and consumes the flow: of any number of concurrent calls with one
// state, across replicas, exactly one succeeds. Nothing is consumed if the
// binding or the user does not match.
func (f *Flows) Finish(ctx context.Context, state, binding, by string) (Flow, error) {
	if state == "" || len(state) > 512 {
		return Flow{}, ErrUnknownState
	}
	p := "states/" + stateID(state)
	e, err := f.store.Get(ctx, p)
	if errors.Is(err, kv.ErrNotFound) {
		return Flow{}, ErrUnknownState
	}
	if err != nil {
		return Flow{}, fmt.Errorf("reading authorization state: %w", err)
	}
	if e.Data["consumed"] != "" {
		return Flow{}, ErrUnknownState
	}
	fl, err := decode(e.Data)
	if err != nil {
		return Flow{}, err
	}
	if !f.now().Before(fl.ExpiresAt) {
		f.store.Delete(ctx, p)
		return Flow{}, ErrExpired
	}
	if binding == "" || subtle.ConstantTimeCompare([]byte(hash(binding)), []byte(fl.bindingHash)) != 1 {
		return Flow{}, ErrNotBound
	}
	if fl.CreatedBy != by {
		return Flow{}, ErrOtherUser
	}
	// Consume: a check-and-set write at the version read. Only one writer
	// can win it; the others see a conflict, as a replayed state does.
	if _, err := f.store.Put(ctx, p, map[string]string{"consumed": "1", "expires_at": e.Data["expires_at"]}, e.Version); err != nil {
		if errors.Is(err, kv.ErrConflict) {
			return Flow{}, ErrUnknownState
		}
		return Flow{}, fmt.Errorf("consuming authorization state: %w", err)
	}
	// The record has done its work; the sweeper removes it should this
	// delete fail.
	f.store.Delete(ctx, p)
	return fl, nil
}

// ID returns the ID of the flow whose state is state.
func ID(state string) string { return stateID(state) }

// Drop deletes the pending flow with ID id, if it is still there: a flow
// displaced by newer ones, or refused at its callback. Its state then
// redeems nothing.
func (f *Flows) Drop(ctx context.Context, id string) error {
	if err := checkID(id); err != nil {
		return err
	}
	if err := f.store.Delete(ctx, "states/"+id); err != nil && !errors.Is(err, kv.ErrNotFound) {
		return fmt.Errorf("dropping authorization state: %w", err)
	}
	return nil
}

// Abandon drops the pending flow with ID id on behalf of the browser that
// holds its binding (when it starts another): a browser can end its own
// flows, not others'. It reports whether the flow was dropped.
func (f *Flows) Abandon(ctx context.Context, id, binding string) (bool, error) {
	if err := checkID(id); err != nil {
		return false, err
	}
	e, err := f.store.Get(ctx, "states/"+id)
	if errors.Is(err, kv.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("reading authorization state: %w", err)
	}
	if e.Data["consumed"] != "" || subtle.ConstantTimeCompare([]byte(hash(binding)), []byte(e.Data["binding_hash"])) != 1 {
		return false, nil
	}
	return true, f.Drop(ctx, id)
}

// checkID checks that id is a flow ID, so that it names nothing but a flow's
// record.
func checkID(id string) error {
	if len(id) != 2*sha256.Size || strings.Trim(id, "0123456789abcdef") != "" {
		return fmt.Errorf("%q is not a flow ID", id)
	}
	return nil
}

// Sweep deletes expired flows and returns how many it deleted.
func (f *Flows) Sweep(ctx context.Context) (int, error) {
	ids, err := f.store.List(ctx, "states")
	if err != nil {
		return 0, fmt.Errorf("listing authorization states: %w", err)
	}
	now := f.now()
	n := 0
	var errs []error
	for _, id := range ids {
		if ctx.Err() != nil {
			break
		}
		p := "states/" + id
		e, err := f.store.Get(ctx, p)
		if errors.Is(err, kv.ErrNotFound) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		exp, perr := time.Parse(time.RFC3339Nano, e.Data["expires_at"])
		if perr == nil && now.Before(exp) {
			continue
		}
		if err := f.store.Delete(ctx, p); err != nil {
			errs = append(errs, err)
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}

// schemaVersion is written into every pending-authorization record.
const schemaVersion = "1"

func decode(m map[string]string) (Flow, error) {
	if v := m["schema"]; v != "" && v != schemaVersion {
		return Flow{}, fmt.Errorf("authorization state record has schema version %q; this build reads %q", v, schemaVersion)
	}
	fl := Flow{
		Connector:   m["connector"],
		Subject:     m["subject"],
		Verifier:    m["verifier"],
		ReturnTo:    m["return_to"],
		CreatedBy:   m["created_by"],
		Popup:       m["popup"] == "1",
		bindingHash: m["binding_hash"],
	}
	var err1, err2 error
	fl.CreatedAt, err1 = time.Parse(time.RFC3339Nano, m["created_at"])
	fl.ExpiresAt, err2 = time.Parse(time.RFC3339Nano, m["expires_at"])
	if err := errors.Join(err1, err2); err != nil || fl.Connector == "" {
		return Flow{}, errors.New("authorization state record is malformed")
	}
	return fl, nil
}

// stateID is the record name for a state: its SHA-256, so the state itself
// never appears in a store path or listing.
func stateID(state string) string {
	sum := sha256.Sum256([]byte(state))
	return hex.EncodeToString(sum[:])
}

func hash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// random returns n random bytes, base64url-encoded.
func random(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
