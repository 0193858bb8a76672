-- A worker with free slots takes jobs: interactive before batch; within a class, the next
-- job of the backlogged queue with the least weighted service (the virtual token counter),
-- whose counter grows at once by the job's estimated prompt tokens / weight. One call, one
-- atomic decision across every worker.
--
-- KEYS[1] service counters (hash)  KEYS[2] counter floors (hash)
-- KEYS[3] interactive backlog      KEYS[4] batch backlog
-- ARGV: jobs stream prefix, consumer group, consumer, now (unix seconds), free slots,
--       free batch slots, cancel key prefix, cancel key suffix
-- Returns {stream, entry id, payload} per job taken. Jobs past their start deadline or
-- cancelled while waiting are acknowledged and dropped, without charge: never started.
-- Either way a job leaves its tenant's waiting set (the entry's 'q') here, in the same
-- step: the gateway need not remove it when the job starts.

local prefix, group, consumer = ARGV[1], ARGV[2], ARGV[3]
local now = tonumber(ARGV[4])
local free, free_batch = tonumber(ARGV[5]), tonumber(ARGV[6])
local picked = {}
local budget = 1000 -- bounds one call's work when many dropped jobs are in the way

for _, class in ipairs({{'interactive', KEYS[3]}, {'batch', KEYS[4]}}) do
  local priority, backlog = class[1], class[2]
  while free > 0 and budget > 0 and (priority == 'interactive' or free_batch > 0) do
    budget = budget - 1
    local queues = redis.call('HKEYS', backlog)
    if #queues == 0 then break end
    local counters = redis.call('HMGET', KEYS[1], unpack(queues))
    local best, least
    for i = 1, #queues do
      local counter = tonumber(counters[i]) or 0
      if least == nil or counter < least or (counter == least and queues[i] < best) then
        best, least = queues[i], counter
      end
    end
    local stream = prefix .. priority .. ':' .. best
    local ok, reply = pcall(redis.call, 'XREADGROUP', 'GROUP', group, consumer,
      'COUNT', 1, 'STREAMS', stream, '>')
    local entry = ok and reply and reply[1][2][1]
    local left = 0
    if entry then left = redis.call('HINCRBY', backlog, best, -1) end
    if entry then
      local f = {}
      for i = 1, #entry[2], 2 do f[entry[2][i]] = entry[2][i + 1] end
      local deadline = tonumber(f['d']) or 0
      local cancelled = redis.call('EXISTS', ARGV[7] .. (f['i'] or '') .. ARGV[8]) == 1
      if f['q'] and f['i'] then redis.call('ZREM', f['q'], f['i']) end
      if (deadline > 0 and deadline < now) or cancelled then
        redis.call('XACK', stream, group, entry[1])
        redis.call('XDEL', stream, entry[1])
      else
        local weight = tonumber(f['w']) or 1
        if weight <= 0 then weight = 1 end
        least = tonumber(redis.call('HINCRBYFLOAT', KEYS[1], best, (tonumber(f['c']) or 0) / weight))
        picked[#picked + 1] = {stream, entry[1], f['m']}
        free = free - 1
        if priority == 'batch' then free_batch = free_batch - 1 end
      end
    end
    if left <= 0 then -- its backlog is empty (or was lost with the stream): it leaves
      redis.call('HDEL', backlog, best)
      redis.call('HSET', KEYS[2], priority, string.format('%.17g', least))
    end
  end
end
return picked
