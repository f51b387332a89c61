package tokens

import (
	"context"
	"fmt"
	"testing"
	"time"

	"golang.org/x/oauth2"
)

// pickingRefresher is a Refresher whose connector keeps the token
// response's "instance_url" and "org" as metadata.
type pickingRefresher struct{ *scriptedRefresher }

func (pickingRefresher) PickMetadata(ot *oauth2.Token) map[string]string {
	out := map[string]string{}
	for _, name := range []string{"instance_url", "org"} {
		if v, ok := ot.Extra(name).(string); ok {
			out[name] = v
		}
	}
	return out
}

// TestMetadataLifecycle: metadata saved with a connection is in its record
// and its status; a refresh response's fields replace it, one without them
// keeps it; a disconnect leaves none behind.
func TestMetadataLifecycle(t *testing.T) {
	clk := &clock{t: time.Now()}
	st := newFileStore(t)
	k := NewKeeper(Options{Store: st, Now: clk.Now})
	t.Cleanup(k.Wait)
	answers := []map[string]any{{"instance_url": "https://two.my.salesforce.com"}, nil}
	r := pickingRefresher{&scriptedRefresher{answer: func(n int, _ string) (*oauth2.Token, error) {
		ot := &oauth2.Token{AccessToken: fmt.Sprint("at-", n), RefreshToken: fmt.Sprint("rt-", n), Expiry: clk.Now().Add(time.Hour)}
		if a := answers[n-1]; a != nil {
			ot = ot.WithExtra(a)
		}
		return ot, nil
	}}}
	_, err := k.SaveWithMetadata(context.Background(), demo, &oauth2.Token{AccessToken: "at-0", RefreshToken: "rt-0", Expiry: clk.Now().Add(time.Hour)},
		"alice", map[string]string{"instance_url": "https://one.my.salesforce.com", "org": "00D1"})
	if err != nil {
		t.Fatal(err)
	}
	if m := stored(t, st, demo); m["metadata.instance_url"] != "https://one.my.salesforce.com" || m["metadata.org"] != "00D1" || m["schema"] != "3" {
		t.Fatalf("record %v", m)
	}
	s, err := k.Status(context.Background(), demo)
	if err != nil || get(s.Metadata, "instance_url") != "https://one.my.salesforce.com" {
		t.Fatalf("status %+v %v", s, err)
	}
	for i, want := range []string{"https://two.my.salesforce.com", "https://two.my.salesforce.com"} {
		tok, _, err := k.ForceRefresh(context.Background(), demo, r)
		if err != nil {
			t.Fatal(err)
		}
		if get(tok.Metadata, "instance_url") != want || get(tok.Metadata, "org") != "00D1" {
			t.Fatalf("refresh %d: metadata %v", i+1, tok.Metadata)
		}
		if m := stored(t, st, demo); m["metadata.instance_url"] != want || m["metadata.org"] != "00D1" {
			t.Fatalf("refresh %d: record %v", i+1, m)
		}
	}
	k.Forget(demo)
	tok, err := k.Token(context.Background(), demo, r, policy)
	if err != nil || get(tok.Metadata, "instance_url") != "https://two.my.salesforce.com" {
		t.Fatalf("read back: %v %v", tok.Metadata, err)
	}
	if err := k.Disconnect(context.Background(), demo); err != nil {
		t.Fatal(err)
	}
	for f := range stored(t, st, demo) {
		if len(f) > 9 && f[:9] == "metadata." {
			t.Fatalf("the tombstone keeps %s", f)
		}
	}
}

func get(md Metadata, name string) string {
	v, _ := md.Get(name)
	return v
}

func TestMergeMetadata(t *testing.T) {
	old := NewMetadata(map[string]string{"a": "1"})
	if got := mergeMetadata(old, nil); got != old {
		t.Fatal("nothing picked made new metadata")
	}
	if got := mergeMetadata(old, map[string]string{"a": "1"}); got != old {
		t.Fatal("an unchanged value made new metadata")
	}
	got := mergeMetadata(old, map[string]string{"a": "2", "b": "3"})
	if get(got, "a") != "2" || get(got, "b") != "3" || get(old, "a") != "1" || got.Len() != 2 {
		t.Fatalf("%v, old %v", got.Map(), old.Map())
	}
	if got := mergeMetadata(Metadata{}, map[string]string{"a": "1"}); get(got, "a") != "1" {
		t.Fatal(got.Map())
	}
	if (Metadata{}).Map() != nil || NewMetadata(nil).Len() != 0 {
		t.Fatal("empty metadata")
	}
}
