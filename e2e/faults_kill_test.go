package e2e

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/caddy-oauthconn/caddy-oauthconn/filestore"
)

// TestFaultKillAfterRotation proves that a process killed with SIGKILL right
// after it stored a rotated refresh token (no shutdown, no lease given
// back) loses nothing: restarted on the same store, it serves the
// connection and refreshes it again without anybody authorizing, and no
// refresh token is redeemed twice. For the embedded file store and for
// Vault.
func TestFaultKillAfterRotation(t *testing.T) {
	for _, kind := range []string{"file", "vault"} {
		t.Run(kind, func(t *testing.T) {
			w := newFaultWorld(t, fmt.Sprintf("http://localhost:%d/oauth/callback", portKill), 0) // 6 s tokens
			dir := t.TempDir()
			store, storedRT := w.vaultStore(), func() string { return w.storedRT(t) }
			if kind == "file" {
				key := make([]byte, filestore.KeySize)
				rand.Read(key)
				path := filepath.Join(dir, "oauthconn")
				store = fmt.Sprintf("store file {\n\t\t\tpath %s\n\t\t\tkey %s\n\t\t}", path, base64.StdEncoding.EncodeToString(key))
				fs, err := filestore.New(filepath.Join(path, "records"), key)
				if err != nil {
					t.Fatal(err)
				}
				storedRT = func() string {
					e, err := fs.Get(context.Background(), "tokens/demo")
					if err != nil {
						return ""
					}
					return e.Data["refresh_token"]
				}
			}
			env := w.replicaEnv(portKill)
			r := startBinary(t, portKill, store, "refresh_margin 2s", env, dir)
			connect(t, &sidecar{base: r.url()}, newBrowser())
			app := r.url() + "/demo/items"
			first := storedRT()
			if first == "" {
				t.Fatal("the store holds no refresh token after connecting")
			}

			l := startLoad(t, 5, time.Minute, app)
			rotated := waitUntil(15*time.Second, func() bool { rt := storedRT(); return rt != first && rt == w.tok.LastIssued() })
			r.kill()
			before := l.Stop()
			if !rotated {
				t.Fatalf("no rotation was stored (%s); %s", summary(before), w.tokenReport())
			}

			r = startBinary(t, portKill, store, "refresh_margin 2s", env, dir)
			app = r.url() + "/demo/items"
			n := w.tok.Succeeded("refresh_token")
			l = startLoad(t, 5, time.Minute, app)
			// A lease the killed process held runs out after 30 s.
			ok := waitUntil(45*time.Second, func() bool {
				return w.tok.Succeeded("refresh_token") > n && storedRT() == w.tok.LastIssued()
			})
			after := l.Stop()
			if !ok {
				t.Errorf("no refresh stored within 45 s of the restart (%s); %s", summary(after), w.tokenReport())
			}
			checkNoReauthorization(t, before)
			checkNoReauthorization(t, after)
			checkUnavailable(t, after, "token_unavailable")
			if w.tok.RedeemedTwice() != 0 || w.tok.ConcurrentRedemptions() != 0 || w.tok.Count("authorization_code") != 1 {
				t.Errorf("the chain broke: %s", w.tokenReport())
			}
			if o := get(http.DefaultClient, app); o.status != http.StatusOK {
				t.Errorf("after the restart: %v", o)
			}
			t.Logf("after the restart: %s", summary(after))
		})
	}
}
