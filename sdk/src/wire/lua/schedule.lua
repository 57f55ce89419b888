-- Move due jobs from a queue's scheduled registry onto the queue (rq's
-- enqueue_scheduled_jobs). ZREM decides who moves a job, so it is moved exactly once even
-- if two schedulers race. A job with an rq 3.0 rate limit waits for a slot, as rq's
-- scheduler enqueues it. ARGV: queue, now_int, now_iso, limit. Returns the count moved.
local queue, now_i, now_iso, limit = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local ids = redis.call('ZRANGEBYSCORE', RQ .. 'scheduled:' .. queue, '-inf', now_i, 'LIMIT', 0, limit)
local moved = 0
for _, id in ipairs(ids) do
  if redis.call('ZREM', RQ .. 'scheduled:' .. queue, id) == 1 then
    local jkey = RQ .. 'job:' .. id
    if redis.call('EXISTS', jkey) == 1 then
      enqueue_maybe_limited(id, queue, now_iso, hget(jkey, 'enqueue_at_front') == '1')
      moved = moved + 1
    end
  end
end
return moved
