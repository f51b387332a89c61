// Package imitation holds imitations of providers that cannot be reached
// offline; each file imitates one, following the public document it cites.
// They serve tests only: in-process HTTP servers (httptest) that answer as
// the provider documents, record what they were sent for the tests to
// assert on, and say where they knowingly differ.
package imitation
