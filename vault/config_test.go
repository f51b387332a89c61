package vault

import (
	"context"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

// These tests need no Vault: they check how the client is configured.

func TestClientBoundsDefaults(t *testing.T) {
	t.Setenv(api.EnvVaultClientTimeout, "")
	t.Setenv(api.EnvVaultMaxRetries, "")
	s, err := New(Config{Address: "http://127.0.0.1:1", Token: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Client().ClientTimeout(); got != 5*time.Second {
		t.Errorf("timeout = %v, want 5s", got)
	}
	if got := s.Client().MaxRetries(); got != 1 {
		t.Errorf("retries = %d, want 1", got)
	}
}

func TestClientBoundsConfigured(t *testing.T) {
	tests := []struct {
		name        string
		envTimeout  string
		envRetries  string
		cfg         Config
		wantTimeout time.Duration
		wantRetries int
	}{
		{"explicit", "", "", Config{Timeout: 2 * time.Second, MaxRetries: 3}, 2 * time.Second, 3},
		{"no retries", "", "", Config{MaxRetries: -1}, DefaultTimeout, 0},
		{"environment", "7s", "4", Config{}, 7 * time.Second, 4},
		{"explicit over environment", "7s", "4", Config{Timeout: time.Second, MaxRetries: -1}, time.Second, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(api.EnvVaultClientTimeout, tt.envTimeout)
			t.Setenv(api.EnvVaultMaxRetries, tt.envRetries)
			tt.cfg.Address, tt.cfg.Token = "http://127.0.0.1:1", "x"
			s, err := New(tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			if got := s.Client().ClientTimeout(); got != tt.wantTimeout {
				t.Errorf("timeout = %v, want %v", got, tt.wantTimeout)
			}
			if got := s.Client().MaxRetries(); got != tt.wantRetries {
				t.Errorf("retries = %d, want %d", got, tt.wantRetries)
			}
		})
	}
	if _, err := New(Config{Timeout: -time.Second}); err == nil {
		t.Error("a negative timeout was accepted")
	}
}

// TestBlackHoledVault: a Vault that accepts connections and never answers
// fails a call after the timeout, retries included, not after minutes.
func TestBlackHoledVault(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer ln.Close()
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				io.Copy(io.Discard, c) // until the client gives up
				c.Close()
			}()
		}
	}()
	const token = "hvs.canary-vault-token-0123456789"
	s, err := New(Config{Address: "http://" + ln.Addr().String(), Token: token, Timeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = s.Get(context.Background(), "tokens/demo")
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("Get took %v", took)
	}
	if err == nil {
		t.Fatal("Get from a Vault that never answers succeeded")
	}
	if strings.Contains(err.Error(), token) {
		t.Fatalf("error %q carries the token", err)
	}
}
