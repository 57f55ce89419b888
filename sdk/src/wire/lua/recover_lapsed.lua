-- Crash recovery in seconds: executions of mindora workers whose liveness lease
-- (`mindora:worker-lease:<name>`, renewed by every heartbeat) has lapsed are recovered now,
-- without waiting for rq's TTL rule. Only workers that registered with a lease (field
-- `mindora_lease_ms` in their hash) are looked at: Python rq workers write none, so their
-- jobs keep rq's own rules. Each execution still in its started registry ends (which also
-- clears it from the dead worker's hash) and its job is retried or failed as abandoned,
-- as recover.lua does. A worker restarting under the name of a dead one (`restarted`)
-- recovers that name's leftover executions at once, whatever the old lease says (its
-- hash may be gone; a Python rq worker's hash is left alone).
-- The same call reconciles a worker with a new master after a failover (`restarted` is
-- the worker itself): executions listed after ARGV[4] are the ones it still runs and are
-- kept; the rest (their outcome went to the old master and was lost) are recovered now.
-- A job failed here (not one queued again) is reported with whether it carries rq
-- Webhooks, so the caller sends its `failed` webhooks as rq 3.0's cleanup does.
-- ARGV: now_int, now_iso, exc_string_b64, restarted ('' for none), kept composites...
-- Returns: { {job_id, queue, outcome, has_webhooks ('1' / '0')}, ... }
local now_i, now_iso, exc_b64, restarted = tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4] or ''
local prefix = RQ .. 'worker:'
local out = {}
local kept = {}
for i = 5, #ARGV do
  kept[ARGV[i]] = true
end

local function recover_worker(wkey, worker)
  for _, composite in ipairs(redis.call('SMEMBERS', wkey .. ':executions')) do
    local job_id, exec_id = string.match(composite, '^(.*):([^:]*)$')
    local queue = job_id and hget(RQ .. 'job:' .. job_id, 'origin')
    if kept[composite] then
      -- still running in this worker
    elseif queue and execution_is_live(job_id, queue, exec_id) then
      end_execution(job_id, queue, exec_id, worker)
      local outcome = abandon_job(job_id, queue, now_iso, now_i, exc_b64)
      if outcome then
        table.insert(out, {job_id, queue, outcome, failed_with_webhooks(job_id, outcome)})
      end
    else
      redis.call('SREM', wkey .. ':executions', composite)
    end
  end
end

if restarted ~= '' then
  local wkey = prefix .. restarted
  -- Never a Python rq worker's executions, should one have had this name.
  if redis.call('EXISTS', wkey) == 0 or hget(wkey, 'mindora_lease_ms') then
    recover_worker(wkey, restarted)
  end
  return out
end
for _, wkey in ipairs(redis.call('SMEMBERS', RQ .. 'workers')) do
  local worker = string.sub(wkey, #prefix + 1)
  if hget(wkey, 'mindora_lease_ms') and
      redis.call('EXISTS', MINDORA .. 'worker-lease:' .. worker) == 0 then
    recover_worker(wkey, worker)
  end
end
return out
