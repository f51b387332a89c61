# Vault policy for a connector that signs its private_key_jwt client
# assertions with Vault Transit:
#   client_key vault_transit graph-app transit
# The private key never leaves Vault: the proxy asks Transit to sign each
# assertion (update on sign/<key>) and reads the key's public half for the
# assertion's kid (read on keys/<key>). Nothing else of Transit is needed;
# in particular not export, decrypt or keys/<key> updates.
# The store's token needs this policy besides examples/vault-policy.hcl:
#
#   vault secrets enable transit
#   vault write -f transit/keys/graph-app type=rsa-2048
#   vault policy write caddy-oauthconn-transit examples/vault-transit-sign-policy.hcl

path "transit/sign/graph-app" {
  capabilities = ["update"]
}

path "transit/keys/graph-app" {
  capabilities = ["read"]
}
