# Shortcuts; each target is one command you can also type yourself.
.PHONY: run test check xcaddy

# Run the proxy with the example Caddyfile (embedded store).
run:
	go run ./cmd/caddy-oauthconn run --config Caddyfile.example

# Run every test against real Vault and Ory Hydra (built on first use).
test:
	scripts/test

# Formatting and static analysis, as CI runs them.
check:
	test -z "$$(gofmt -l .)"
	go vet ./...
	go run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

# Build a custom Caddy with xcaddy as xcaddy.toml says.
xcaddy:
	go run github.com/caddyserver/xcaddy/cmd/xcaddy@v0.4.5 $$(go run ./internal/buildmanifest/xcaddyargs)
