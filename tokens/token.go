// Package tokens keeps connections' tokens fresh. A connection is a connector
// plus a subject (empty for the shared, org-wide connection). The Keeper
// caches each connection's token in memory, reads and writes it in a kv store
// with check-and-set, refreshes it ahead of expiry one refresh at a time (in
// this process through singleflight, across replicas through a lease record
// in the store), and decides what an upstream 401 should cost.
package tokens

import (
	"errors"
	"fmt"
	"iter"
	"maps"
	"net/url"
	"strconv"
	"strings"
	"time"

	"golang.org/x/oauth2"

	"github.com/caddy-oauthconn/caddy-oauthconn/kv"
)

// Key names a connection.
type Key struct {
	// Connector is the connector's name.
	Connector string
	// Subject is the user or tenant the connection acts for; empty for the
	// shared connection.
	Subject string
}

func (k Key) String() string {
	if k.Subject == "" {
		return k.Connector
	}
	return k.Connector + "/" + k.Subject
}

// Validate checks that both parts can be stored without reaching another
// connection's records.
func (k Key) Validate() error {
	if err := kv.Segment(k.Connector); err != nil {
		return fmt.Errorf("connector name: %w", err)
	}
	if k.Subject != "" {
		return ValidSubject(k.Subject)
	}
	return nil
}

// ValidSubject checks a subject: not empty, no control characters, and no
// empty, "." or ".." part between slashes (a composite such as
// "tenant/user" whose tenant is missing is refused, not stored as "/user").
func ValidSubject(s string) error {
	if s == "" {
		return errors.New("subject is empty")
	}
	if len(s) > 512 {
		return errors.New("subject is longer than 512 bytes")
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return errors.New("subject contains a control character")
		}
	}
	for _, part := range strings.Split(s, "/") {
		if part == "" || part == "." || part == ".." {
			return fmt.Errorf("subject %q has an empty, . or .. part", s)
		}
	}
	return nil
}

// storeName is the connection's record name below tokens/ and leases/:
// the subject is path-escaped into one segment ("acme/alice" becomes
// "acme%2Falice"), so no subject can name another's record.
func (k Key) storeName() string {
	if k.Subject == "" {
		return k.Connector
	}
	return k.Connector + "/" + url.PathEscape(k.Subject)
}

func (k Key) tokenPath() string { return "tokens/" + k.storeName() }

// legacyLeasePath is where releases before schema 3 kept the refresh lease;
// disconnect removes what they left.
func (k Key) legacyLeasePath() string { return "leases/" + k.storeName() }

// lastRefresh is when the connection last obtained a token set: what
// keeps a refresh token alive at providers that expire idle ones.
func (t Token) lastRefresh() time.Time {
	if t.ObtainedAt.After(t.ConnectedAt) {
		return t.ObtainedAt
	}
	return t.ConnectedAt
}

// Token is a connection's stored token set. Every field but AccessToken is
// optional: providers differ in what they return.
type Token struct {
	AccessToken  string
	RefreshToken string
	// TokenType is what the provider said; requests always use "Bearer".
	TokenType string
	Scope     string
	// Expiry is when the access token expires; zero if the provider did
	// not say (such tokens are refreshed only after an upstream 401).
	Expiry time.Time
	// RefreshExpiry is when the refresh token expires, if the provider said.
	RefreshExpiry time.Time
	// ObtainedAt is when the access token was issued to us.
	ObtainedAt time.Time
	// ConnectedAt is when the connection was authorized.
	ConnectedAt time.Time
	// ConnectedBy is the authenticated user who authorized it, if known.
	ConnectedBy string
	// Generation identifies the grant: a random id made when the
	// connection was authorized (or imported). Every write that follows
	// from reading a token set is conditional on its generation, so that
	// nothing begun for one grant changes the connection made after it.
	Generation string
	// Metadata are the connection's named, non-secret values (such as
	// Salesforce's instance_url), kept from the token responses, the
	// authorization response or a discovery request.
	Metadata Metadata
}

// Metadata is a connection's named values. It is never changed once made
// (a token set with other values gets another), and compares by identity,
// so that a Token stays comparable. The zero Metadata is empty.
type Metadata struct{ v *metadataValues }

type metadataValues struct{ m map[string]string }

// NewMetadata makes Metadata of a copy of m.
func NewMetadata(m map[string]string) Metadata {
	if len(m) == 0 {
		return Metadata{}
	}
	return Metadata{&metadataValues{maps.Clone(m)}}
}

// Get returns the value named name.
func (md Metadata) Get(name string) (string, bool) {
	if md.v == nil {
		return "", false
	}
	v, ok := md.v.m[name]
	return v, ok
}

// Len returns how many values there are.
func (md Metadata) Len() int {
	if md.v == nil {
		return 0
	}
	return len(md.v.m)
}

// All yields the values.
func (md Metadata) All() iter.Seq2[string, string] {
	return func(yield func(string, string) bool) {
		if md.v == nil {
			return
		}
		for k, v := range md.v.m {
			if !yield(k, v) {
				return
			}
		}
	}
}

// Map returns a copy of the values (nil if there are none).
func (md Metadata) Map() map[string]string {
	if md.v == nil {
		return nil
	}
	return maps.Clone(md.v.m)
}

// Usable reports whether the access token may still be sent at now.
func (t Token) Usable(now time.Time) bool {
	return t.AccessToken != "" && (t.Expiry.IsZero() || now.Before(t.Expiry))
}

// Refreshable reports whether a refresh can be tried at now.
func (t Token) Refreshable(now time.Time) bool {
	return t.RefreshToken != "" && (t.RefreshExpiry.IsZero() || now.Before(t.RefreshExpiry))
}

// DueAt returns when the token should be refreshed, given the refresh margin:
// margin before expiry, but never earlier than two thirds into the token's
// lifetime, so short-lived tokens are not refreshed on every request. A token
// with no expiry is never due (zero time).
func (t Token) DueAt(margin time.Duration) time.Time { return dueAt(t.Expiry, t.ObtainedAt, margin) }

func (t Token) due(now time.Time, margin time.Duration) bool {
	return isDue(now, t.Expiry, t.ObtainedAt, margin)
}

// dueAt is Token.DueAt for a token obtained at obtained that expires at
// expiry.
func dueAt(expiry, obtained time.Time, margin time.Duration) time.Time {
	if expiry.IsZero() {
		return time.Time{}
	}
	if !obtained.IsZero() {
		if life := expiry.Sub(obtained); life > 0 && margin > life/3 {
			margin = life / 3
		}
	}
	return expiry.Add(-margin)
}

func isDue(now, expiry, obtained time.Time, margin time.Duration) bool {
	d := dueAt(expiry, obtained, margin)
	return !d.IsZero() && !now.Before(d)
}

// FromOAuth2 converts a token endpoint response received at now. A
// response without a refresh token keeps prev's (RFC 6749 6: the server
// may keep the refresh token unchanged); one with a new refresh token
// replaces it (rotation).
func FromOAuth2(ot *oauth2.Token, prev Token, now time.Time) Token {
	t := Token{
		AccessToken:  ot.AccessToken,
		RefreshToken: ot.RefreshToken,
		TokenType:    ot.TokenType,
		Expiry:       ot.Expiry,
		ObtainedAt:   now,
		ConnectedAt:  prev.ConnectedAt,
		ConnectedBy:  prev.ConnectedBy,
		Generation:   prev.Generation,
		Metadata:     prev.Metadata,
	}
	if s, ok := ot.Extra("scope").(string); ok {
		t.Scope = s
	} else {
		t.Scope = prev.Scope
	}
	if t.RefreshToken == "" {
		t.RefreshToken = prev.RefreshToken
		t.RefreshExpiry = prev.RefreshExpiry
	}
	if secs := extraSeconds(ot, "refresh_token_expires_in"); secs > 0 {
		t.RefreshExpiry = now.Add(time.Duration(secs) * time.Second)
	}
	if t.ConnectedAt.IsZero() {
		t.ConnectedAt = now
	}
	return t
}

// MetadataPicker is implemented by a Refresher that keeps fields of token
// responses as the connection's metadata (*connector.Connector does).
type MetadataPicker interface {
	PickMetadata(ot *oauth2.Token) map[string]string
}

// fromResponse is FromOAuth2 plus the metadata r picks from the response:
// a field the response has replaces the connection's value, one it lacks
// keeps it.
func fromResponse(r Refresher, ot *oauth2.Token, prev Token, now time.Time) Token {
	t := FromOAuth2(ot, prev, now)
	if p, ok := r.(MetadataPicker); ok {
		t.Metadata = mergeMetadata(prev.Metadata, p.PickMetadata(ot))
	}
	return t
}

// mergeMetadata returns old with the values of picked put over it: old
// itself if nothing changes.
func mergeMetadata(old Metadata, picked map[string]string) Metadata {
	changed := false
	for k, v := range picked {
		if cur, ok := old.Get(k); !ok || cur != v {
			changed = true
			break
		}
	}
	if !changed {
		return old
	}
	out := old.Map()
	if out == nil {
		out = make(map[string]string, len(picked))
	}
	maps.Copy(out, picked)
	return Metadata{&metadataValues{out}}
}

func extraSeconds(ot *oauth2.Token, key string) int64 {
	switch v := ot.Extra(key).(type) {
	case float64:
		return int64(v)
	case string:
		n, _ := strconv.ParseInt(v, 10, 64)
		return n
	}
	return 0
}
