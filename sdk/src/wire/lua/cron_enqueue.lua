-- One tick of a cron entry, enqueued exactly once however many schedulers run the same
-- entry: `SET NX` on the tick's key decides who enqueues it, in the same atomic step as the
-- enqueue itself (so a scheduler that dies after the claim cannot lose the tick). The job
-- is a plain rq job; like rq's CronJob.enqueue it is recorded in the entry's job history
-- (`rq:cron_job:<name>:jobs`) and in rq 3.0's cron job registry (`rq:cron_jobs`).
-- ARGV: tick_key, tick_claim_ttl, job_id, queue, now_iso, now_float, cron_name,
--       history_limit, history_ttl, job_ttl (or ''), then field pairs of the job hash
--       (without status / enqueued_at).
-- Returns 1 when this call enqueued the tick, 0 when another scheduler already had.
local tick_key, claim_ttl, job_id, queue = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local now_iso, now_f, name = ARGV[5], tonumber(ARGV[6]), ARGV[7]
local limit, history_ttl, job_ttl = tonumber(ARGV[8]), tonumber(ARGV[9]), ARGV[10]
if not redis.call('SET', tick_key, job_id, 'NX', 'EX', claim_ttl) then return 0 end
local jkey = RQ .. 'job:' .. job_id
local hset = {'HSET', jkey}
for i = 11, #ARGV do table.insert(hset, ARGV[i]) end
redis.call(unpack(hset))
push_queued(job_id, queue, now_iso, false)
if job_ttl ~= '' then redis.call('EXPIRE', jkey, tonumber(job_ttl)) end
local history = RQ .. 'cron_job:' .. name .. ':jobs'
redis.call('ZADD', history, now_f, job_id)
redis.call('ZREMRANGEBYRANK', history, 0, -(limit + 1))
redis.call('EXPIRE', history, history_ttl)
redis.call('ZADD', RQ .. 'cron_jobs', now_f, name)
return 1
