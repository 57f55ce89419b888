# mindora-worker's Consul ACL policy: read its own settings and the apps' trees, register
# itself as the mindora-worker service. Nothing else (no KV writes: only consul-init and the
# operator, with the management token, change settings). {apps} is replaced by consul-init.
key_prefix "mindora/" {
  policy = "read"
}
key_prefix "global/" {
  policy = "read"
}
{apps}
service "mindora-worker" {
  policy = "write"
}
node_prefix "" {
  policy = "read"
}
agent_prefix "" {
  policy = "read"
}
