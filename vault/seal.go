package vault

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"

	"github.com/hashicorp/vault/api"
)

// Transit says which key of Vault's Transit secrets engine seals the tokens
// of every record (see Config.Encrypt).
type Transit struct {
	// Key is the Transit key's name. It must be a derived key
	// (created with derived=true): each record's tokens are sealed with
	// the key derived for the record's path.
	Key string
	// Mount is where the Transit engine is mounted. Empty: "transit".
	Mount string
}

// sealedFields are the fields of a record that hold secrets usable on
// their own: a token record's access and refresh tokens. Every other field
// (expiry, state, lease) is bookkeeping, and stays readable so that the
// record can be inspected and repaired without Transit.
var sealedFields = []string{"access_token", "refresh_token"}

// sealedMarker is the field of a sealed record that names its sealed
// fields, space-separated. A record without it is read as plaintext, as
// every record written before sealing was configured is; its next write
// seals it.
const sealedMarker = "sealed"

// sealer encrypts and decrypts the sealed fields of records with a Transit
// key, each record's under the key derived for its path, so that a
// ciphertext moved to another record does not decrypt.
type sealer struct {
	client *api.Client
	mount  string
	key    string

	mu      sync.Mutex
	checked bool // the key exists and is derived

	memo sealMemo
}

// sealMemo remembers, for recently used records, which ciphertext each
// sealed field's plaintext was last sealed as or unsealed from. A write
// whose tokens are those the store just read or wrote (the refresh lease
// is taken with the tokens as they were) reuses their ciphertext, and a
// read of a record the store wrote or read last decrypts nothing: Transit
// is asked only for tokens that changed. The tokens are in the proxy's
// memory anyway, in its token cache. It holds at most memoSize records and
// forgets one at random beyond that.
type sealMemo struct {
	mu sync.Mutex
	m  map[string]map[string]sealedPair // record path → field → pair
}

type sealedPair struct{ plain, cipher string }

// memoSize bounds the memo: with Microsoft's tokens (JWTs of up to 2.5 KB,
// their ciphertext a third longer) about 12 MB at most.
const memoSize = 1024

func (m *sealMemo) get(path, field string) (sealedPair, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p, ok := m.m[path][field]
	return p, ok
}

func (m *sealMemo) put(path string, pairs map[string]sealedPair) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.m == nil {
		m.m = make(map[string]map[string]sealedPair)
	}
	if _, ok := m.m[path]; !ok && len(m.m) >= memoSize {
		for k := range m.m { // Go's map order: a random record
			delete(m.m, k)
			break
		}
	}
	m.m[path] = pairs
}

func newSealer(client *api.Client, t *Transit) (*sealer, error) {
	if t.Key == "" {
		return nil, errors.New("vault: encrypt transit: the key name is required")
	}
	if strings.ContainsAny(t.Key, "/?#") {
		return nil, fmt.Errorf("vault: encrypt transit: key name %q must not contain a slash, '?' or '#'", t.Key)
	}
	mount := strings.Trim(t.Mount, "/")
	if mount == "" {
		mount = "transit"
	}
	return &sealer{client: client, mount: mount, key: t.Key}, nil
}

// checkKey makes sure, once, that the key exists and is derived, so that a
// missing or mistaken key is reported as such rather than as a failed
// encryption (or silently created by a token that may create keys).
// Without read access to the key's configuration the check is left to the
// encryption itself.
func (s *sealer) checkKey(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.checked {
		return nil
	}
	sec, err := s.client.Logical().ReadWithContext(ctx, s.mount+"/keys/"+s.key)
	var re *api.ResponseError
	switch {
	case errors.As(err, &re) && re.StatusCode == http.StatusForbidden:
		s.checked = true
		return nil
	case err != nil:
		return fmt.Errorf("vault: reading transit key %q at %s/: %w", s.key, s.mount, cleanErr(err))
	case sec == nil || sec.Data == nil:
		return fmt.Errorf("vault: transit key %q does not exist at %s/; create it with: vault write -f %s/keys/%s derived=true",
			s.key, s.mount, s.mount, s.key)
	}
	if derived, _ := sec.Data["derived"].(bool); !derived {
		return fmt.Errorf("vault: transit key %q at %s/ is not a derived key; the store seals each record under the key derived for its path: create a key with derived=true (a key's derivation cannot be changed)",
			s.key, s.mount)
	}
	s.checked = true
	return nil
}

// seal returns data with its sealed fields encrypted and the marker that
// names them; data itself is left as it was.
func (s *sealer) seal(ctx context.Context, kvPath string, data map[string]string) (map[string]string, error) {
	var names, todo []string
	pairs := make(map[string]sealedPair, len(sealedFields))
	for _, f := range sealedFields {
		if data[f] == "" {
			continue
		}
		names = append(names, f)
		if p, ok := s.memo.get(kvPath, f); ok && p.plain == data[f] {
			pairs[f] = p
		} else {
			todo = append(todo, f)
		}
	}
	if len(names) == 0 {
		return data, nil
	}
	if len(todo) > 0 {
		if err := s.checkKey(ctx); err != nil {
			return nil, err
		}
		c := context64(kvPath)
		in := make([]map[string]any, len(todo))
		for i, f := range todo {
			in[i] = map[string]any{"plaintext": base64.StdEncoding.EncodeToString([]byte(data[f])), "context": c}
		}
		out, err := s.batch(ctx, "encrypt", in, "ciphertext")
		if err != nil {
			return nil, err
		}
		for i, f := range todo {
			pairs[f] = sealedPair{plain: data[f], cipher: out[i]}
		}
	}
	sealed := make(map[string]string, len(data)+1)
	for k, v := range data {
		sealed[k] = v
	}
	for _, f := range names {
		sealed[f] = pairs[f].cipher
	}
	sealed[sealedMarker] = strings.Join(names, " ")
	s.memo.put(kvPath, pairs)
	return sealed, nil
}

// unseal decrypts, in place, the fields of a record read from Vault that
// its marker names, and removes the marker.
func (s *sealer) unseal(ctx context.Context, kvPath string, data map[string]string) error {
	names := strings.Fields(data[sealedMarker])
	delete(data, sealedMarker)
	if len(names) == 0 {
		return nil
	}
	var todo []string
	pairs := make(map[string]sealedPair, len(names))
	for _, f := range names {
		if p, ok := s.memo.get(kvPath, f); ok && p.cipher == data[f] {
			pairs[f] = p
		} else {
			todo = append(todo, f)
		}
	}
	if len(todo) > 0 {
		c := context64(kvPath)
		in := make([]map[string]any, len(todo))
		for i, f := range todo {
			in[i] = map[string]any{"ciphertext": data[f], "context": c}
		}
		out, err := s.batch(ctx, "decrypt", in, "plaintext")
		if err != nil {
			return err
		}
		for i, f := range todo {
			b, err := base64.StdEncoding.DecodeString(out[i])
			if err != nil {
				return fmt.Errorf("vault: transit decrypt of %s: the plaintext is not base64", f)
			}
			pairs[f] = sealedPair{plain: string(b), cipher: data[f]}
		}
	}
	for _, f := range names {
		data[f] = pairs[f].plain
	}
	s.memo.put(kvPath, pairs)
	return nil
}

// batch sends one Transit batch request (op is encrypt or decrypt) and
// returns each item's result field, in order.
func (s *sealer) batch(ctx context.Context, op string, in []map[string]any, field string) ([]string, error) {
	sec, err := s.client.Logical().WriteWithContext(ctx, s.mount+"/"+op+"/"+s.key, map[string]any{"batch_input": in})
	if err != nil {
		return nil, fmt.Errorf("vault: transit %s with key %q at %s/: %w", op, s.key, s.mount, cleanErr(err))
	}
	if sec == nil || sec.Data == nil {
		return nil, fmt.Errorf("vault: transit %s with key %q at %s/: empty answer", op, s.key, s.mount)
	}
	results, _ := sec.Data["batch_results"].([]any)
	if len(results) != len(in) {
		return nil, fmt.Errorf("vault: transit %s with key %q at %s/: %d results for %d items", op, s.key, s.mount, len(results), len(in))
	}
	out := make([]string, len(in))
	for i, r := range results {
		m, _ := r.(map[string]any)
		if e, _ := m["error"].(string); e != "" {
			// Vault's item errors name the problem, never the data.
			return nil, fmt.Errorf("vault: transit %s with key %q at %s/: %s", op, s.key, s.mount, e)
		}
		v, _ := m[field].(string)
		if v == "" {
			return nil, fmt.Errorf("vault: transit %s with key %q at %s/: no %s in the answer", op, s.key, s.mount, field)
		}
		out[i] = v
	}
	return out, nil
}

// context64 is the Transit context of a record: its KV path, so that a
// ciphertext decrypts only for the record it was written to.
func context64(kvPath string) string { return base64.StdEncoding.EncodeToString([]byte(kvPath)) }

// capabilities are what sealing needs of the token on the Transit paths.
func (s *sealer) capabilities() []struct{ path, caps string } {
	return []struct{ path, caps string }{
		{s.mount + "/encrypt/" + s.key, "update"},
		{s.mount + "/decrypt/" + s.key, "update"},
	}
}
