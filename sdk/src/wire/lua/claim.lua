-- Claim up to `max` jobs from the queues, in strict priority order, and start them: the
-- pop and the start are one atomic step, so a worker crash can never lose a popped job.
-- ARGV: worker, now_iso, now_float, now_int, max, exec_prefix, monitor_interval, grace,
--       mode, job_id, queue names...
-- mode '0': sweep the queues in order; '2': start `job_id`, which the caller moved into the
-- (single) queue's intermediate list with BLMOVE (LREM decides it is ours, as rq's worker
-- does).
-- Returns: { {job_id, queue, exec_id, hash_flat}, ... }
local worker, now_iso, now_f = ARGV[1], ARGV[2], ARGV[3]
local now_i, max = tonumber(ARGV[4]), tonumber(ARGV[5])
local exec_prefix, monitor, grace = ARGV[6], tonumber(ARGV[7]), tonumber(ARGV[8])
local mode, specific = ARGV[9], ARGV[10]
local out = {}
local n = 0
-- The worker's executions set expires once per call, after the longest-lived execution.
local set_ttl = -1

local function start(job_id, queue)
  local jkey = RQ .. 'job:' .. job_id
  local h = redis.call('HGETALL', jkey)
  if #h == 0 then return end -- expired (ttl) or deleted: nothing to run
  local status, raw_timeout
  for i = 1, #h, 2 do
    if h[i] == 'status' then status = h[i + 1] elseif h[i] == 'timeout' then raw_timeout = h[i + 1] end
  end
  if status == 'canceled' or status == 'finished' or status == 'stopped' then return end
  local timeout = parse_timeout(raw_timeout, 180)
  -- rq's heartbeat ttl: min(remaining, monitoring interval) + 60, refreshed by heartbeats.
  local ttl = monitor + grace
  if timeout > 0 and timeout < monitor then ttl = timeout + grace end
  local exec_id = exec_prefix .. string.format('%04x', n)
  local composite = job_id .. ':' .. exec_id
  local ekey = RQ .. 'execution:' .. job_id .. ':' .. exec_id
  redis.call('HSET', ekey, 'id', exec_id, 'job_id', job_id, 'created_at', now_f,
    'last_heartbeat', now_f, 'worker_name', worker)
  redis.call('EXPIRE', ekey, ttl)
  redis.call('ZADD', RQ .. 'executions:' .. job_id, now_i + ttl, exec_id)
  redis.call('EXPIRE', RQ .. 'executions:' .. job_id, ttl + 60)
  redis.call('ZADD', RQ .. 'wip:' .. queue, now_i + ttl, composite)
  redis.call('SADD', RQ .. 'worker:' .. worker .. ':executions', composite)
  if ttl > set_ttl then set_ttl = ttl end
  redis.call('HSET', jkey, 'last_heartbeat', now_iso, 'status', 'started',
    'started_at', now_iso, 'worker_name', worker)
  redis.call('PERSIST', jkey)
  table.insert(out, {job_id, queue, exec_id, h})
  n = n + 1
end

local function mark_busy()
  if n > 0 then
    redis.call('EXPIRE', RQ .. 'worker:' .. worker .. ':executions', set_ttl + 60)
    redis.call('HSET', RQ .. 'worker:' .. worker, 'state', 'busy', 'current_job', out[n][1])
  end
  return out
end

if mode == '2' then
  if redis.call('LREM', RQ .. 'queue:' .. ARGV[11] .. ':intermediate', 1, specific) == 1 then
    start(specific, ARGV[11])
  end
  return mark_busy()
end

for qi = 11, #ARGV do
  local queue = ARGV[qi]
  local src = RQ .. 'queue:' .. queue
  -- Pop as many as slots are left in one command (never more: each id popped is started
  -- or dropped); jobs whose hash is gone leave room for another round.
  while n < max do
    local ids = redis.call('LPOP', src, max - n)
    if not ids then break end
    for _, id in ipairs(ids) do start(id, queue) end
  end
  if n >= max then break end
end
return mark_busy()
