-- Jobs returned: rq's handle_job_success for each, in one atomic step, including what rq
-- 3.0's worker adds: the next run of a Repeat (rq's Repeat.schedule) and the release of an
-- rq 3.0 rate-limit slot (rq's release_slot). Several jobs that ended close together are
-- settled in one call (the per-call cost is paid once); each is recorded exactly as if it
-- were alone, and the worker's counters and state are updated once for the lot.
-- ARGV: worker, n, then n times:
--       job_id, queue, exec_id, now_iso, now_int, result_ttl, working_secs, callbacks_run
--       ('1': on_success already ran in a Python pool, no note), field_pairs,
--       result fields (name, value, ... field_pairs pairs)
-- Returns, per job in order: {status, {ids of dependents queued}}, where status is
-- 'finished' | 'queued' | 'scheduled' (Repeat) | 'gone' | 'stale' (fencing: the execution
-- was already recovered, nothing was written to the job; see common.lua) |
-- 'error' (the job's record failed; the second element holds the message).
local worker, n = ARGV[1], tonumber(ARGV[2])

-- Repeat.schedule: the first interval is taken (and dropped while more than one is left),
-- repeats_left goes down by one, the job is queued now (interval 0) or scheduled. rq keeps
-- the finished-registry entry and the result, and sets no TTL on the job.
local function schedule_repeat(job_id, queue, now_iso, now_i, repeats_left, raw_intervals)
  local jkey = RQ .. 'job:' .. job_id
  local interval = 0
  if raw_intervals then
    local ok, intervals = pcall(cjson.decode, raw_intervals)
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
    return 'queued'
  end
  redis.call('HSET', jkey, 'status', 'scheduled')
  redis.call('SADD', RQ .. 'queues', RQ .. 'queue:' .. queue)
  redis.call('ZADD', RQ .. 'scheduled:' .. queue, now_i + interval, job_id)
  return 'scheduled'
end

-- One job's success, its execution already out of the started registry.
local function finish_one(job_id, queue, exec_id, now_iso, now_i, result_ttl, fields, callbacks_run)
  local jkey = RQ .. 'job:' .. job_id
  close_execution(job_id, exec_id, worker)
  -- Everything the outcome depends on, in one read; no status means no job.
  local f = redis.call('HMGET', jkey, 'status', 'rate_limit_key', 'rate_limit_concurrency',
    'success_callback_name', 'repeats_left', 'repeat_intervals')
  if not f[1] then return {'gone', {}} end
  local rl = rl_from(f[2], f[3])
  redis.call('HSET', jkey, 'status', 'finished', 'ended_at', now_iso, 'last_heartbeat', now_iso)
  if not callbacks_run then note_callback_named(job_id, f[4], 'on_success') end
  local rkey = RQ .. 'results:' .. job_id
  local xadd = {'XADD', rkey, 'MAXLEN', '~', '10', '*'}
  for _, v in ipairs(fields) do table.insert(xadd, v) end
  redis.call(unpack(xadd))
  local dkey = RQ .. 'job:' .. job_id .. ':dependents'
  local deps = redis.call('SMEMBERS', dkey)
  local moved = enqueue_dependents(job_id, now_iso, deps)
  local status = 'finished'
  local repeats_left = tonumber(f[5] or '')
  if repeats_left and repeats_left > 0 then
    if result_ttl ~= 0 then
      apply_ttl(rkey, result_ttl)
      redis.call('ZADD', RQ .. 'finished:' .. queue, expiry_score(now_i, result_ttl), job_id)
    end
    status = schedule_repeat(job_id, queue, now_iso, now_i, repeats_left, f[6])
  elseif result_ttl == 0 then
    redis.call('DEL', jkey, rkey, dkey, RQ .. 'job::' .. job_id .. ':dependencies')
  else
    apply_ttl(rkey, result_ttl)
    redis.call('ZADD', RQ .. 'finished:' .. queue, expiry_score(now_i, result_ttl), job_id)
    apply_ttl(jkey, result_ttl)
    -- An empty set does not exist in Redis: nothing to expire.
    if #deps > 0 then apply_ttl(dkey, result_ttl) end
    apply_ttl(RQ .. 'job::' .. job_id .. ':dependencies', result_ttl)
  end
  rl_release(rl, job_id, status, now_iso)
  return {status, moved}
end

local out, ended = {}, {}
local done, working = 0, 0
local i = 3
for _ = 1, n do
  local job_id, queue, exec_id = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local now_iso, now_i, result_ttl = ARGV[i + 3], tonumber(ARGV[i + 4]), tonumber(ARGV[i + 5])
  local secs, callbacks_run = tonumber(ARGV[i + 6]) or 0, ARGV[i + 7] == '1'
  local pairs_n = tonumber(ARGV[i + 8])
  local fields = {}
  for k = i + 9, i + 8 + 2 * pairs_n do table.insert(fields, ARGV[k]) end
  i = i + 9 + 2 * pairs_n
  ended[job_id] = true
  -- Fencing: removing the execution from the started registry is also the liveness check.
  if redis.call('ZREM', RQ .. 'wip:' .. queue, job_id .. ':' .. exec_id) == 0 then
    close_execution(job_id, exec_id, worker)
    table.insert(out, {'stale', {}})
  else
    done = done + 1
    working = working + secs
    -- One job's failing command must not undo the others' records.
    local ok, res = pcall(finish_one, job_id, queue, exec_id, now_iso, now_i, result_ttl, fields,
      callbacks_run)
    if ok then
      table.insert(out, res)
    else
      local msg = type(res) == 'table' and (res.err or 'error') or tostring(res)
      table.insert(out, {'error', {msg}})
    end
  end
end
worker_after_ends(worker, ended)
if worker ~= '' and done > 0 then
  redis.call('HINCRBY', RQ .. 'worker:' .. worker, 'successful_job_count', done)
  redis.call('HINCRBYFLOAT', RQ .. 'worker:' .. worker, 'total_working_time',
    string.format('%.6f', working))
end
return out
