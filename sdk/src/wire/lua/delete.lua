-- rq's Job.delete, for the console: the job leaves its queue and every registry of its
-- queue, its live executions end (a worker still running one gets a STALE reply when it
-- settles, see common.lua), an rq 3.0 rate-limit slot it holds is freed (waiting jobs are
-- promoted), it leaves its parents' dependents sets, and its hash, results, dependents and
-- dependencies sets are deleted. Its dependents are left as they are (rq's default,
-- delete_dependents=False). ARGV: job_id, now_iso. Returns the status it had, or 'gone'.
local job_id, now_iso = ARGV[1], ARGV[2]
local jkey = RQ .. 'job:' .. job_id
if redis.call('EXISTS', jkey) == 0 then return 'gone' end
local status = hget(jkey, 'status') or 'created'
local queue = hget(jkey, 'origin') or 'default'
redis.call('LREM', RQ .. 'queue:' .. queue, 0, job_id)
redis.call('LREM', RQ .. 'queue:' .. queue .. ':intermediate', 0, job_id)
redis.call('ZREM', RQ .. 'finished:' .. queue, job_id)
redis.call('ZREM', RQ .. 'failed:' .. queue, job_id)
redis.call('ZREM', RQ .. 'scheduled:' .. queue, job_id)
redis.call('ZREM', RQ .. 'deferred:' .. queue, job_id)
redis.call('ZREM', RQ .. 'canceled:' .. queue, job_id)
local ended = {}
for _, exec_id in ipairs(redis.call('ZRANGE', RQ .. 'executions:' .. job_id, 0, -1)) do
  local worker = hget(RQ .. 'execution:' .. job_id .. ':' .. exec_id, 'worker_name') or ''
  redis.call('ZREM', RQ .. 'wip:' .. queue, job_id .. ':' .. exec_id)
  close_execution(job_id, exec_id, worker)
  if worker ~= '' then ended[worker] = true end
end
for worker, _ in pairs(ended) do worker_after_ends(worker, {[job_id] = true}) end
local rl = rl_of(job_id)
if rl then
  redis.call('ZREM', RQ .. 'rl:' .. rl.key .. ':rate_limited', job_id)
  rl_release(rl, job_id, 'deleted', now_iso)
end
for _, parent in ipairs(redis.call('SMEMBERS', RQ .. 'job::' .. job_id .. ':dependencies')) do
  redis.call('SREM', RQ .. 'job:' .. parent .. ':dependents', job_id)
end
local dep = hget(jkey, 'dependency_id')
if dep then redis.call('SREM', RQ .. 'job:' .. dep .. ':dependents', job_id) end
redis.call('DEL', jkey, RQ .. 'job:' .. job_id .. ':dependents',
  RQ .. 'job::' .. job_id .. ':dependencies', RQ .. 'results:' .. job_id,
  RQ .. 'executions:' .. job_id)
return status
