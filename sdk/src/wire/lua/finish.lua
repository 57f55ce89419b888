-- A job returned: rq's handle_job_success in one atomic step.
-- ARGV: job_id, queue, exec_id, worker, now_iso, now_int, result_ttl, working_secs,
--       result fields (name, value, ...)
-- A STALE error when the execution was already recovered (fencing, see common.lua).
local job_id, queue, exec_id, worker = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local now_iso, now_i, result_ttl = ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7])
local working = ARGV[8]
local jkey = 'rq:job:' .. job_id
if not execution_is_live(job_id, queue, exec_id) then return stale_outcome(job_id, queue, exec_id, worker) end
end_execution(job_id, queue, exec_id, worker)
if worker ~= '' then
  redis.call('HINCRBY', 'rq:worker:' .. worker, 'successful_job_count', 1)
  redis.call('HINCRBYFLOAT', 'rq:worker:' .. worker, 'total_working_time', working)
end
if redis.call('EXISTS', jkey) == 0 then return {} end
redis.call('HSET', jkey, 'status', 'finished', 'ended_at', now_iso, 'last_heartbeat', now_iso)
local rkey = 'rq:results:' .. job_id
local xadd = {'XADD', rkey, 'MAXLEN', '~', '10', '*'}
for i = 9, #ARGV do table.insert(xadd, ARGV[i]) end
redis.call(unpack(xadd))
local moved = enqueue_dependents(job_id, now_iso)
if result_ttl == 0 then
  redis.call('DEL', jkey, rkey, 'rq:job:' .. job_id .. ':dependents', 'rq:job::' .. job_id .. ':dependencies')
else
  apply_ttl(rkey, result_ttl)
  redis.call('ZADD', 'rq:finished:' .. queue, expiry_score(now_i, result_ttl), job_id)
  apply_ttl(jkey, result_ttl)
  apply_ttl('rq:job:' .. job_id .. ':dependents', result_ttl)
  apply_ttl('rq:job::' .. job_id .. ':dependencies', result_ttl)
end
return moved
