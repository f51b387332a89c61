package main

import (
	"bytes"
	"io"
	"net/http"
	"slices"
	"sync"
	"time"
)

// result is what one load run measured.
type result struct {
	requests, failures int
	elapsed            time.Duration
	latencies          []time.Duration
}

func (r result) throughput() float64 { return float64(r.requests) / r.elapsed.Seconds() }

func (r result) percentile(p float64) time.Duration {
	if len(r.latencies) == 0 {
		return 0
	}
	s := slices.Clone(r.latencies)
	slices.Sort(s)
	i := int(p * float64(len(s)-1))
	return s[i]
}

func newClient(conns int) *http.Client {
	return &http.Client{
		Timeout: 60 * time.Second,
		Transport: &http.Transport{
			MaxIdleConns: conns, MaxIdleConnsPerHost: conns, MaxConnsPerHost: 0,
			DisableCompression: true, IdleConnTimeout: time.Minute,
		},
	}
}

// burst sends n requests at once, one per goroutine, and records each
// latency.
func burst(c *http.Client, urls []string, n int) result {
	res := result{latencies: make([]time.Duration, n)}
	ok := make([]bool, n)
	start := time.Now()
	var wg sync.WaitGroup
	gate := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-gate
			t0 := time.Now()
			ok[i] = do(c, http.MethodGet, urls[i%len(urls)], nil)
			res.latencies[i] = time.Since(t0)
		}()
	}
	close(gate)
	wg.Wait()
	res.elapsed = time.Since(start)
	res.requests = n
	for _, v := range ok {
		if !v {
			res.failures++
		}
	}
	return res
}

func do(c *http.Client, method, url string, body []byte) bool {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return false
	}
	resp, err := c.Do(req)
	if err != nil {
		return false
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}
