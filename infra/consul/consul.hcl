# Single-node Consul server for the KV configuration tree.
datacenter = "mindora"
server     = true
ui_config {
  enabled = true
}
telemetry {
  prometheus_retention_time = "60s"
  disable_hostname          = true
}
