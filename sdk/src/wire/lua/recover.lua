-- rq's StartedJobRegistry.cleanup for one queue: every execution whose heartbeat lapsed
-- belongs to a dead worker; its job is retried if it has retries left, otherwise failed
-- as abandoned (AbandonedJobError), exactly as rq records it. Also expires old entries of
-- the finished and failed registries. An rq 3.0 rate-limit slot is released as rq's
-- cleanup does (release_slot unless the job is queued again).
-- ARGV: queue, now_int, now_iso, exc_string_b64, exc_message
-- Returns: { {job_id, outcome}, ... }
local queue, now_i, now_iso, exc_b64 = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local wip = 'rq:wip:' .. queue
local out = {}
local members = redis.call('ZRANGEBYSCORE', wip, 0, now_i)
for _, member in ipairs(members) do
  local job_id, exec_id = string.match(member, '^(.*):([^:]*)$')
  if job_id then
    local jkey = 'rq:job:' .. job_id
    redis.call('DEL', 'rq:execution:' .. job_id .. ':' .. exec_id)
    redis.call('ZREM', 'rq:executions:' .. job_id, exec_id)
    if hget(jkey, 'status') == 'started' then
      local rl = rl_of(job_id)
      local left = tonumber(hget(jkey, 'retries_left') or '0')
      if left > 0 then
        local status = retry_job(job_id, queue, now_iso, now_i, rq_retry_interval(job_id))
        rl_release(rl, job_id, status, now_iso)
        table.insert(out, {job_id, status})
      else
        local ttl = tonumber(hget(jkey, 'failure_ttl') or '31536000')
        record_failure(job_id, queue, 'failed', now_iso, now_i, ttl,
          {'type', '2', 'worker_name', '', 'exc_string', exc_b64})
        enqueue_dependents(job_id, now_iso)
        rl_release(rl, job_id, 'failed', now_iso)
        table.insert(out, {job_id, 'failed'})
      end
    end
  end
end
redis.call('ZREMRANGEBYSCORE', wip, 0, now_i)
redis.call('ZREMRANGEBYSCORE', 'rq:finished:' .. queue, 0, now_i)
redis.call('ZREMRANGEBYSCORE', 'rq:failed:' .. queue, 0, now_i)
return out
