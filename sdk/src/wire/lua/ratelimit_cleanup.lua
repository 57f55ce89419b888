-- rq 3.0's RateLimitRegistry.cleanup for every key in `rq:rl-keys` (maintenance): a slot
-- held by a job that is neither queued nor started and has no live execution leaked (the
-- job expired, was deleted, or its worker died before releasing): it is freed. Free slots
-- are then filled with waiting jobs, and a key with nothing allowed or waiting is dropped.
-- ARGV: now_iso, now_float. Returns the number of jobs promoted.
local now_iso, now_f = ARGV[1], ARGV[2]
local promoted = 0
for _, key in ipairs(redis.call('SMEMBERS', RQ .. 'rl-keys')) do
  local allowed, limited = RQ .. 'rl:' .. key .. ':allowed', RQ .. 'rl:' .. key .. ':rate_limited'
  for _, id in ipairs(redis.call('ZRANGE', allowed, 0, -1)) do
    local status = hget(RQ .. 'job:' .. id, 'status')
    if status ~= 'queued' and status ~= 'started'
      and redis.call('ZCOUNT', RQ .. 'executions:' .. id, '(' .. now_f, '+inf') == 0 then
      redis.call('ZREM', allowed, id)
    end
  end
  local c = tonumber(hget(RQ .. 'rl:' .. key, 'concurrency') or '0') or 0
  local n = 0
  if c > 0 then n = #rl_acquire(key, c, now_iso) end
  promoted = promoted + n
  if n == 0 and redis.call('ZCARD', allowed) == 0 and redis.call('ZCARD', limited) == 0 then
    redis.call('SREM', RQ .. 'rl-keys', key)
    redis.call('DEL', allowed, limited, RQ .. 'rl:' .. key)
  end
end
return promoted
