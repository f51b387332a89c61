package caddymodule

import (
	"net/http"
	"sync"
)

// exchanges recycles the proxied requests' exchanges: one per request
// would be the handler's largest allocation, and its garbage the larger
// part of what the handler costs a busy proxy.
var exchanges = sync.Pool{New: func() any { return new(exchange) }}

// newExchange returns an exchange for r, zeroed but for h and r.
func newExchange(h *ProxyHandler, r *http.Request) *exchange {
	x := exchanges.Get().(*exchange)
	x.h, x.r = h, r
	return x
}

// recycle gives x back for another request once its own is answered. The
// exchange of a protocol switch (a WebSocket, also one over HTTP/2's
// extended CONNECT) is not recycled: the reverse proxy's tunnel may still
// write through x's response writers after ServeHTTP returns.
func (x *exchange) recycle() {
	if upgrades(x.r) {
		return
	}
	*x = exchange{}
	exchanges.Put(x)
}

// upgrades reports whether r asks to switch protocols.
func upgrades(r *http.Request) bool {
	_, upgrade := r.Header["Upgrade"]
	return upgrade || r.Method == http.MethodConnect
}
