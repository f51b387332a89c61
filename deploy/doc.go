// Package deploy holds what runs caddy-oauthconn outside a checkout: the
// container image (Dockerfile, its default Caddyfile and the healthcheck
// command), a Kubernetes sidecar example and a systemd unit. It has no Go
// code of its own; its tests check those files statically: the Dockerfile's
// stages and user, the manifests decoded strictly into Kubernetes' API types
// against the Caddyfile they carry, and the unit with systemd-analyze.
package deploy
