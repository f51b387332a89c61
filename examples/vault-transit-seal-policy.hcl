# What caddy-oauthconn needs of Vault's Transit engine, besides
# examples/vault-policy.hcl, with
#   store vault { encrypt transit caddy-oauthconn }
# Every write of a record that holds tokens encrypts them (update on
# encrypt/<key>), every read decrypts them (update on decrypt/<key>); the
# key's configuration is read once per process, to report a missing or
# non-derived key clearly (read on keys/<key>; optional). Nothing may
# create, rotate, export or delete the key.
#
# The key must be a derived key: each record's tokens are sealed under the
# key derived for the record's path.
#   vault secrets enable transit
#   vault write -f transit/keys/caddy-oauthconn derived=true
#   vault policy write caddy-oauthconn-seal examples/vault-transit-seal-policy.hcl

path "transit/encrypt/caddy-oauthconn" {
  capabilities = ["update"]
}

path "transit/decrypt/caddy-oauthconn" {
  capabilities = ["update"]
}

path "transit/keys/caddy-oauthconn" {
  capabilities = ["read"]
}
