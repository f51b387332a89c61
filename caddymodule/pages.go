package caddymodule

import (
	"embed"
	"html/template"
	"net/http"
	"path"
	"unicode/utf8"
)

//go:embed pages/*.html pages/assets/*.js
var pageFiles embed.FS

var pages = template.Must(template.ParseFS(pageFiles, "pages/*.html"))

// pageCSP allows the pages' inline styles and nothing else: no script, no
// framing, no outside resources. The error pages use it.
const pageCSP = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"

// scriptCSP adds this server's own scripts and requests, for the connect
// page and the popup's success page; still no inline script, no framing.
const scriptCSP = "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"

func writePage(w http.ResponseWriter, status int, name string, data any) error {
	noStore(w)
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	csp := pageCSP
	if name != "error.html" {
		csp = scriptCSP
	}
	h.Set("Content-Security-Policy", csp)
	h.Set("X-Frame-Options", "DENY")
	w.WriteHeader(status)
	return pages.ExecuteTemplate(w, name, data)
}

// errorPage is the data of the callback's error page. Every field is
// HTML-escaped by the template; Detail comes from the provider and is
// length-capped.
type errorPage struct {
	Reason string
	Detail string
	Back   string
}

func writeErrorPage(w http.ResponseWriter, status int, back, reason, detail string) error {
	return writePage(w, status, "error.html", errorPage{Reason: reason, Detail: capText(detail, 300), Back: back})
}

// capText shortens s to at most n bytes of valid UTF-8.
func capText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s + "…"
}

// serveAsset serves the connect page's scripts from the binary.
func serveAsset(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("file")
	b, err := pageFiles.ReadFile("pages/assets/" + name)
	if err != nil || path.Ext(name) != ".js" {
		http.NotFound(w, r)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/javascript; charset=utf-8")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Content-Type-Options", "nosniff")
	w.Write(b)
}
