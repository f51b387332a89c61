// Package redact prints and logs values that hold secrets without them. A
// type with secret fields implements fmt.Formatter and
// zapcore.ObjectMarshaler with Format and Object, naming the fields to
// hide: its other fields show as they are, so that a field added later is
// visible without being listed, and a secret shows only whether it is set.
//
// fmt calls neither for %p (it prints the value without its methods), nor
// for a value in another struct's unexported field: such a container needs
// a Format of its own before it is printed.
package redact

import (
	"fmt"
	"reflect"
	"slices"

	"go.uber.org/zap/zapcore"
)

// Marker is what shows in place of a secret that is set.
const Marker = "<redacted>"

// Format writes v, a struct, to f as Type{Field:value …} for every verb
// (but %T and %p, which fmt answers itself), with the fields named in
// secret shown as Marker, or as <empty> when empty. Unexported fields are
// left out.
func Format(f fmt.State, v any, secret ...string) {
	rv := reflect.ValueOf(v)
	fmt.Fprintf(f, "%s{", rv.Type())
	first := true
	fields(rv, secret, func(name, value string) {
		if !first {
			fmt.Fprint(f, " ")
		}
		first = false
		fmt.Fprintf(f, "%s:%s", name, value)
	})
	fmt.Fprint(f, "}")
}

// Object adds v's fields, as Format shows them, to enc.
func Object(enc zapcore.ObjectEncoder, v any, secret ...string) error {
	fields(reflect.ValueOf(v), secret, enc.AddString)
	return nil
}

// fields calls add with each exported field of the struct rv, by name, as
// Format shows it.
func fields(rv reflect.Value, secret []string, add func(name, value string)) {
	t := rv.Type()
	for i := range t.NumField() {
		sf := t.Field(i)
		if !sf.IsExported() {
			continue
		}
		fv := rv.Field(i)
		switch {
		case !slices.Contains(secret, sf.Name):
			add(sf.Name, fmt.Sprintf("%v", fv.Interface()))
		case fv.IsZero():
			add(sf.Name, "<empty>")
		default:
			add(sf.Name, Marker)
		}
	}
}
