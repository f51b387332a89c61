package tokens

import "context"

// Access is what a request sent with a connection's token carries.
type Access struct {
	// Token is the access token.
	Token string
	// Authorization is the Authorization header's value: "Bearer " and
	// the token. For a cached token it is the cache's own string, so
	// that a request costs no allocation to build it.
	Authorization string
	// Metadata is the connection's metadata.
	Metadata Metadata
}

// AccessOf returns t's access token as a request carries it.
func AccessOf(t Token) Access {
	return Access{Token: t.AccessToken, Authorization: bearerPrefix + t.AccessToken, Metadata: t.Metadata}
}

// Access is Token for a request that only needs the access token, as every
// proxied request does. It decides as Token does; a fresh cached token,
// the common case, is answered from the cache's packed entry without
// building the token set.
func (k *Keeper) Access(ctx context.Context, key Key, r Refresher, p Policy) (Access, error) {
	if a, ok := k.fresh(key, p); ok {
		return a, nil
	}
	tok, err := k.Token(ctx, key, r, p)
	if err != nil {
		return Access{}, err
	}
	return AccessOf(tok), nil
}

// fresh returns key's cached access token if Token would return it at once
// and do nothing else: it is not due for refresh, and the entry is not due
// for revalidation against the store. Like a cache read, it marks the
// entry used.
func (k *Keeper) fresh(key Key, p Policy) (Access, bool) {
	n := k.cache.lookup(key)
	if n == nil {
		return Access{}, false
	}
	e := &n.packed
	if e.nAccess == 0 || e.missingAt != noTime {
		return Access{}, false
	}
	now := k.now()
	if isDue(now, unpackTime(e.expiry), unpackTime(e.obtainedAt), p.Margin) {
		return Access{}, false
	}
	if every := p.revalidate(); every >= 0 && (e.cold == nil || e.cold.pending == nil) && now.Sub(unpackTime(e.checkedAt)) >= every {
		return Access{}, false
	}
	if n.used.Load() == 0 {
		n.used.Store(1)
	}
	return Access{Token: e.accessToken(), Authorization: e.authorization(), Metadata: e.md}, true
}
