# ACLs on, deny by default (rendered by the consul container at start: the management token
# comes from .env and is written to the container's /tmp only). consul-init creates the
# worker's policy and token; see infra/consul/policy-worker.hcl.
acl {
  enabled                  = true
  default_policy           = "deny"
  enable_token_persistence = true
  tokens {
    initial_management = "${CONSUL_MANAGEMENT_TOKEN}"
  }
}
