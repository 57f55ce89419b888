-- The true backlog of each queue, read in one round trip and one consistent view
-- (read-only). ARGV, after the two key prefixes every script takes first: now (epoch
-- seconds), horizon (seconds), then the queue names.
-- Returns, per queue: queued (the list plus rq's intermediate list), scheduled jobs due
-- within the horizon (rq's enqueue_in/at and retry delays), started executions (the wip
-- registry, including those of dead workers not yet recovered), deferred jobs (waiting
-- for dependencies).
local RQ = table.remove(ARGV, 1)
table.remove(ARGV, 1) -- mindora's prefix: unused here
local now, horizon = tonumber(ARGV[1]), tonumber(ARGV[2])
local out = {}
for i = 3, #ARGV do
  local q = ARGV[i]
  local queued = redis.call('LLEN', RQ .. 'queue:' .. q)
    + redis.call('LLEN', RQ .. 'queue:' .. q .. ':intermediate')
  out[#out + 1] = queued
  out[#out + 1] = redis.call('ZCOUNT', RQ .. 'scheduled:' .. q, '-inf', now + horizon)
  out[#out + 1] = redis.call('ZCARD', RQ .. 'wip:' .. q)
  out[#out + 1] = redis.call('ZCARD', RQ .. 'deferred:' .. q)
end
return out
