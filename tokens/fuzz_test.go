package tokens

import (
	"encoding/json"
	"testing"
	"time"

	"golang.org/x/oauth2"
)

// FuzzTokenResponse decodes arbitrary token endpoint responses as
// x/oauth2 does into a stored record and back: it must not panic, and a
// record must read back as the token it was written from.
func FuzzTokenResponse(f *testing.F) {
	for _, s := range []string{
		`{"access_token":"a","token_type":"bearer","expires_in":3600,"refresh_token":"r","scope":"x y"}`,
		`{"access_token":"a","refresh_token_expires_in":"600"}`,
		`{"access_token":"secret_x","token_type":"bearer","bot_id":"b","owner":{"type":"user"}}`,
		`{"access_token":"a","expires_in":-5,"scope":7}`, `{}`, `[]`, `null`,
	} {
		f.Add(s)
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, body string) {
		var raw map[string]any
		if json.Unmarshal([]byte(body), &raw) != nil || raw == nil {
			return
		}
		ot := &oauth2.Token{}
		ot.AccessToken, _ = raw["access_token"].(string)
		ot.RefreshToken, _ = raw["refresh_token"].(string)
		ot.TokenType, _ = raw["token_type"].(string)
		if secs, ok := raw["expires_in"].(float64); ok && secs > 0 && secs < 1e9 {
			ot.Expiry = now.Add(time.Duration(secs) * time.Second)
		}
		ot = ot.WithExtra(raw)
		tok := FromOAuth2(ot, Token{RefreshToken: "prev"}, now)
		rec, err := parseRecord(record{tok: tok}.fields())
		back := rec.tok
		if tok.AccessToken == "" && tok.RefreshToken == "" {
			if err == nil {
				t.Fatal("a record with no token was accepted")
			}
			return
		}
		if err != nil {
			t.Fatalf("record of %s does not read back: %v", body, err)
		}
		// Times are stored to the second.
		tok.Expiry, back.Expiry = tok.Expiry.Truncate(time.Second), back.Expiry.Truncate(time.Second)
		tok.RefreshExpiry, back.RefreshExpiry = tok.RefreshExpiry.Truncate(time.Second), back.RefreshExpiry.Truncate(time.Second)
		if !tok.Expiry.Equal(back.Expiry) || !tok.RefreshExpiry.Equal(back.RefreshExpiry) {
			t.Fatalf("times changed: %+v vs %+v", tok, back)
		}
		tok.Expiry, tok.RefreshExpiry = back.Expiry, back.RefreshExpiry
		if tok != back {
			t.Fatalf("round trip of %s: %+v != %+v", body, tok, back)
		}
	})
}
