//! Redis key names used by rq, under rq 3.0's key prefix (`RQ_KEY_PREFIX`, default `rq`,
//! joined to every key and pub/sub channel with `:`), and mindora's own keys, which follow
//! the same prefix so one Redis Cluster hash tag (e.g. `{rq}`) covers every key:
//! `mindora:<name>` under the default prefix (unchanged from before prefixes existed),
//! `<prefix>:mindora:<name>` under any other.
//!
//! As in rq, the prefix is one per process: set it once at start-up ([`set_prefix`] or
//! [`prefix_from_env`]) before any key is named.

use std::sync::OnceLock;

/// rq's default key prefix.
pub const DEFAULT_PREFIX: &str = "rq";
/// The environment variable rq 3.0 reads its prefix from (rq 2.12 ignores it).
pub const PREFIX_ENV: &str = "RQ_KEY_PREFIX";

static PREFIX: OnceLock<String> = OnceLock::new();

/// A key prefix rq 3.0 would refuse, or a second, different prefix in one process.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    /// rq 3.0 allows only `[A-Za-z0-9_.:{}-]+`.
    #[error("invalid key prefix {0:?}: only letters, digits and _ . : - {{ }} are allowed (rq 3.0's RQ_KEY_PREFIX rule)")]
    Invalid(String),
    /// The prefix was already fixed to another value in this process.
    #[error(
        "key prefix already set to {current:?}; cannot switch to {wanted:?} in the same process"
    )]
    AlreadySet {
        /// The prefix in use.
        current: String,
        /// The one asked for.
        wanted: String,
    },
}

/// Checks a prefix against rq 3.0's rule (`rq/defaults.py`).
pub fn validate_prefix(prefix: &str) -> Result<(), PrefixError> {
    let ok = !prefix.is_empty()
        && prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.:{}-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(PrefixError::Invalid(prefix.to_string()))
    }
}

/// Fixes this process's key prefix. Setting the prefix already in use is a no-op.
pub fn set_prefix(prefix: &str) -> Result<(), PrefixError> {
    validate_prefix(prefix)?;
    let current = PREFIX.get_or_init(|| prefix.to_string());
    if current == prefix {
        Ok(())
    } else {
        Err(PrefixError::AlreadySet {
            current: current.clone(),
            wanted: prefix.to_string(),
        })
    }
}

/// Fixes the prefix from `RQ_KEY_PREFIX` (default `rq`), as rq 3.0 does at import; returns
/// the prefix in use. An invalid value is an error, as in rq.
pub fn prefix_from_env() -> Result<&'static str, PrefixError> {
    if let Some(p) = PREFIX.get() {
        return Ok(p);
    }
    let wanted = std::env::var(PREFIX_ENV).unwrap_or_else(|_| DEFAULT_PREFIX.to_string());
    set_prefix(&wanted)?;
    Ok(prefix())
}

/// This process's key prefix: the one set, else a valid `RQ_KEY_PREFIX`, else `rq`.
pub fn prefix() -> &'static str {
    PREFIX.get_or_init(|| match std::env::var(PREFIX_ENV) {
        Ok(p) if validate_prefix(&p).is_ok() => p,
        Ok(p) => {
            tracing::error!(prefix = %p, "invalid {PREFIX_ENV}; using {DEFAULT_PREFIX:?}");
            DEFAULT_PREFIX.to_string()
        }
        Err(_) => DEFAULT_PREFIX.to_string(),
    })
}

/// What starts every rq key: the prefix and `:` (`rq:` by default).
pub fn rq_prefix() -> String {
    format!("{}:", prefix())
}

/// What starts every mindora key: `mindora:` under the default prefix, else
/// `<prefix>:mindora:`.
pub fn mindora_prefix() -> String {
    let p = prefix();
    if p == DEFAULT_PREFIX {
        "mindora:".to_string()
    } else {
        format!("{p}:mindora:")
    }
}

/// The Redis Cluster hash tag of the prefix (the text between the first `{` and the next
/// `}`, non-empty), if it has one: with it every key hashes to one slot.
pub fn hash_tag(prefix: &str) -> Option<&str> {
    let open = prefix.find('{')?;
    let close = prefix[open + 1..].find('}')?;
    (close > 0).then(|| &prefix[open + 1..open + 1 + close])
}

fn rq(rest: std::fmt::Arguments<'_>) -> String {
    format!("{}:{rest}", prefix())
}

fn ours(rest: std::fmt::Arguments<'_>) -> String {
    format!("{}{rest}", mindora_prefix())
}

/// Set of all queue keys (`rq:queues`), read by `rq info` and `Queue.all()`.
pub fn queues() -> String {
    rq(format_args!("queues"))
}
/// Set of all live worker keys (`rq:workers`), read by `Worker.all()`.
pub fn workers() -> String {
    rq(format_args!("workers"))
}
/// Key whose existence suspends all rq workers (`rq suspend`).
pub fn suspended() -> String {
    rq(format_args!("suspended"))
}

/// The list a queue's job ids wait in.
pub fn queue(name: &str) -> String {
    rq(format_args!("queue:{name}"))
}
/// The queue name back from a `rq:queue:<name>` key.
pub fn queue_name_from_key(key: &str) -> Option<&str> {
    key.strip_prefix(prefix())?.strip_prefix(":queue:")
}
/// Where rq's single-queue dequeue parks a job id between pop and start.
pub fn intermediate(queue_name: &str) -> String {
    rq(format_args!("queue:{queue_name}:intermediate"))
}
/// The job's hash.
pub fn job(id: &str) -> String {
    rq(format_args!("job:{id}"))
}
/// Set of the job's dependents (jobs waiting on it).
pub fn dependents(id: &str) -> String {
    rq(format_args!("job:{id}:dependents"))
}
/// Set of the job's dependencies. The double colon is rq's own spelling and must be kept.
pub fn dependencies(id: &str) -> String {
    rq(format_args!("job::{id}:dependencies"))
}
/// Stream of the job's results (`rq.results.Result`).
pub fn results(id: &str) -> String {
    rq(format_args!("results:{id}"))
}
/// Started registry (rq 2.x calls it "wip"): members are `<job_id>:<execution_id>`,
/// scored by the time the execution is considered abandoned.
pub fn started(queue_name: &str) -> String {
    rq(format_args!("wip:{queue_name}"))
}
/// Finished registry, scored by expiry.
pub fn finished(queue_name: &str) -> String {
    rq(format_args!("finished:{queue_name}"))
}
/// Failed registry (the dead-letter registry), scored by expiry.
pub fn failed(queue_name: &str) -> String {
    rq(format_args!("failed:{queue_name}"))
}
/// Scheduled registry, scored by the epoch second the job becomes due.
pub fn scheduled(queue_name: &str) -> String {
    rq(format_args!("scheduled:{queue_name}"))
}
/// Deferred registry: jobs waiting for their dependencies.
pub fn deferred(queue_name: &str) -> String {
    rq(format_args!("deferred:{queue_name}"))
}
/// Canceled registry.
pub fn canceled(queue_name: &str) -> String {
    rq(format_args!("canceled:{queue_name}"))
}
/// Scheduler lock per queue, as rq's `RQScheduler` takes it, so Python schedulers and ours
/// never move the same queue's jobs at once.
pub fn scheduler_lock(queue_name: &str) -> String {
    rq(format_args!("scheduler-lock:{queue_name}"))
}
/// One execution (one attempt) of a job.
pub fn execution(job_id: &str, execution_id: &str) -> String {
    rq(format_args!("execution:{job_id}:{execution_id}"))
}
/// Sorted set of a job's live executions.
pub fn executions(job_id: &str) -> String {
    rq(format_args!("executions:{job_id}"))
}
/// The member a started registry holds for one execution.
pub fn execution_composite(job_id: &str, execution_id: &str) -> String {
    format!("{job_id}:{execution_id}")
}
/// The job id back from a started-registry member (`<job_id>:<execution_id>`); job ids may
/// themselves contain colons, execution ids never do.
pub fn job_id_from_composite(member: &str) -> &str {
    member.rsplit_once(':').map_or(member, |(job, _)| job)
}
/// A worker's hash.
pub fn worker(name: &str) -> String {
    rq(format_args!("worker:{name}"))
}
/// Set of worker keys listening on a queue.
pub fn workers_by_queue(queue_name: &str) -> String {
    rq(format_args!("workers:{queue_name}"))
}
/// rq 3.0's set of a worker's live executions.
pub fn worker_executions(name: &str) -> String {
    rq(format_args!("worker:{name}:executions"))
}
/// Pub/sub channel on which `rq.command.send_command` reaches one worker.
pub fn worker_pubsub(name: &str) -> String {
    rq(format_args!("pubsub:{name}"))
}

/// mindora's fleet-wide lock that lets one worker per period run the abandoned-job
/// recovery of a queue (rq has no such key; Python workers ignore it).
pub fn recover_lock(queue_name: &str) -> String {
    ours(format_args!("recover-lock:{queue_name}"))
}
/// A mindora worker's liveness lease: set with a short TTL at registration and by every
/// heartbeat. Once it lapses, surviving workers recover the worker's running executions
/// (`recover_lapsed.lua`) without waiting for rq's TTL rule.
pub fn worker_lease(name: &str) -> String {
    ours(format_args!("worker-lease:{name}"))
}
/// Field of the rq worker hash that says the worker keeps a lease (its length in ms);
/// workers without it (Python rq) are never recovered early.
pub const WORKER_LEASE_FIELD: &str = "mindora_lease_ms";
/// Fleet-wide lock that lets one worker per second look for lapsed leases.
pub fn lease_check_lock() -> String {
    ours(format_args!("lease-check-lock"))
}
/// Marks a job id seen in a queue's intermediate list by the recovery pass; seen twice, the
/// id is stranded (its worker died between pop and claim) and goes back to the queue.
pub fn intermediate_seen(queue_name: &str, job_id: &str) -> String {
    ours(format_args!("intermediate-seen:{queue_name}:{job_id}"))
}
/// rq 3.0's set of every rate-limit key in use (`RateLimitRegistry.all`).
pub fn rate_limit_keys() -> String {
    rq(format_args!("rl-keys"))
}
/// rq 3.0's config hash of one rate-limit key (`concurrency`).
pub fn rate_limit(key: &str) -> String {
    rq(format_args!("rl:{key}"))
}
/// rq 3.0: jobs holding a slot of a rate-limit key (queued or running).
pub fn rate_limit_allowed(key: &str) -> String {
    rq(format_args!("rl:{key}:allowed"))
}
/// rq 3.0: jobs waiting for a slot (status `rate_limited`).
pub fn rate_limit_waiting(key: &str) -> String {
    rq(format_args!("rl:{key}:rate_limited"))
}
/// rq's registry of cron schedulers (`CronScheduler.all()`), scored by last heartbeat.
pub fn cron_schedulers() -> String {
    rq(format_args!("cron_schedulers"))
}
/// One cron scheduler's hash (`CronScheduler.fetch`).
pub fn cron_scheduler(name: &str) -> String {
    rq(format_args!("cron_scheduler:{name}"))
}
/// rq's history of the jobs one cron entry enqueued (`rq.cron.get_cron_job_ids`).
pub fn cron_job_history(name: &str) -> String {
    rq(format_args!("cron_job:{name}:jobs"))
}
/// rq 3.0's registry of cron entry names, scored by last enqueue.
pub fn cron_jobs() -> String {
    rq(format_args!("cron_jobs"))
}
/// mindora's fleet-wide lock that lets one worker per period run the rate-limit cleanup.
pub fn rate_limit_cleanup_lock() -> String {
    ours(format_args!("rl-cleanup-lock"))
}
/// mindora's set of paused queue names (the console's "pause queue"): mindora workers skip
/// these queues when they claim; Python rq workers do not know this key and keep working
/// them (use `rq suspend`, [`suspended`], to stop every worker).
pub fn paused_queues() -> String {
    ours(format_args!("paused-queues"))
}
/// The claim of one tick of a cron entry (mindora's exactly-once key; not an rq key).
pub fn cron_tick(entry: &str, tick_epoch: i64) -> String {
    ours(format_args!("cron:{entry}:{tick_epoch}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composite_ids_split_on_last_colon() {
        assert_eq!(job_id_from_composite("a:b:c0ffee"), "a:b");
        assert_eq!(job_id_from_composite("plain"), "plain");
        assert_eq!(execution_composite("j", "e"), "j:e");
    }

    #[test]
    fn prefix_rule_is_rq_30s() {
        for good in ["rq", "{rq}", "acme.v3", "a-b_c:d{x}"] {
            assert_eq!(validate_prefix(good), Ok(()), "{good}");
        }
        for bad in ["", "a b", "rq*", "ü", "a/b"] {
            assert!(validate_prefix(bad).is_err(), "{bad}");
        }
        assert_eq!(hash_tag("{rq}"), Some("rq"));
        assert_eq!(hash_tag("app:{t1}:x"), Some("t1"));
        assert_eq!(hash_tag("{}rq"), None);
        assert_eq!(hash_tag("rq"), None);
    }

    #[test]
    fn dependency_key_keeps_rq_double_colon() {
        assert_eq!(dependencies("x"), "rq:job::x:dependencies");
        assert_eq!(queue_name_from_key(&queue("q")), Some("q"));
    }

    /// Every key the scripts spell out is one this module names, under the prefix the
    /// caller passes: `RQ .. 'job:'` must be the fixed start of a named rq key,
    /// `MINDORA .. 'worker-lease:'` of a named mindora key, and a suffix such as
    /// `':dependents'` must follow a variable part of one. No script spells a prefix itself.
    #[test]
    fn lua_scripts_only_touch_named_keys() {
        const P: &str = "\u{1}";
        let named = [
            queues(),
            workers(),
            suspended(),
            queue(P),
            intermediate(P),
            job(P),
            dependents(P),
            dependencies(P),
            results(P),
            started(P),
            finished(P),
            failed(P),
            scheduled(P),
            deferred(P),
            canceled(P),
            scheduler_lock(P),
            execution(P, P),
            executions(P),
            worker(P),
            workers_by_queue(P),
            worker_executions(P),
            worker_pubsub(P),
            recover_lock(P),
            worker_lease(P),
            lease_check_lock(),
            intermediate_seen(P, P),
            rate_limit_keys(),
            rate_limit(P),
            rate_limit_allowed(P),
            rate_limit_waiting(P),
            cron_schedulers(),
            cron_scheduler(P),
            rate_limit_cleanup_lock(),
            cron_job_history(P),
            cron_jobs(),
            paused_queues(),
        ];
        let mut checked = 0;
        for (file, source) in crate::wire::scripts::SOURCES {
            // Comments (which may hold apostrophes) are not code.
            let code: String = source
                .lines()
                .map(|l| l.split("--").next().unwrap_or(""))
                .collect::<Vec<_>>()
                .join("\n");
            let parts: Vec<&str> = code.split('\'').collect();
            for (i, literal) in parts.iter().enumerate().skip(1).step_by(2) {
                assert!(
                    !literal.starts_with("rq:") && !literal.starts_with("mindora:"),
                    "{file}: literal prefix in {literal:?}; use RQ or MINDORA"
                );
                let before = parts[i - 1].trim_end();
                let head = if before.ends_with("RQ ..") {
                    Some(rq_prefix())
                } else if before.ends_with("MINDORA ..") {
                    Some(mindora_prefix())
                } else {
                    None
                };
                let ok = if let Some(head) = head {
                    let full = format!("{head}{literal}");
                    named.iter().any(|k| {
                        *k == full
                            || k.strip_prefix(full.as_str())
                                .is_some_and(|rest| rest.starts_with(P))
                    })
                } else if literal.starts_with(':') && literal.len() > 1 {
                    let joined = format!("{P}{literal}");
                    named.iter().any(|k| {
                        k.match_indices(&joined).any(|(i, m)| {
                            let rest = &k[i + m.len()..];
                            rest.is_empty() || rest.starts_with(P)
                        })
                    })
                } else {
                    continue;
                };
                assert!(
                    ok,
                    "{file}: key literal {literal:?} is not named in wire::keys"
                );
                checked += 1;
            }
        }
        assert!(checked > 20, "only {checked} key literals found");
    }
}
