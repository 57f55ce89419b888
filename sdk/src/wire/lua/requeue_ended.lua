-- rq's FailedJobRegistry.requeue / Job.requeue (and the canceled registry's requeue), for
-- the console: a failed, stopped or canceled job leaves its registry, loses started_at,
-- ended_at and exc_info as rq clears them, and goes back to the tail of its queue (through
-- its rq 3.0 rate limit when it has one). The expiry its failure set is lifted (its own
-- `ttl`, if any, applies again), so it cannot vanish while it waits.
-- ARGV: job_id, now_iso. Returns 'requeued', 'gone', or the status it is in (not requeued).
local job_id, now_iso = ARGV[1], ARGV[2]
local jkey = RQ .. 'job:' .. job_id
local status = hget(jkey, 'status')
if status == nil then
  if redis.call('EXISTS', jkey) == 0 then return 'gone' end
  status = 'created'
end
if status ~= 'failed' and status ~= 'stopped' and status ~= 'canceled' then return status end
local queue = hget(jkey, 'origin') or 'default'
redis.call('ZREM', RQ .. 'failed:' .. queue, job_id)
redis.call('ZREM', RQ .. 'canceled:' .. queue, job_id)
redis.call('HSET', jkey, 'started_at', '', 'ended_at', '')
redis.call('HDEL', jkey, 'exc_info')
local ttl = tonumber(hget(jkey, 'ttl') or '')
if ttl and ttl > 0 then
  redis.call('EXPIRE', jkey, ttl)
else
  redis.call('PERSIST', jkey)
end
redis.call('PERSIST', RQ .. 'job:' .. job_id .. ':dependents')
redis.call('PERSIST', RQ .. 'job::' .. job_id .. ':dependencies')
enqueue_maybe_limited(job_id, queue, now_iso, false)
return 'requeued'
