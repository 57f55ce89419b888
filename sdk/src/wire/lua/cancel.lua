-- rq's Job.cancel: a job that has not started leaves its queue or registry and is
-- recorded as canceled. ARGV: job_id, now_int, now_iso. Returns the previous status or 'gone'.
local job_id, now_i = ARGV[1], tonumber(ARGV[2])
local jkey = RQ .. 'job:' .. job_id
local status = hget(jkey, 'status')
if status == nil then return 'gone' end
if status == 'finished' or status == 'failed' or status == 'stopped' or status == 'canceled' or status == 'started' then
  return status
end
local queue = hget(jkey, 'origin') or 'default'
redis.call('HSET', jkey, 'status', 'canceled')
redis.call('LREM', RQ .. 'queue:' .. queue, 1, job_id)
redis.call('ZREM', RQ .. 'scheduled:' .. queue, job_id)
redis.call('ZREM', RQ .. 'deferred:' .. queue, job_id)
redis.call('ZADD', RQ .. 'canceled:' .. queue, now_i, job_id)
-- rq 3.0's RateLimitRegistry.cancel: out of the waiting set, and a held slot is freed.
local rl = rl_of(job_id)
if rl then
  redis.call('ZREM', RQ .. 'rl:' .. rl.key .. ':rate_limited', job_id)
  rl_release(rl, job_id, 'canceled', ARGV[3])
end
return status
