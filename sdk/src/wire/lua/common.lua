-- Shared helpers for mindora's rq state transitions (prepended to each script).
-- Every script runs atomically inside Redis, so no transition can be half-done or done
-- twice by two workers.

-- Key prefixes, passed first in ARGV by every caller (rq 3.0's RQ_KEY_PREFIX joined with
-- ':', e.g. 'rq:', and mindora's own, e.g. 'mindora:'); removed so ARGV[1] is the
-- script's first argument.
local RQ = table.remove(ARGV, 1)
local MINDORA = table.remove(ARGV, 1)

local function hget(key, field)
  local v = redis.call('HGET', key, field)
  if v == false then return nil end
  return v
end

-- rq's parse_timeout: integer, or a number with an s/m/h/d suffix.
local function parse_timeout(v, default)
  if v == nil or v == '' then return default end
  local n = tonumber(v)
  if n then return math.floor(n) end
  local digits, unit = string.match(v, '^%s*(%-?%d+)%s*([smhdSMHD])%s*$')
  if not digits then return default end
  local mul = ({s = 1, m = 60, h = 3600, d = 86400})[string.lower(unit)]
  return tonumber(digits) * mul
end

-- ZADD score for "now + ttl", where a ttl of -1 means forever.
local function expiry_score(now_i, ttl)
  if ttl == -1 then return '+inf' end
  return now_i + ttl
end

-- EXPIRE with rq's ttl conventions: -1 persists, 0 or more expires.
local function apply_ttl(key, ttl)
  if ttl == -1 then
    redis.call('PERSIST', key)
  elseif ttl > 0 then
    redis.call('EXPIRE', key, ttl)
  end
end

-- Push a job id onto its queue as rq's Queue._enqueue_job does.
local function push_queued(job_id, queue, now_iso, at_front)
  local jkey = RQ .. 'job:' .. job_id
  redis.call('HSET', jkey, 'status', 'queued', 'enqueued_at', now_iso)
  redis.call('SADD', RQ .. 'queues', RQ .. 'queue:' .. queue)
  if at_front then
    redis.call('LPUSH', RQ .. 'queue:' .. queue, job_id)
  else
    redis.call('RPUSH', RQ .. 'queue:' .. queue, job_id)
  end
end

-- Drop one execution's own records (its hash, its entry in the job's executions and in
-- the worker's set); the started-registry entry is the caller's (it doubles as the fence).
local function close_execution(job_id, exec_id, worker)
  redis.call('DEL', RQ .. 'execution:' .. job_id .. ':' .. exec_id)
  redis.call('ZREM', RQ .. 'executions:' .. job_id, exec_id)
  if worker ~= '' then
    redis.call('SREM', RQ .. 'worker:' .. worker .. ':executions', job_id .. ':' .. exec_id)
  end
end

-- After executions of `ended` (a set: job id -> true) left the worker's set, `state` and
-- `current_job` follow the worker's whole set of running executions: idle with no current
-- job when none runs, else busy on one that still runs (one job ending does not make a
-- concurrent worker idle). A worker hash that expired or was unregistered is not
-- recreated. Called once per script call, however many executions it ended.
local function worker_after_ends(worker, ended)
  if worker == '' then return end
  local wkey = RQ .. 'worker:' .. worker
  if redis.call('EXISTS', wkey) == 0 then return end
  local other = redis.call('SRANDMEMBER', wkey .. ':executions')
  if not other then
    redis.call('HSET', wkey, 'state', 'idle')
    redis.call('HDEL', wkey, 'current_job')
    return
  end
  local current = hget(wkey, 'current_job')
  if current and ended[current] then
    redis.call('HSET', wkey, 'current_job', string.match(other, '^(.*):[^:]*$') or other)
  end
end

-- Remove one execution from every registry that tracks it.
local function end_execution(job_id, queue, exec_id, worker)
  redis.call('ZREM', RQ .. 'wip:' .. queue, job_id .. ':' .. exec_id)
  close_execution(job_id, exec_id, worker)
  worker_after_ends(worker, {[job_id] = true})
end

-- The server's clock as a float (rq's current_timestamp()), for sorted-set scores.
local function now_float()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end

-- rq 3.0 rate limits (rq/rate_limit.py). A job enqueued with RateLimit(key, concurrency)
-- carries `rate_limit_key` / `rate_limit_concurrency`; `rq:rl:<key>` holds the config,
-- `rq:rl:<key>:allowed` the jobs holding a slot (queued or running), and
-- `rq:rl:<key>:rate_limited` the jobs waiting for one (status `rate_limited`).
local function rl_from(key, concurrency)
  if key and key ~= '' and tonumber(concurrency or '') and tonumber(concurrency) > 0 then
    return {key = key, concurrency = tonumber(concurrency)}
  end
  return nil
end

local function rl_of(job_id)
  local f = redis.call('HMGET', RQ .. 'job:' .. job_id, 'rate_limit_key', 'rate_limit_concurrency')
  return rl_from(f[1], f[2])
end

-- rq's ACQUIRE_AND_ENQUEUE_SCRIPT: fill free slots with waiting jobs, oldest first.
local function rl_acquire(key, concurrency, now_iso)
  local allowed, limited = RQ .. 'rl:' .. key .. ':allowed', RQ .. 'rl:' .. key .. ':rate_limited'
  local ts = now_float()
  local promoted = {}
  while redis.call('ZCARD', allowed) < concurrency do
    local popped = redis.call('ZPOPMIN', limited)
    if #popped == 0 then break end
    local id = popped[1]
    local jkey = RQ .. 'job:' .. id
    local f = redis.call('HMGET', jkey, 'origin', 'status', 'enqueue_at_front')
    if f[1] and f[2] == 'rate_limited' then
      redis.call('ZADD', allowed, ts, id)
      if f[3] == '1' then
        redis.call('LPUSH', RQ .. 'queue:' .. f[1], id)
      else
        redis.call('RPUSH', RQ .. 'queue:' .. f[1], id)
      end
      redis.call('HSET', jkey, 'status', 'queued', 'enqueued_at', now_iso)
      table.insert(promoted, id)
    end
  end
  return promoted
end

-- rq's release_slot after an outcome is persisted: a job whose new status is neither
-- queued nor started gives its slot back, and waiting jobs are promoted (concurrency as
-- stored in the key's config hash, as RateLimitRegistry.concurrency reads it).
local function rl_release(rl, job_id, new_status, now_iso)
  if rl == nil or new_status == 'queued' or new_status == 'started' then return {} end
  redis.call('ZREM', RQ .. 'rl:' .. rl.key .. ':allowed', job_id)
  local c = tonumber(hget(RQ .. 'rl:' .. rl.key, 'concurrency') or '0') or 0
  return rl_acquire(rl.key, c, now_iso)
end

-- rq's Queue._enqueue_rate_limited_job for a job that is about to be queued (scheduled,
-- ready dependent, retried from the scheduled registry): it waits as `rate_limited` and is
-- promoted at once when a slot is free.
local function rl_enqueue(rl, job_id, queue, now_iso, at_front)
  local jkey = RQ .. 'job:' .. job_id
  redis.call('SADD', RQ .. 'rl-keys', rl.key)
  redis.call('HSET', RQ .. 'rl:' .. rl.key, 'concurrency', rl.concurrency)
  redis.call('SADD', RQ .. 'queues', RQ .. 'queue:' .. queue)
  redis.call('HSET', jkey, 'status', 'rate_limited')
  if at_front then redis.call('HSET', jkey, 'enqueue_at_front', '1') end
  redis.call('ZADD', RQ .. 'rl:' .. rl.key .. ':rate_limited', now_float(), job_id)
  rl_acquire(rl.key, rl.concurrency, now_iso)
end

-- Queue a job the way rq 3.0 does from the scheduler and the ready registry: through its
-- rate limit when it has one, else straight onto the queue.
local function enqueue_maybe_limited(job_id, queue, now_iso, at_front)
  local rl = rl_of(job_id)
  if rl then
    rl_enqueue(rl, job_id, queue, now_iso, at_front)
  else
    push_queued(job_id, queue, now_iso, at_front)
  end
end

-- Python callbacks (on_success / on_failure / on_stopped) are not run by this worker: the
-- job's own record says so, next to the outcome.
local function note_callback_named(job_id, name, hook)
  if name and name ~= '' then
    redis.call('HSET', RQ .. 'job:' .. job_id, 'mindora_callbacks_not_run',
      hook .. ' callback ' .. name .. ' was not run: mindora-worker runs no Python callbacks (without --python)')
  end
end

local function note_callback_not_run(job_id, field, hook)
  note_callback_named(job_id, hget(RQ .. 'job:' .. job_id, field), hook)
end

-- rq's enqueue_dependents: a deferred dependent whose every dependency is finished (or,
-- with allow_dependency_failures, ended in any way) leaves the deferred registry and is
-- queued. ZREM decides who moves it, so it is moved exactly once.
local function enqueue_dependents(parent_id, now_iso, deps)
  local moved = {}
  deps = deps or redis.call('SMEMBERS', RQ .. 'job:' .. parent_id .. ':dependents')
  for _, dep in ipairs(deps) do
    local dkey = RQ .. 'job:' .. dep
    local status = hget(dkey, 'status')
    if status == 'deferred' then
      local allow_failures = hget(dkey, 'allow_dependency_failures') == '1'
      local ready = true
      local parents = redis.call('SMEMBERS', RQ .. 'job::' .. dep .. ':dependencies')
      for _, p in ipairs(parents) do
        local ps = hget(RQ .. 'job:' .. p, 'status')
        local ok = (ps == 'finished')
        if allow_failures and (ps == 'failed' or ps == 'stopped' or ps == 'canceled') then ok = true end
        if not ok then ready = false; break end
      end
      if ready then
        local origin = hget(dkey, 'origin') or 'default'
        if redis.call('ZREM', RQ .. 'deferred:' .. origin, dep) == 1 then
          enqueue_maybe_limited(dep, origin, now_iso, hget(dkey, 'enqueue_at_front') == '1')
          table.insert(moved, dep)
        end
      end
    end
  end
  return moved
end

-- Record a final failure as rq's Job._handle_failure + FailedJobRegistry.add do.
local function record_failure(job_id, queue, status, now_iso, now_i, failure_ttl, result_fields)
  local jkey = RQ .. 'job:' .. job_id
  redis.call('HSET', jkey, 'status', status, 'ended_at', now_iso)
  apply_ttl(jkey, failure_ttl)
  apply_ttl(RQ .. 'job:' .. job_id .. ':dependents', failure_ttl)
  apply_ttl(RQ .. 'job::' .. job_id .. ':dependencies', failure_ttl)
  redis.call('ZADD', RQ .. 'failed:' .. queue, expiry_score(now_i, failure_ttl), job_id)
  local rkey = RQ .. 'results:' .. job_id
  local xadd = {'XADD', rkey, 'MAXLEN', '~', '10', '*'}
  for _, v in ipairs(result_fields) do table.insert(xadd, v) end
  redis.call(unpack(xadd))
  apply_ttl(rkey, failure_ttl)
end

-- rq's Job.retry: decrement retries_left, then schedule after the interval or queue now.
-- mindora_retries counts the retries, so the next attempt knows its number.
local function retry_job(job_id, queue, now_iso, now_i, delay_secs)
  local jkey = RQ .. 'job:' .. job_id
  local left = tonumber(hget(jkey, 'retries_left') or '0') - 1
  redis.call('HSET', jkey, 'retries_left', left)
  redis.call('HINCRBY', jkey, 'mindora_retries', 1)
  if delay_secs > 0 then
    redis.call('HSET', jkey, 'status', 'scheduled')
    redis.call('SADD', RQ .. 'queues', RQ .. 'queue:' .. queue)
    redis.call('ZADD', RQ .. 'scheduled:' .. queue, now_i + delay_secs, job_id)
    return 'scheduled'
  end
  push_queued(job_id, queue, now_iso, hget(jkey, 'enqueue_at_front_on_retry') == '1')
  return 'queued'
end

-- rq's Job.get_retry_interval for the retry about to be taken.
local function rq_retry_interval(job_id)
  local jkey = RQ .. 'job:' .. job_id
  local raw = hget(jkey, 'retry_intervals')
  if raw == nil then return 0 end
  local ok, intervals = pcall(cjson.decode, raw)
  if not ok or type(intervals) ~= 'table' or #intervals == 0 then return 0 end
  local left = tonumber(hget(jkey, 'retries_left') or '0')
  local idx = #intervals - left
  if idx < 0 then idx = 0 end
  if idx > #intervals - 1 then idx = #intervals - 1 end
  return math.floor(tonumber(intervals[idx + 1]) or 0)
end

-- What rq does with the job of an abandoned execution: retried if it has retries left, else
-- failed as AbandonedJobError; an rq 3.0 rate-limit slot it held is released as rq's cleanup
-- does. Returns the job's new status, or nil when it is no longer started (someone else
-- settled it).
local function abandon_job(job_id, queue, now_iso, now_i, exc_b64)
  local jkey = RQ .. 'job:' .. job_id
  if hget(jkey, 'status') ~= 'started' then return nil end
  local rl = rl_of(job_id)
  local left = tonumber(hget(jkey, 'retries_left') or '0')
  if left > 0 then
    local status = retry_job(job_id, queue, now_iso, now_i, rq_retry_interval(job_id))
    rl_release(rl, job_id, status, now_iso)
    return status
  end
  local ttl = tonumber(hget(jkey, 'failure_ttl') or '31536000')
  record_failure(job_id, queue, 'failed', now_iso, now_i, ttl,
    {'type', '2', 'worker_name', '', 'exc_string', exc_b64})
  enqueue_dependents(job_id, now_iso)
  rl_release(rl, job_id, 'failed', now_iso)
  return 'failed'
end

-- '1' when an abandoned job ended `failed` and has rq 3.0 webhooks to send (the worker sends
-- them after the script, as rq's cleanup does), else '0'.
local function failed_with_webhooks(job_id, outcome)
  if outcome ~= 'failed' then return '0' end
  local w = hget(RQ .. 'job:' .. job_id, 'webhooks')
  if w and w ~= '' and w ~= '[]' then return '1' end
  return '0'
end

-- Fencing: an execution may record an outcome only while it is still live, i.e. its member
-- `<job_id>:<exec_id>` is still in the started registry. Recovery (ours after a lapsed
-- lease, or rq's TTL rule) removes it, so the late outcome of a recovered execution must
-- not touch the job, whose newer execution owns it now. The caller returns this reply:
-- the stale execution's own bookkeeping is dropped and the worker sees a STALE error.
local function execution_is_live(job_id, queue, exec_id)
  return redis.call('ZSCORE', RQ .. 'wip:' .. queue, job_id .. ':' .. exec_id) ~= false
end

local function stale_outcome(job_id, queue, exec_id, worker)
  end_execution(job_id, queue, exec_id, worker)
  return redis.error_reply('STALE execution ' .. exec_id .. ' of job ' .. job_id ..
    ' was recovered; its outcome is dropped')
end
