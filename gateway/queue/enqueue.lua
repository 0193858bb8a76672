-- Queue one job in its (model, priority, queue) stream, atomically with the fairness state.
--
-- KEYS[1] the queue's jobs stream      KEYS[2] the model's set of streams
-- KEYS[3] the class's backlog hash     KEYS[4] the model's service counters (hash)
-- KEYS[5] the model's counter floors   KEYS[6] the tenant's waiting jobs (zset, by deadline)
-- KEYS[7] (optional) the gateway's registry of accepted requests (hash)
-- ARGV: queue, payload, job id, start_by (0: none), cost (tokens), weight, priority,
--       work channel, expiry of KEYS[6] (unix seconds; 0: not tracked), consumer group,
--       (with KEYS[7]) the registry entry of the job's request
--
-- A queue that becomes backlogged has its counter lifted to the least counter among the
-- class's backlogged queues (or, if none, to the counter of the queue that left last), so
-- time spent idle is not banked as credit (VTC, Sheng et al., OSDI 2024).

local queue = ARGV[1]
if KEYS[7] then  -- registered in the same step: no job without its entry, nor the reverse
  redis.call('HSET', KEYS[7], ARGV[3], ARGV[11])
end
if redis.call('HEXISTS', KEYS[3], queue) == 0 then
  local floor
  local active = redis.call('HKEYS', KEYS[3])
  if #active > 0 then
    local counters = redis.call('HMGET', KEYS[4], unpack(active))
    for i = 1, #active do
      local counter = tonumber(counters[i]) or 0
      if floor == nil or counter < floor then floor = counter end
    end
  else
    floor = tonumber(redis.call('HGET', KEYS[5], ARGV[7])) or 0
  end
  local mine = tonumber(redis.call('HGET', KEYS[4], queue)) or 0
  if floor > mine then
    redis.call('HSET', KEYS[4], queue, string.format('%.17g', floor))
  end
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('XGROUP', 'CREATE', KEYS[1], ARGV[10], '0', 'MKSTREAM')
end
redis.call('SADD', KEYS[2], KEYS[1])
local id
if ARGV[9] ~= '0' then  -- 'q': where the worker that takes the job stops counting it
  id = redis.call('XADD', KEYS[1], '*',
    'm', ARGV[2], 'i', ARGV[3], 'd', ARGV[4], 'c', ARGV[5], 'w', ARGV[6], 'q', KEYS[6])
  redis.call('ZADD', KEYS[6], ARGV[4], ARGV[3])
  redis.call('EXPIREAT', KEYS[6], ARGV[9])
else
  id = redis.call('XADD', KEYS[1], '*',
    'm', ARGV[2], 'i', ARGV[3], 'd', ARGV[4], 'c', ARGV[5], 'w', ARGV[6])
end
redis.call('HINCRBY', KEYS[3], queue, 1)
redis.call('PUBLISH', ARGV[8], ARGV[7])
return id
