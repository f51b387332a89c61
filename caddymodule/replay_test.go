package caddymodule

import (
	"errors"
	"io"
	"strings"
	"testing"
)

func TestReplayBody(t *testing.T) {
	const body = "0123456789abcdefghij"
	tests := []struct {
		name      string
		firstRead int // bytes the first attempt reads before the retry
	}{
		{"first attempt read nothing", 0},
		{"first attempt read part", 7},
		{"first attempt read all", len(body)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newReplayBody(strings.NewReader(body), int64(len(body)))
			first := b.attempt()
			got := make([]byte, tt.firstRead)
			if _, err := io.ReadFull(first, got); err != nil {
				t.Fatal(err)
			}
			if string(got) != body[:tt.firstRead] {
				t.Fatalf("first attempt read %q", got)
			}
			retry := b.attempt()
			if _, err := first.Read(make([]byte, 4)); !errors.Is(err, errBodySuperseded) {
				t.Fatalf("first attempt after the retry started: err = %v", err)
			}
			all, err := io.ReadAll(retry)
			if err != nil || string(all) != body {
				t.Fatalf("retry read %q, %v; want the whole body", all, err)
			}
			b.release()
			if _, err := retry.Read(make([]byte, 1)); !errors.Is(err, errBodySuperseded) {
				t.Fatalf("read after release: err = %v", err)
			}
		})
	}
}

// TestReplayBodyGrowsWithWhatArrives: a declared length is not allocated
// up front; the copy holds what the first attempt actually read.
func TestReplayBodyGrowsWithWhatArrives(t *testing.T) {
	const declared = 1 << 20
	b := newReplayBody(strings.NewReader("small"), declared)
	defer b.release()
	if c := cap(b.seen); c >= declared {
		t.Fatalf("a copy of capacity %d before anything arrived", c)
	}
	p := make([]byte, 64)
	n, _ := b.attempt().Read(p)
	if string(b.seen) != "small" || n != 5 {
		t.Fatalf("copy %q after reading %d", b.seen, n)
	}
	if got, _ := io.ReadAll(b.attempt()); string(got) != "small" {
		t.Fatalf("retry read %q", got)
	}
}
