-- A sweeper claims the accepted requests of a gateway taken for dead, atomically with
-- that gateway's own registry writes (HSET in enqueue.lua, HDEL when it claims an outcome).
--
-- KEYS[1] the gateway's liveness key     KEYS[2] its registry of accepted requests (hash)
-- KEYS[3] its requests being swept (hash) KEYS[4] its fence key
-- KEYS[5] the sweeper claim key           KEYS[6] the set of gateway ids
-- ARGV: sweeper id, claim TTL (ms), fence TTL (s), the swept gateway's id
--
-- Returns false if the gateway is alive or another sweeper holds the claim; else the
-- entries to sweep (HGETALL's flat list: request id, value, ...). An empty list: nothing
-- is left; the gateway is forgotten (its claim key deleted, its id removed from KEYS[6]).

if redis.call('EXISTS', KEYS[1]) == 1 then
  return false
end
local holder = redis.call('GET', KEYS[5])
if holder and holder ~= ARGV[1] then
  return false
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('SET', KEYS[4], '1', 'EX', ARGV[3])
  if redis.call('EXISTS', KEYS[3]) == 0 then
    redis.call('RENAME', KEYS[2], KEYS[3])
  else  -- a dead sweeper left some; the gateway came back and died again meanwhile
    local moved = redis.call('HGETALL', KEYS[2])
    for i = 1, #moved, 2 do
      redis.call('HSET', KEYS[3], moved[i], moved[i + 1])
    end
    redis.call('DEL', KEYS[2])
  end
end
local entries = redis.call('HGETALL', KEYS[3])
if #entries == 0 then
  redis.call('DEL', KEYS[5])
  redis.call('SREM', KEYS[6], ARGV[4])
else
  redis.call('SET', KEYS[5], ARGV[1], 'PX', ARGV[2])
end
return entries
