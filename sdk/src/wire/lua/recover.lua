-- rq's StartedJobRegistry.cleanup for one queue: every execution whose heartbeat lapsed
-- belongs to a dead worker; its job is retried if it has retries left, otherwise failed
-- as abandoned (AbandonedJobError), exactly as rq records it. Also expires old entries of
-- the finished and failed registries. An rq 3.0 rate-limit slot is released as rq's
-- cleanup does (release_slot unless the job is queued again).
-- A job failed here (not one queued again) is reported with whether it carries rq
-- Webhooks, so the caller sends its `failed` webhooks as rq 3.0's cleanup does.
-- ARGV: queue, now_int, now_iso, exc_string_b64, exc_message
-- Returns: { {job_id, outcome, has_webhooks ('1' / '0')}, ... }
local queue, now_i, now_iso, exc_b64 = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local wip = RQ .. 'wip:' .. queue
local out = {}
local members = redis.call('ZRANGEBYSCORE', wip, 0, now_i)
for _, member in ipairs(members) do
  local job_id, exec_id = string.match(member, '^(.*):([^:]*)$')
  if job_id then
    redis.call('DEL', RQ .. 'execution:' .. job_id .. ':' .. exec_id)
    redis.call('ZREM', RQ .. 'executions:' .. job_id, exec_id)
    local outcome = abandon_job(job_id, queue, now_iso, now_i, exc_b64)
    if outcome then table.insert(out, {job_id, outcome, failed_with_webhooks(job_id, outcome)}) end
  end
end
redis.call('ZREMRANGEBYSCORE', wip, 0, now_i)
redis.call('ZREMRANGEBYSCORE', RQ .. 'finished:' .. queue, 0, now_i)
redis.call('ZREMRANGEBYSCORE', RQ .. 'failed:' .. queue, 0, now_i)
return out
