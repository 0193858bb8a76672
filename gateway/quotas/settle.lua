-- Settle an admitted request: correct its token reservation to the true usage and give back
-- its concurrency slots. KEYS: the six keys per scope of admission.lua. ARGV: request id,
-- tokens used minus tokens reserved. Idempotent for the lease; call it once per request.

local id, delta = ARGV[1], tonumber(ARGV[2])
for s = 0, #KEYS / 6 - 1 do
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
