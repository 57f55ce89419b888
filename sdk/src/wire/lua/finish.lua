-- A job returned: rq's handle_job_success in one atomic step, including what rq 3.0's
-- worker adds: the next run of a Repeat (rq's Repeat.schedule) and the release of an rq 3.0
-- rate-limit slot (rq's release_slot), both in this same step.
-- ARGV: job_id, queue, exec_id, worker, now_iso, now_int, result_ttl, working_secs,
--       result fields (name, value, ...)
-- Returns: { new_status, {ids of dependents queued} }
-- A STALE error when the execution was already recovered (fencing, see common.lua).
local job_id, queue, exec_id, worker = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local now_iso, now_i, result_ttl = ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7])
local working = ARGV[8]
local jkey = 'rq:job:' .. job_id
if not execution_is_live(job_id, queue, exec_id) then return stale_outcome(job_id, queue, exec_id, worker) end
local rl = rl_of(job_id)
end_execution(job_id, queue, exec_id, worker)
if worker ~= '' then
  redis.call('HINCRBY', 'rq:worker:' .. worker, 'successful_job_count', 1)
  redis.call('HINCRBYFLOAT', 'rq:worker:' .. worker, 'total_working_time', working)
end
if redis.call('EXISTS', jkey) == 0 then return {'gone', {}} end
redis.call('HSET', jkey, 'status', 'finished', 'ended_at', now_iso, 'last_heartbeat', now_iso)
note_callback_not_run(job_id, 'success_callback_name', 'on_success')
local rkey = 'rq:results:' .. job_id
local xadd = {'XADD', rkey, 'MAXLEN', '~', '10', '*'}
for i = 9, #ARGV do table.insert(xadd, ARGV[i]) end
redis.call(unpack(xadd))
local moved = enqueue_dependents(job_id, now_iso)
local status = 'finished'
local repeats_left = tonumber(hget(jkey, 'repeats_left') or '')
if repeats_left and repeats_left > 0 then
  -- Repeat.schedule: the first interval is taken (and dropped while more than one is
  -- left), repeats_left goes down by one, the job is queued now (interval 0) or scheduled.
  -- rq keeps the finished-registry entry and the result, and sets no TTL on the job.
  if result_ttl ~= 0 then
    apply_ttl(rkey, result_ttl)
    redis.call('ZADD', 'rq:finished:' .. queue, expiry_score(now_i, result_ttl), job_id)
  end
  local interval = 0
  local raw = hget(jkey, 'repeat_intervals')
  if raw then
    local ok, intervals = pcall(cjson.decode, raw)
    if ok and type(intervals) == 'table' and #intervals > 0 then
      interval = math.floor(tonumber(intervals[1]) or 0)
      if #intervals > 1 then
        local rest = {}
        for i = 2, #intervals do table.insert(rest, intervals[i]) end
        redis.call('HSET', jkey, 'repeat_intervals', cjson.encode(rest))
      end
    end
  end
  redis.call('HSET', jkey, 'repeats_left', repeats_left - 1)
  if interval == 0 then
    push_queued(job_id, queue, now_iso, false)
    status = 'queued'
  else
    redis.call('HSET', jkey, 'status', 'scheduled')
    redis.call('SADD', 'rq:queues', 'rq:queue:' .. queue)
    redis.call('ZADD', 'rq:scheduled:' .. queue, now_i + interval, job_id)
    status = 'scheduled'
  end
elseif result_ttl == 0 then
  redis.call('DEL', jkey, rkey, 'rq:job:' .. job_id .. ':dependents', 'rq:job::' .. job_id .. ':dependencies')
else
  apply_ttl(rkey, result_ttl)
  redis.call('ZADD', 'rq:finished:' .. queue, expiry_score(now_i, result_ttl), job_id)
  apply_ttl(jkey, result_ttl)
  apply_ttl('rq:job:' .. job_id .. ':dependents', result_ttl)
  apply_ttl('rq:job::' .. job_id .. ':dependencies', result_ttl)
end
rl_release(rl, job_id, status, now_iso)
return {status, moved}
