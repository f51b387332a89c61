#!/usr/bin/env bash
# Builds the test servers, Vault and Ory Hydra, from their Go modules (the
# tools/ modules pin them) unless a binary of the pinned version is already
# in the tool directory. Prints nothing but errors; exits non-zero if a build
# fails. Usage: scripts/tools.sh [vault|hydra]...
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/tools.env.sh
mkdir -p "$OAUTHCONN_TOOLS"

build_vault() {
  [ -x "$VAULT_BIN" ] && return 0
  echo "building $(basename "$VAULT_BIN") (several minutes on first run)…" >&2
  (cd tools/vault && go build -tags minimal -trimpath -ldflags='-s -w' -o "$VAULT_BIN.tmp" . && mv "$VAULT_BIN.tmp" "$VAULT_BIN")
}

build_hydra() {
  [ -x "$HYDRA_BIN" ] && return 0
  echo "building $(basename "$HYDRA_BIN") (a few minutes on first run)…" >&2
  (cd tools/hydra && go build -tags sqlite -trimpath -ldflags='-s -w' -o "$HYDRA_BIN.tmp" github.com/ory/hydra/v2 && mv "$HYDRA_BIN.tmp" "$HYDRA_BIN")
}

targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(vault hydra)
pids=()
for t in "${targets[@]}"; do
  case "$t" in
    vault) build_vault & pids+=($!) ;;
    hydra) build_hydra & pids+=($!) ;;
    *) echo "unknown tool $t" >&2; exit 2 ;;
  esac
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done
exit $rc
