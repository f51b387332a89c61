package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// fieldInjector stands in front of Hydra's token endpoint and adds fields
// to each successful token response, as providers such as Salesforce add
// instance_url: the token responses are Hydra's own otherwise.
type fieldInjector struct {
	proxy *httputil.ReverseProxy
	mu    sync.Mutex
	// next are the fields added to the next responses, by grant type.
	next map[string]map[string]any
	// injected counts the responses changed, by grant type.
	injected map[string]int
}

func newFieldInjector(t *testing.T, target string) (*fieldInjector, string) {
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	fi := &fieldInjector{next: map[string]map[string]any{}, injected: map[string]int{}}
	fi.proxy = httputil.NewSingleHostReverseProxy(u)
	fi.proxy.ModifyResponse = func(resp *http.Response) error {
		grant, _ := resp.Request.Context().Value(grantKey{}).(string)
		fi.mu.Lock()
		add := fi.next[grant]
		fi.mu.Unlock()
		if resp.StatusCode != http.StatusOK || len(add) == 0 {
			return nil
		}
		var body map[string]any
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || json.Unmarshal(b, &body) != nil {
			resp.Body = io.NopCloser(bytes.NewReader(b))
			return nil
		}
		for k, v := range add {
			body[k] = v
		}
		b, _ = json.Marshal(body)
		resp.Body = io.NopCloser(bytes.NewReader(b))
		resp.ContentLength = int64(len(b))
		resp.Header.Set("Content-Length", strconv.Itoa(len(b)))
		fi.mu.Lock()
		fi.injected[grant]++
		fi.mu.Unlock()
		return nil
	}
	return fi, serve(t, fi)
}

type grantKey struct{}

func (fi *fieldInjector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	form, _ := url.ParseQuery(string(b))
	r.Body = io.NopCloser(bytes.NewReader(b))
	fi.proxy.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), grantKey{}, form.Get("grant_type"))))
}

func (fi *fieldInjector) set(grant string, fields map[string]any) {
	fi.mu.Lock()
	defer fi.mu.Unlock()
	fi.next[grant] = fields
}

func (fi *fieldInjector) count(grant string) int {
	fi.mu.Lock()
	defer fi.mu.Unlock()
	return fi.injected[grant]
}

// TestMetadataFromTokenResponse: a generic connector keeps fields of Hydra's
// token response (injected on their way) as the connection's metadata: in
// Vault with the token set, in the admin status, and as the upstream's host
// and a header. A refresh response that carries a field replaces its value;
// one that lacks a field keeps the old value.
func TestMetadataFromTokenResponse(t *testing.T) {
	h := newHydra(t)
	up := newUpstream(t, h)
	fi, tokenURL := newFieldInjector(t, h.PublicURL)
	c := h.createClient(t, "http://localhost:9080/oauth/callback", "client_secret_basic")
	apiHost := strings.TrimPrefix(up.URL, "http://")
	fi.set("authorization_code", map[string]any{"api_host": apiHost, "org": "acme-1"})
	fi.set("refresh_token", map[string]any{"org": "acme-2"})
	s := startSidecar(t, h, tokenURL, c, &upstream{API: up.API, URL: "http://{oauthconn.metadata.api_host}/base"}, sidecarOptions{
		connector: "metadata api_host org\n allowed_hosts 127.0.0.1:*",
	})
	connect(t, s, newBrowser())
	if n := fi.count("authorization_code"); n != 1 {
		t.Fatalf("%d token responses were given fields", n)
	}
	rec := s.stored(t, "demo")
	if rec["metadata.api_host"] != apiHost || rec["metadata.org"] != "acme-1" || rec["access_token"] == nil {
		t.Fatalf("Vault holds %v", keys(rec))
	}

	get := func() {
		t.Helper()
		resp, body := newBrowser().do(t, "GET", s.base+"/demo/items?x=1", "", "")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("proxied: %d %s", resp.StatusCode, body)
		}
		last := up.last(t)
		if last.Path != "/base/items" || last.RawQuery != "x=1" || last.Host != apiHost || !last.Active {
			t.Fatalf("the upstream got %s?%s on %s (active %v)", last.Path, last.RawQuery, last.Host, last.Active)
		}
	}
	get()

	status, body := adminDo(t, "POST", "/oauthconn/connectors/demo/refresh", "")
	if status != http.StatusOK || !strings.Contains(body, `"refreshed":true`) {
		t.Fatalf("refresh: %d %s", status, body)
	}
	if n := fi.count("refresh_token"); n != 1 {
		t.Fatalf("%d refresh responses were given fields", n)
	}
	after := s.stored(t, "demo")
	if after["access_token"] == rec["access_token"] || after["metadata.api_host"] != apiHost || after["metadata.org"] != "acme-2" {
		t.Fatalf("after the refresh Vault holds api_host %v, org %v (new token: %v)", after["metadata.api_host"], after["metadata.org"], after["access_token"] != rec["access_token"])
	}
	get()
	if up.last(t).Authorization != "Bearer "+after["access_token"].(string) {
		t.Fatal("the upstream did not get the refreshed token")
	}
	status, body = adminDo(t, "GET", "/oauthconn/connectors", "")
	if status != http.StatusOK || !strings.Contains(body, `"metadata":{"api_host":"`+apiHost+`","org":"acme-2"}`) {
		t.Fatalf("admin status: %d %s", status, body)
	}
}
