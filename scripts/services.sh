#!/usr/bin/env bash
# Starts a real Vault (dev mode, KV v2 at secret/) and a real Ory Hydra
# (SQLite in a temporary file) with its login and consent app on loopback, for the tests,
# the benchmarks and the offline demo, and exports the environment that
# points at them. Meant to be sourced by scripts that stop the servers with
# services_stop on exit.
#
#   VAULT_ADDR VAULT_TOKEN HYDRA_PUBLIC_URL HYDRA_ADMIN_URL HYDRA_LOGIN_ADDR
set -euo pipefail

: "${OAUTHCONN_PORT_BASE:=18200}"
VAULT_PORT=$OAUTHCONN_PORT_BASE
HYDRA_PUBLIC_PORT=$((OAUTHCONN_PORT_BASE + 10)) # Vault also takes base+1 (cluster)
HYDRA_ADMIN_PORT=$((OAUTHCONN_PORT_BASE + 11))
HYDRA_LOGIN_PORT=$((OAUTHCONN_PORT_BASE + 12))
: "${HYDRA_TTL_ACCESS_TOKEN:=6s}"

services_dir=$(mktemp -d)
services_pids=()

services_stop() {
  for p in "${services_pids[@]:-}"; do
    [ -n "$p" ] && kill "$p" 2>/dev/null || true
  done
  for p in "${services_pids[@]:-}"; do
    [ -n "$p" ] && wait "$p" 2>/dev/null || true
  done
  rm -rf "$services_dir"
}

wait_http() { # url name log
  for _ in $(seq 1 150); do
    if curl -fsS -o /dev/null "$1" 2>/dev/null; then return 0; fi
    sleep 0.2
  done
  echo "$2 did not become ready at $1; its log:" >&2
  tail -n 40 "$3" >&2
  return 1
}

services_start() {
  export VAULT_ADDR="http://127.0.0.1:$VAULT_PORT"
  export VAULT_TOKEN="dev-root-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  "$VAULT_BIN" server -dev -dev-root-token-id="$VAULT_TOKEN" \
    -dev-listen-address="127.0.0.1:$VAULT_PORT" >"$services_dir/vault.log" 2>&1 &
  services_pids+=($!)

  export HYDRA_PUBLIC_URL="http://127.0.0.1:$HYDRA_PUBLIC_PORT"
  export HYDRA_ADMIN_URL="http://127.0.0.1:$HYDRA_ADMIN_PORT"
  export HYDRA_LOGIN_ADDR="127.0.0.1:$HYDRA_LOGIN_PORT"
  # A file, not DSN=memory: Hydra's in-memory SQLite vanishes ("Unable to
  # locate the table") once its pool closes the last connection, and
  # refuses concurrent writes. WAL, a busy timeout and transactions that
  # take the write lock when they begin queue the writers instead.
  local dsn="sqlite://$services_dir/hydra.sqlite?_fk=true&_journal_mode=WAL&_busy_timeout=30000&_txlock=immediate&max_conns=64&max_idle_conns=16"
  DSN="$dsn" "$HYDRA_BIN" migrate sql up -e --yes >"$services_dir/hydra-migrate.log" 2>&1 || {
    echo "Hydra's migrations failed; their log:" >&2
    tail -n 40 "$services_dir/hydra-migrate.log" >&2
    return 1
  }
  # Client secrets hashed with 1,000 PBKDF2 rounds, not 25,000: every
  # token request checks one, and Hydra's CPU is not what the benchmarks
  # measure (on 2 cores it competes with the proxies under test).
  DSN="$dsn" \
  SECRETS_SYSTEM="$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')" \
  URLS_SELF_ISSUER="$HYDRA_PUBLIC_URL" \
  URLS_LOGIN="http://$HYDRA_LOGIN_ADDR/login" \
  URLS_CONSENT="http://$HYDRA_LOGIN_ADDR/consent" \
  TTL_ACCESS_TOKEN="$HYDRA_TTL_ACCESS_TOKEN" \
  OIDC_DYNAMIC_CLIENT_REGISTRATION_ENABLED=true \
  WEBFINGER_OIDC_DISCOVERY_CLIENT_REGISTRATION_URL="$HYDRA_PUBLIC_URL/oauth2/register" \
  SERVE_PUBLIC_PORT=$HYDRA_PUBLIC_PORT SERVE_PUBLIC_HOST=127.0.0.1 \
  SERVE_ADMIN_PORT=$HYDRA_ADMIN_PORT SERVE_ADMIN_HOST=127.0.0.1 \
  OAUTH2_HASHERS_PBKDF2_ITERATIONS=1000 \
  LOG_LEVEL=warn \
    "$HYDRA_BIN" serve all --dev --sqa-opt-out >"$services_dir/hydra.log" 2>&1 &
  services_pids+=($!)

  # Hydra's login and consent app (every browser logs in as alice).
  (cd "$(dirname "${BASH_SOURCE[0]}")/.." && go build -o "$services_dir/loginapp" ./internal/hydradev/loginapp)
  "$services_dir/loginapp" >"$services_dir/loginapp.log" 2>&1 &
  services_pids+=($!)

  wait_http "$VAULT_ADDR/v1/sys/health" Vault "$services_dir/vault.log"
  wait_http "$HYDRA_PUBLIC_URL/health/ready" Hydra "$services_dir/hydra.log"
  wait_http "$HYDRA_ADMIN_URL/health/ready" "Hydra admin" "$services_dir/hydra.log"
}
