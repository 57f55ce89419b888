-- A job raised, timed out or was stopped: rq's handle_job_failure in one atomic step,
-- with rq 3.0's release of the job's rate-limit slot unless it is queued again.
-- ARGV: job_id, queue, exec_id, worker, now_iso, now_int, mode, delay_secs, failure_ttl,
--       working_secs, callbacks_run ('1': the job's Python callback already ran, no note),
--       result fields (name, value, ...)
-- mode: 'retry' (retries_left is decremented, the job is scheduled after delay_secs or
--       queued at once), 'failed' or 'stopped' (final).
-- Returns: 'scheduled' | 'queued' | 'failed' | 'stopped' | 'gone'
-- A STALE error when the execution was already recovered (fencing, see common.lua).
local job_id, queue, exec_id, worker = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local now_iso, now_i, mode = ARGV[5], tonumber(ARGV[6]), ARGV[7]
local delay, failure_ttl, working = tonumber(ARGV[8]), tonumber(ARGV[9]), ARGV[10]
local callbacks_run = ARGV[11] == '1'
local jkey = RQ .. 'job:' .. job_id
if not execution_is_live(job_id, queue, exec_id) then return stale_outcome(job_id, queue, exec_id, worker) end
local rl = rl_of(job_id)
end_execution(job_id, queue, exec_id, worker)
if worker ~= '' then
  redis.call('HINCRBY', RQ .. 'worker:' .. worker, 'failed_job_count', 1)
  redis.call('HINCRBYFLOAT', RQ .. 'worker:' .. worker, 'total_working_time', working)
end
if redis.call('EXISTS', jkey) == 0 then return 'gone' end
redis.call('HSET', jkey, 'ended_at', now_iso, 'last_heartbeat', now_iso)
if mode == 'retry' then
  local status = retry_job(job_id, queue, now_iso, now_i, delay)
  rl_release(rl, job_id, status, now_iso)
  return status
end
local fields = {}
for i = 12, #ARGV do table.insert(fields, ARGV[i]) end
record_failure(job_id, queue, mode, now_iso, now_i, failure_ttl, fields)
if callbacks_run then
  -- Run by the Python pool: nothing to note.
elseif mode == 'stopped' then
  note_callback_not_run(job_id, 'stopped_callback_name', 'on_stopped')
else
  note_callback_not_run(job_id, 'failure_callback_name', 'on_failure')
end
enqueue_dependents(job_id, now_iso)
rl_release(rl, job_id, mode, now_iso)
return mode
