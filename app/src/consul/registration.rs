//! Service registration: one `mindora-worker` instance per replica in the local Consul agent,
//! with a health check, kept registered while the worker runs (Consul restarted or forgot
//! it: registered again) and removed on graceful shutdown. A killed worker is reaped by
//! Consul after `DeregisterCriticalServiceAfter`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::client::{ConsulClient, ConsulError};
use super::{backoff, metric_names};

/// Service name every worker registers under.
pub const SERVICE_NAME: &str = "mindora-worker";

/// Body of `PUT /v1/agent/service/register` (Consul's field names).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceRegistration {
    /// Unique per replica.
    #[serde(rename = "ID")]
    pub id: String,
    /// [`SERVICE_NAME`].
    pub name: String,
    /// `queue:<name>`, `source:<redis|amqp>`, `version:<semver>`.
    pub tags: Vec<String>,
    /// Address other services (and the HTTP check) reach this replica on.
    pub address: String,
    /// Metrics/health port, when served.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// `concurrency`, `queues`, `version`, `worker_name`.
    pub meta: BTreeMap<String, String>,
    /// The health check.
    pub check: CheckDefinition,
}

/// A check definition inside a registration (Consul's field names).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CheckDefinition {
    /// Check id (used for TTL updates).
    #[serde(rename = "CheckID")]
    pub check_id: String,
    /// Human name.
    pub name: String,
    /// URL the agent GETs (HTTP check).
    #[serde(rename = "HTTP", skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    /// HTTP method of the check.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// How often the agent runs the HTTP check.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// HTTP check timeout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// TTL check: critical unless passed within this time.
    #[serde(rename = "TTL", skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    /// Consul removes the instance after its check is critical this long (killed worker).
    pub deregister_critical_service_after: String,
}

/// What changes at run time in a registration (tags and meta follow live settings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announced {
    /// Current queue list.
    pub queues: Vec<String>,
    /// Current concurrency.
    pub concurrency: usize,
}

/// What does not change while the process runs.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Consul service id (unique per replica).
    pub service_id: String,
    /// rq worker name.
    pub worker_name: String,
    /// Advertised address.
    pub address: String,
    /// Port of `/healthz` (HTTP check); `None`: TTL check updated by the worker.
    pub health_port: Option<u16>,
    /// `redis`, `amqp`.
    pub sources: Vec<&'static str>,
    /// Crate version.
    pub version: String,
    /// HTTP check interval / TTL period.
    pub check_interval: Duration,
    /// `DeregisterCriticalServiceAfter`.
    pub deregister_after: Duration,
}

fn go_duration(d: Duration) -> String {
    format!("{}s", d.as_secs().max(1))
}

impl Identity {
    /// The registration body for the current live values.
    pub fn registration(&self, live: &Announced) -> ServiceRegistration {
        let mut tags: Vec<String> = live.queues.iter().map(|q| format!("queue:{q}")).collect();
        tags.extend(self.sources.iter().map(|s| format!("source:{s}")));
        tags.push(format!("version:{}", self.version));
        let meta = BTreeMap::from([
            ("concurrency".to_string(), live.concurrency.to_string()),
            ("queues".to_string(), live.queues.join(",")),
            ("version".to_string(), self.version.clone()),
            ("worker_name".to_string(), self.worker_name.clone()),
        ]);
        let check_id = format!("service:{}", self.service_id);
        let after = go_duration(self.deregister_after.max(Duration::from_secs(60)));
        let check = match self.health_port {
            Some(port) => CheckDefinition {
                check_id,
                name: "mindora-worker /healthz".into(),
                http: Some(format!("http://{}:{port}/healthz", host(&self.address))),
                method: Some("GET".into()),
                interval: Some(go_duration(self.check_interval)),
                timeout: Some(go_duration(self.check_interval.min(Duration::from_secs(5)))),
                ttl: None,
                deregister_critical_service_after: after,
            },
            None => CheckDefinition {
                check_id,
                name: "mindora-worker heartbeat".into(),
                http: None,
                method: None,
                interval: None,
                timeout: None,
                ttl: Some(go_duration(self.check_interval * 3)),
                deregister_critical_service_after: after,
            },
        };
        ServiceRegistration {
            id: self.service_id.clone(),
            name: SERVICE_NAME.into(),
            tags,
            address: self.address.clone(),
            port: self.health_port,
            meta,
            check,
        }
    }
}

/// IPv6 literals need brackets in a URL.
fn host(address: &str) -> String {
    if address.contains(':') && !address.starts_with('[') {
        format!("[{address}]")
    } else {
        address.to_string()
    }
}

/// A Consul service id from the worker name: letters, digits, `-`, `_`, `.` only.
pub fn service_id(worker_name: &str) -> String {
    let clean: String = worker_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("{SERVICE_NAME}-{clean}")
}

/// Keeps the instance registered until `shutdown`, then deregisters it.
///
/// Every `resync` (or TTL period) it asks the agent whether it still knows the service and
/// registers again when it does not (agent restarted without its state); while Consul is
/// away it retries with exponential backoff and jitter. Live changes of queues or
/// concurrency re-register at once so tags and meta stay true.
pub async fn keep_registered(
    client: ConsulClient,
    identity: Identity,
    mut live: watch::Receiver<Announced>,
    resync: Duration,
    shutdown: CancellationToken,
) {
    let mut in_consul: Option<ServiceRegistration> = None;
    let mut retry = backoff();
    let mut failing = false;
    let mut announcing = true;
    let ttl = identity.health_port.is_none();
    let period = if ttl {
        identity.check_interval.min(resync)
    } else {
        resync
    };
    loop {
        let desired = identity.registration(&live.borrow_and_update());
        let outcome = step(&client, &identity, &desired, in_consul.as_ref(), ttl).await;
        let wait = match outcome {
            Ok(()) => {
                if in_consul.as_ref() != Some(&desired) {
                    tracing::info!(service_id = %desired.id, tags = ?desired.tags, consul = %client.base(), "registered in Consul");
                }
                if failing {
                    tracing::info!(consul = %client.base(), "Consul reachable again");
                }
                in_consul = Some(desired);
                failing = false;
                retry = backoff();
                metrics::gauge!(metric_names::CONSUL_REGISTERED).set(1.0);
                period
            }
            Err(StepError::Forgotten) => {
                tracing::warn!(service_id = %identity.service_id, "Consul no longer knows this worker (agent restarted?): registering again");
                in_consul = None;
                continue;
            }
            Err(StepError::Consul(e)) => {
                if !failing {
                    tracing::warn!(error = %e, "Consul registration failed; retrying in the background (the worker runs on)");
                } else {
                    tracing::debug!(error = %e, "Consul registration still failing");
                }
                failing = true;
                in_consul = None;
                metrics::gauge!(metric_names::CONSUL_REGISTERED).set(0.0);
                retry.next().unwrap_or(Duration::from_secs(10))
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            r = live.changed(), if announcing => announcing = r.is_ok(),
            _ = tokio::time::sleep(wait) => {}
        }
    }
    match client.deregister(&identity.service_id).await {
        Ok(()) => tracing::info!(service_id = %identity.service_id, "deregistered from Consul"),
        Err(e) => tracing::warn!(error = %e, service_id = %identity.service_id,
            "could not deregister from Consul; it reaps the instance once its check is critical"),
    }
    metrics::gauge!(metric_names::CONSUL_REGISTERED).set(0.0);
}

enum StepError {
    Forgotten,
    Consul(ConsulError),
}

async fn step(
    client: &ConsulClient,
    identity: &Identity,
    desired: &ServiceRegistration,
    in_consul: Option<&ServiceRegistration>,
    ttl: bool,
) -> Result<(), StepError> {
    if in_consul != Some(desired) {
        client.register(desired).await.map_err(StepError::Consul)?;
        if ttl {
            client
                .pass_check(&desired.check.check_id)
                .await
                .map_err(StepError::Consul)?;
        }
        return Ok(());
    }
    if ttl {
        return match client.pass_check(&desired.check.check_id).await {
            Ok(()) => Ok(()),
            Err(ConsulError::Status { status: 404, .. }) => Err(StepError::Forgotten),
            // Consul answers 500 "Unknown check ID" for a check it does not have.
            Err(ConsulError::Status { body, .. }) if body.contains("Unknown check") => {
                Err(StepError::Forgotten)
            }
            Err(e) => Err(StepError::Consul(e)),
        };
    }
    match client.service_known(&identity.service_id).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(StepError::Forgotten),
        Err(e) => Err(StepError::Consul(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_body_uses_consul_field_names() {
        let id = Identity {
            service_id: service_id("host.12.ab c"),
            worker_name: "host.12.ab c".into(),
            address: "10.0.0.5".into(),
            health_port: Some(9100),
            sources: vec!["redis"],
            version: "0.1.0".into(),
            check_interval: Duration::from_secs(10),
            deregister_after: Duration::from_secs(90),
        };
        let live = Announced {
            queues: vec!["high".into(), "low".into()],
            concurrency: 8,
        };
        let v = serde_json::to_value(id.registration(&live)).expect("serializes");
        assert_eq!(v["ID"], "mindora-worker-host.12.ab-c");
        assert_eq!(v["Name"], "mindora-worker");
        assert_eq!(v["Meta"]["concurrency"], "8");
        assert_eq!(v["Check"]["HTTP"], "http://10.0.0.5:9100/healthz");
        assert_eq!(v["Check"]["DeregisterCriticalServiceAfter"], "90s");
        assert!(v["Check"].get("TTL").is_none());
        assert_eq!(
            v["Tags"],
            serde_json::json!(["queue:high", "queue:low", "source:redis", "version:0.1.0"])
        );
    }
}
