-- Renew the concurrency leases of requests still running on this gateway. KEYS: lease
-- ZSETs; ARGV: new expiry (ms), lease ttl (ms), then request ids, one per key.
local expiry, ttl = tonumber(ARGV[1]), tonumber(ARGV[2])
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, 'XX', expiry, ARGV[i + 2])
  redis.call('PEXPIRE', key, ttl)
end
return #KEYS
