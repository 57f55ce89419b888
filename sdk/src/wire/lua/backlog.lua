-- The true backlog of each queue, read in one round trip and one consistent view
-- (read-only). ARGV: now (epoch seconds), horizon (seconds), then the queue names.
-- Returns, per queue: queued (the list plus rq's intermediate list), scheduled jobs due
-- within the horizon (rq's enqueue_in/at and retry delays), started executions (the wip
-- registry, including those of dead workers not yet recovered), deferred jobs (waiting
-- for dependencies).
local now, horizon = tonumber(ARGV[1]), tonumber(ARGV[2])
local out = {}
for i = 3, #ARGV do
  local q = ARGV[i]
  local queued = redis.call('LLEN', 'rq:queue:' .. q)
    + redis.call('LLEN', 'rq:queue:' .. q .. ':intermediate')
  out[#out + 1] = queued
  out[#out + 1] = redis.call('ZCOUNT', 'rq:scheduled:' .. q, '-inf', now + horizon)
  out[#out + 1] = redis.call('ZCARD', 'rq:wip:' .. q)
  out[#out + 1] = redis.call('ZCARD', 'rq:deferred:' .. q)
end
return out
