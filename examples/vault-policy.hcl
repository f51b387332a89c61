# Least-privilege Vault policy for caddy-oauthconn with
#   store vault { mount secret; prefix caddy-oauthconn }
# Records are written with check-and-set and deleted with all their versions
# (metadata delete); nothing else of Vault is needed.
#
#   vault policy write caddy-oauthconn examples/vault-policy.hcl

path "secret/data/caddy-oauthconn/*" {
  capabilities = ["create", "read", "update"]
}

path "secret/metadata/caddy-oauthconn/*" {
  capabilities = ["list", "delete"]
}
