package tokens

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strings"
	"time"
)

// schemaVersion is written into every token record.
//
//   - Version 1 (the first release, no schema field or "1") held the token
//     set only.
//   - Version 2 added who connected and when (connected_by, connected_at)
//     and when the access token was issued (obtained_at).
//   - Version 3 adds the grant's generation, the connection's state (a
//     connection that needs authorization is marked, with why and since
//     when, instead of deleted; a disconnected one leaves a tombstone) and
//     the refresh lease (lease_holder, lease_until), which moved into the
//     token record from a record of its own.
//
// Versions 1 and 2 are read as version 3 and written back as version 3.
// A version 3 record may also hold the connection's metadata, one field
// "metadata.<name>" each: optional fields, so the schema version stays 3.
// A release that does not know them drops them when it refreshes; values
// that come with every token response (Salesforce's instance_url) return
// with the next refresh, the others with the next connect.
// A release that reads at most version 2 refuses version 3 records (503
// token_unavailable) rather than refreshing without honouring the lease:
// upgrade every replica sharing a store together.
const schemaVersion = "3"

// State is a connection record's state.
type State string

const (
	// Active records hold a token set.
	Active State = ""
	// NeedsAuthorization records had their grant refused by the provider;
	// they keep who connected and why it ended, and no secret.
	NeedsAuthorization State = "authorization_required"
	// Disconnected records are tombstones: disconnect writes one instead of
	// deleting, so the record's version keeps growing and a writer that
	// read the old connection cannot mistake a new one for it.
	Disconnected State = "disconnected"
)

// record is a token record as stored: the token set, its state and the
// refresh lease.
type record struct {
	tok Token
	// state is the connection's state; reason and since say why and since
	// when it is not Active.
	state  State
	reason string
	since  time.Time
	// lease is the refresh lease, if one was taken.
	lease lease
}

// lease says which replica is refreshing the connection, until when.
type lease struct {
	holder string
	until  time.Time
}

// heldBy reports whether somebody other than holder has a lease that is live
// at now, counting skew more for clocks that run behind ours.
func (l lease) heldBy(holder string, now time.Time, skew time.Duration) bool {
	return l.holder != "" && l.holder != holder && now.Before(l.until.Add(skew))
}

func newID() string {
	b := make([]byte, 12)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// metadataPrefix starts the record fields that hold metadata.
const metadataPrefix = "metadata."

func (r record) fields() map[string]string {
	t := r.tok
	m := map[string]string{"schema": schemaVersion}
	put := func(k, v string) {
		if v != "" {
			m[k] = v
		}
	}
	putTime := func(k string, v time.Time, layout string) {
		if !v.IsZero() {
			m[k] = v.UTC().Format(layout)
		}
	}
	put("generation", t.Generation)
	put("connected_by", t.ConnectedBy)
	putTime("connected_at", t.ConnectedAt, time.RFC3339)
	put("state", string(r.state))
	if r.state != Active {
		// No secret outlives the connection it belonged to.
		put("reason", r.reason)
		putTime("since", r.since, time.RFC3339)
		return m
	}
	m["access_token"] = t.AccessToken
	put("refresh_token", t.RefreshToken)
	put("token_type", t.TokenType)
	put("scope", t.Scope)
	putTime("expiry", t.Expiry, time.RFC3339)
	putTime("refresh_expiry", t.RefreshExpiry, time.RFC3339)
	putTime("obtained_at", t.ObtainedAt, time.RFC3339)
	if t.Metadata.v != nil {
		for k, v := range t.Metadata.v.m {
			put(metadataPrefix+k, v)
		}
	}
	put("lease_holder", r.lease.holder)
	putTime("lease_until", r.lease.until, time.RFC3339Nano)
	return m
}

// upgradeV1 reads a version 1 record as version 2: the fields version 2
// added are unknown, and version 1's fields are kept as they were.
func upgradeV1(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for _, k := range []string{"access_token", "refresh_token", "token_type", "scope", "expiry", "refresh_expiry"} {
		if v, ok := m[k]; ok {
			out[k] = v
		}
	}
	out["schema"] = "2"
	return out
}

func parseRecord(m map[string]string) (record, error) {
	switch v := m["schema"]; v {
	case "", "1":
		m = upgradeV1(m)
	case "2", schemaVersion:
	default:
		return record{}, fmt.Errorf("token record has schema version %q; this build reads versions 1 to 3 (upgrade caddy-oauthconn)", v)
	}
	r := record{
		tok: Token{
			AccessToken:  m["access_token"],
			RefreshToken: m["refresh_token"],
			TokenType:    m["token_type"],
			Scope:        m["scope"],
			ConnectedBy:  m["connected_by"],
			Generation:   m["generation"],
		},
		state:  State(m["state"]),
		reason: m["reason"],
		lease:  lease{holder: m["lease_holder"]},
	}
	var md map[string]string
	for k, v := range m {
		if name, ok := strings.CutPrefix(k, metadataPrefix); ok && r.state == Active {
			if md == nil {
				md = map[string]string{}
			}
			md[name] = v
		}
	}
	r.tok.Metadata = NewMetadata(md)
	for field, dst := range map[string]*time.Time{
		"expiry": &r.tok.Expiry, "refresh_expiry": &r.tok.RefreshExpiry,
		"obtained_at": &r.tok.ObtainedAt, "connected_at": &r.tok.ConnectedAt,
		"since": &r.since, "lease_until": &r.lease.until,
	} {
		if s := m[field]; s != "" {
			v, err := time.Parse(time.RFC3339Nano, s)
			if err != nil {
				return record{}, fmt.Errorf("token record field %s: not an RFC 3339 time", field)
			}
			*dst = v
		}
	}
	switch r.state {
	case Active:
		if r.tok.AccessToken == "" && r.tok.RefreshToken == "" {
			return record{}, fmt.Errorf("token record holds neither an access nor a refresh token")
		}
	case NeedsAuthorization, Disconnected:
	default:
		return record{}, fmt.Errorf("token record has unknown state %q", r.state)
	}
	return r, nil
}
