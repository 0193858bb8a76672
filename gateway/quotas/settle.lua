-- Settle an admitted request: correct its token reservation to the true usage, give back
-- its concurrency slots and count it in its tenant's usage of the current UTC hour.
-- KEYS: the six keys per scope of admission.lua, then (when ARGV[3] is given) the tenant's
-- hourly usage hash. ARGV: request id, tokens used minus tokens reserved, tokens used
-- (empty: no usage hash), the usage hash's time to live (s). Idempotent for the lease; call
-- it once per request.

local id, delta, used = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local scope_keys = #KEYS
if used then
  local hour = KEYS[#KEYS]
  scope_keys = #KEYS - 1
  redis.call('HINCRBY', hour, 'tokens', used)
  redis.call('HINCRBY', hour, 'requests', 1)
  redis.call('EXPIRE', hour, tonumber(ARGV[4]))
end
for s = 0, scope_keys / 6 - 1 do
  local tok, amounts, leases, day, month =
    KEYS[s * 6 + 2], KEYS[s * 6 + 3], KEYS[s * 6 + 4], KEYS[s * 6 + 5], KEYS[s * 6 + 6]
  if delta ~= 0 and redis.call('ZSCORE', tok, id) then  -- still inside its minute
    redis.call('HINCRBY', amounts, id, delta)
    redis.call('HINCRBY', amounts, '_sum', delta)
  end
  if delta ~= 0 then
    for _, key in ipairs({day, month}) do
      if redis.call('EXISTS', key) == 1 then redis.call('INCRBY', key, delta) end
    end
  end
  redis.call('ZREM', leases, id)
end
return 1
