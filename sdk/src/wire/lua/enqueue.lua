-- Enqueue a new job as rq's Queue.enqueue_call does, deciding atomically between queued,
-- scheduled and deferred (a parent that is not finished defers the job; rq checks this
-- under WATCH, we under the script's atomicity). A job carrying rq 3.0's RateLimit fields
-- goes through the limiter as Queue._enqueue_rate_limited_job.
-- ARGV: job_id, queue, now_iso, now_int, at_epoch (or ''), at_front (0/1), ttl (or ''),
--       n_deps, dep ids..., then field pairs of the job hash (without status/enqueued_at)
local job_id, queue, now_iso = ARGV[1], ARGV[2], ARGV[3]
local now_i, at, at_front, ttl = tonumber(ARGV[4]), ARGV[5], ARGV[6] == '1', ARGV[7]
local n_deps = tonumber(ARGV[8])
local jkey = RQ .. 'job:' .. job_id
local pending = {}
for i = 9, 8 + n_deps do
  local dep = ARGV[i]
  local st = hget(RQ .. 'job:' .. dep, 'status')
  if st ~= 'finished' then table.insert(pending, dep) end
end
local hset = {'HSET', jkey}
for i = 9 + n_deps, #ARGV do table.insert(hset, ARGV[i]) end
redis.call('SADD', RQ .. 'queues', RQ .. 'queue:' .. queue)
redis.call(unpack(hset))
for i = 9, 8 + n_deps do
  redis.call('SADD', RQ .. 'job::' .. job_id .. ':dependencies', ARGV[i])
end
local outcome
if #pending > 0 then
  redis.call('HSET', jkey, 'status', 'deferred')
  redis.call('ZADD', RQ .. 'deferred:' .. queue, now_i, job_id)
  for _, dep in ipairs(pending) do
    redis.call('SADD', RQ .. 'job:' .. dep .. ':dependents', job_id)
  end
  outcome = 'deferred'
elseif at ~= '' then
  redis.call('HSET', jkey, 'status', 'scheduled')
  redis.call('ZADD', RQ .. 'scheduled:' .. queue, tonumber(at), job_id)
  outcome = 'scheduled'
else
  -- rq 3.0: a job with a RateLimit waits as `rate_limited` unless a slot is free.
  enqueue_maybe_limited(job_id, queue, now_iso, at_front)
  outcome = hget(jkey, 'status') or 'queued'
end
if ttl ~= '' then
  local t = tonumber(ttl)
  redis.call('EXPIRE', jkey, t)
  redis.call('EXPIRE', RQ .. 'job:' .. job_id .. ':dependents', t)
  redis.call('EXPIRE', RQ .. 'job::' .. job_id .. ':dependencies', t)
end
return outcome
