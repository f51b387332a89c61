package caddymodule

import (
	"embed"
	"html/template"
	"net/http"
	"unicode/utf8"
)

//go:embed pages/*.html
var pageFiles embed.FS

var pages = template.Must(template.ParseFS(pageFiles, "pages/*.html"))

// pageCSP allows the pages' inline styles and nothing else: no script, no
// framing, no outside resources.
const pageCSP = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"

func writePage(w http.ResponseWriter, status int, name string, data any) error {
	noStore(w)
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", pageCSP)
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
