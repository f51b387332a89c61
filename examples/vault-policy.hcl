# Least-privilege Vault policy for caddy-oauthconn with
#   store vault { mount secret; prefix caddy-oauthconn }
# Records are read and written with check-and-set (data: create, read,
# update). On metadata: a new record's max_versions is set right after its
# first write, when its metadata exists (update; create is not needed);
# the current version is read to repair a record whose data went missing
# (read); records are listed (list) and deleted with all their versions
# (delete). Nothing else of Vault is needed.
#
#   vault policy write caddy-oauthconn examples/vault-policy.hcl

path "secret/data/caddy-oauthconn/*" {
  capabilities = ["create", "read", "update"]
}

path "secret/metadata/caddy-oauthconn/*" {
  capabilities = ["read", "update", "list", "delete"]
}
