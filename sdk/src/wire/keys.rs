//! Redis key names used by rq. rq's prefix is fixed (`rq:`), so isolation between
//! deployments is by Redis database, exactly as with Python rq.

/// Set of all queue keys (`rq:queues`), read by `rq info` and `Queue.all()`.
pub const QUEUES: &str = "rq:queues";
/// Set of all live worker keys (`rq:workers`), read by `Worker.all()`.
pub const WORKERS: &str = "rq:workers";
/// Key whose existence suspends all rq workers (`rq suspend`).
pub const SUSPENDED: &str = "rq:suspended";

/// The list a queue's job ids wait in.
pub fn queue(name: &str) -> String {
    format!("rq:queue:{name}")
}
/// The queue name back from a `rq:queue:<name>` key.
pub fn queue_name_from_key(key: &str) -> Option<&str> {
    key.strip_prefix("rq:queue:")
}
/// Where rq's single-queue dequeue parks a job id between pop and start.
pub fn intermediate(queue_name: &str) -> String {
    format!("rq:queue:{queue_name}:intermediate")
}
/// The job's hash.
pub fn job(id: &str) -> String {
    format!("rq:job:{id}")
}
/// Set of the job's dependents (jobs waiting on it).
pub fn dependents(id: &str) -> String {
    format!("rq:job:{id}:dependents")
}
/// Set of the job's dependencies. The double colon is rq's own spelling and must be kept.
pub fn dependencies(id: &str) -> String {
    format!("rq:job::{id}:dependencies")
}
/// Stream of the job's results (`rq.results.Result`).
pub fn results(id: &str) -> String {
    format!("rq:results:{id}")
}
/// Started registry (rq 2.x calls it "wip"): members are `<job_id>:<execution_id>`,
/// scored by the time the execution is considered abandoned.
pub fn started(queue_name: &str) -> String {
    format!("rq:wip:{queue_name}")
}
/// Finished registry, scored by expiry.
pub fn finished(queue_name: &str) -> String {
    format!("rq:finished:{queue_name}")
}
/// Failed registry (the dead-letter registry), scored by expiry.
pub fn failed(queue_name: &str) -> String {
    format!("rq:failed:{queue_name}")
}
/// Scheduled registry, scored by the epoch second the job becomes due.
pub fn scheduled(queue_name: &str) -> String {
    format!("rq:scheduled:{queue_name}")
}
/// Deferred registry: jobs waiting for their dependencies.
pub fn deferred(queue_name: &str) -> String {
    format!("rq:deferred:{queue_name}")
}
/// Canceled registry.
pub fn canceled(queue_name: &str) -> String {
    format!("rq:canceled:{queue_name}")
}
/// Scheduler lock per queue, as rq's `RQScheduler` takes it, so Python schedulers and ours
/// never move the same queue's jobs at once.
pub fn scheduler_lock(queue_name: &str) -> String {
    format!("rq:scheduler-lock:{queue_name}")
}
/// One execution (one attempt) of a job.
pub fn execution(job_id: &str, execution_id: &str) -> String {
    format!("rq:execution:{job_id}:{execution_id}")
}
/// Sorted set of a job's live executions.
pub fn executions(job_id: &str) -> String {
    format!("rq:executions:{job_id}")
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
    format!("rq:worker:{name}")
}
/// Set of worker keys listening on a queue.
pub fn workers_by_queue(queue_name: &str) -> String {
    format!("rq:workers:{queue_name}")
}
/// rq 3.0's set of a worker's live executions.
pub fn worker_executions(name: &str) -> String {
    format!("rq:worker:{name}:executions")
}
/// Pub/sub channel on which `rq.command.send_command` reaches one worker.
pub fn worker_pubsub(name: &str) -> String {
    format!("rq:pubsub:{name}")
}

/// mindora's fleet-wide lock that lets one worker per period run the abandoned-job
/// recovery of a queue (rq has no such key; Python workers ignore it).
pub fn recover_lock(queue_name: &str) -> String {
    format!("mindora:recover-lock:{queue_name}")
}
/// A mindora worker's liveness lease: set with a short TTL at registration and by every
/// heartbeat. Once it lapses, surviving workers recover the worker's running executions
/// (`recover_lapsed.lua`) without waiting for rq's TTL rule.
pub fn worker_lease(name: &str) -> String {
    format!("mindora:worker-lease:{name}")
}
/// Field of the rq worker hash that says the worker keeps a lease (its length in ms);
/// workers without it (Python rq) are never recovered early.
pub const WORKER_LEASE_FIELD: &str = "mindora_lease_ms";
/// Fleet-wide lock that lets one worker per second look for lapsed leases.
pub const LEASE_CHECK_LOCK: &str = "mindora:lease-check-lock";
/// Marks a job id seen in a queue's intermediate list by the recovery pass; seen twice, the
/// id is stranded (its worker died between pop and claim) and goes back to the queue.
pub fn intermediate_seen(queue_name: &str, job_id: &str) -> String {
    format!("mindora:intermediate-seen:{queue_name}:{job_id}")
}
/// rq 3.0's set of every rate-limit key in use (`RateLimitRegistry.all`).
pub const RATE_LIMIT_KEYS: &str = "rq:rl-keys";
/// rq 3.0's config hash of one rate-limit key (`concurrency`).
pub fn rate_limit(key: &str) -> String {
    format!("rq:rl:{key}")
}
/// rq 3.0: jobs holding a slot of a rate-limit key (queued or running).
pub fn rate_limit_allowed(key: &str) -> String {
    format!("rq:rl:{key}:allowed")
}
/// rq 3.0: jobs waiting for a slot (status `rate_limited`).
pub fn rate_limit_waiting(key: &str) -> String {
    format!("rq:rl:{key}:rate_limited")
}
/// rq's registry of cron schedulers (`CronScheduler.all()`), scored by last heartbeat.
pub const CRON_SCHEDULERS: &str = "rq:cron_schedulers";
/// One cron scheduler's hash (`CronScheduler.fetch`).
pub fn cron_scheduler(name: &str) -> String {
    format!("rq:cron_scheduler:{name}")
}
/// rq's history of the jobs one cron entry enqueued (`rq.cron.get_cron_job_ids`).
pub fn cron_job_history(name: &str) -> String {
    format!("rq:cron_job:{name}:jobs")
}
/// rq 3.0's registry of cron entry names, scored by last enqueue.
pub const CRON_JOBS: &str = "rq:cron_jobs";
/// mindora's fleet-wide lock that lets one worker per period run the rate-limit cleanup.
pub const RATE_LIMIT_CLEANUP_LOCK: &str = "mindora:rl-cleanup-lock";
/// The claim of one tick of a cron entry (mindora's exactly-once key; not an rq key).
pub fn cron_tick(entry: &str, tick_epoch: i64) -> String {
    format!("mindora:cron:{entry}:{tick_epoch}")
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
    fn dependency_key_keeps_rq_double_colon() {
        assert_eq!(dependencies("x"), "rq:job::x:dependencies");
        assert_eq!(queue_name_from_key(&queue("q")), Some("q"));
    }

    /// Every key the scripts spell out is one this module names: a literal such as
    /// `'rq:job:'` must be the fixed start of a named key, and a suffix such as
    /// `':dependents'` must follow a variable part of one.
    #[test]
    fn lua_scripts_only_touch_named_keys() {
        const P: &str = "\u{1}";
        let named = [
            QUEUES.to_string(),
            WORKERS.to_string(),
            SUSPENDED.to_string(),
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
            LEASE_CHECK_LOCK.to_string(),
            intermediate_seen(P, P),
            RATE_LIMIT_KEYS.to_string(),
            rate_limit(P),
            rate_limit_allowed(P),
            rate_limit_waiting(P),
            CRON_SCHEDULERS.to_string(),
            cron_scheduler(P),
            RATE_LIMIT_CLEANUP_LOCK.to_string(),
            cron_job_history(P),
            CRON_JOBS.to_string(),
        ];
        let mut checked = 0;
        for (file, source) in crate::wire::scripts::SOURCES {
            // Comments (which may hold apostrophes) are not code.
            let code: String = source
                .lines()
                .map(|l| l.split("--").next().unwrap_or(""))
                .collect::<Vec<_>>()
                .join("\n");
            for literal in code.split('\'').skip(1).step_by(2) {
                let ok = if literal.starts_with("rq:") || literal.starts_with("mindora:") {
                    named.iter().any(|k| {
                        k == literal
                            || k.strip_prefix(literal)
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
