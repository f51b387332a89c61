# Sourced: exports VAULT_BIN and HYDRA_BIN, the paths of the pinned test
# servers that scripts/tools.sh builds.
: "${OAUTHCONN_TOOLS:=${XDG_CACHE_HOME:-$HOME/.cache}/caddy-oauthconn/bin}"
export OAUTHCONN_TOOLS
_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export VAULT_BIN="$OAUTHCONN_TOOLS/vault-$(awk '$1=="require" && $2=="github.com/hashicorp/vault" {print $3}' "$_root/tools/vault/go.mod")"
export HYDRA_BIN="$OAUTHCONN_TOOLS/hydra-$(awk '$1=="github.com/ory/hydra/v2" {print $2; exit}' "$_root/tools/hydra/go.mod")"
unset _root
