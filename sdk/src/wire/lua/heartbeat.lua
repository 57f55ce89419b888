-- One heartbeat for a worker and all its running executions (rq's maintain_heartbeats,
-- batched), and the worker's liveness lease (recover_lapsed.lua). ARGV: worker, now_iso,
-- now_float, now_int, worker_ttl, lease_ms (0: no lease), then per execution: job_id,
-- queue, exec_id, ttl
-- Returns 0 without writing when the worker is no longer in `rq:workers` (Redis restarted
-- empty, or its key expired): the caller registers the worker again.
local worker, now_iso, now_f = ARGV[1], ARGV[2], ARGV[3]
local now_i, worker_ttl = tonumber(ARGV[4]), tonumber(ARGV[5])
local wkey = RQ .. 'worker:' .. worker
if redis.call('SISMEMBER', RQ .. 'workers', wkey) == 0 then return 0 end
redis.call('HSET', wkey, 'last_heartbeat', now_iso)
redis.call('EXPIRE', wkey, worker_ttl)
redis.call('EXPIRE', wkey .. ':executions', worker_ttl)
local lease_ms = tonumber(ARGV[6])
if lease_ms > 0 then
  redis.call('SET', MINDORA .. 'worker-lease:' .. worker, now_iso, 'PX', lease_ms)
end
local i = 7
while i + 3 <= #ARGV do
  local job_id, queue, exec_id, ttl = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  local ekey = RQ .. 'execution:' .. job_id .. ':' .. exec_id
  if redis.call('EXISTS', ekey) == 1 then
    redis.call('HSET', ekey, 'last_heartbeat', now_f)
    redis.call('EXPIRE', ekey, ttl)
  end
  redis.call('ZADD', RQ .. 'wip:' .. queue, 'XX', now_i + ttl, job_id .. ':' .. exec_id)
  redis.call('ZADD', RQ .. 'executions:' .. job_id, 'XX', now_i + ttl, exec_id)
  if redis.call('EXISTS', RQ .. 'job:' .. job_id) == 1 then
    redis.call('HSET', RQ .. 'job:' .. job_id, 'last_heartbeat', now_iso)
  end
  i = i + 4
end
return 1
