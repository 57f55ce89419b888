-- Give a started job back to the head of its queue without spending an attempt (shutdown
-- grace ran out while it ran): the execution ends and the job is queued again.
-- ARGV: job_id, queue, exec_id, worker, now_iso
-- Returns 1 when queued again, 0 when the job hash is gone.
-- A STALE error when the execution was already recovered (fencing, see common.lua).
local job_id, queue, exec_id, worker, now_iso = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if not execution_is_live(job_id, queue, exec_id) then return stale_outcome(job_id, queue, exec_id, worker) end
end_execution(job_id, queue, exec_id, worker)
if redis.call('EXISTS', RQ .. 'job:' .. job_id) == 0 then return 0 end
push_queued(job_id, queue, now_iso, true)
return 1
