-- Admission: every limit of every scope (tenant, user, key) decided in one atomic step.
--
-- KEYS, six per scope: requests (ZSET request id -> time), tokens (ZSET request id ->
-- time), token amounts (HASH request id -> tokens, plus field "_sum"), concurrency leases
-- (ZSET request id -> lease expiry), tokens spent today, tokens spent this month.
-- ARGV: now_ms (empty: Redis TIME), request id, tokens to reserve, lease ttl ms, end of today (unix s), end of
-- this month (unix s), then per scope: rpm, tpm, concurrency, day budget, month budget
-- (0: no limit).
--
-- Windows are exact sliding minutes: at most rpm requests, and at most tpm reserved tokens,
-- were admitted in any 60 s. Nothing is written unless every limit admits the request.
-- Returns {admitted, reason, retry_after_ms, rpm, remaining requests, requests reset ms,
-- tpm, remaining tokens, tokens reset ms} for the tightest scope of each kind.

local now = tonumber(ARGV[1])
if not now then  -- no clock given: Redis's own, the same for every gateway replica
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local id = ARGV[2]
local tokens = tonumber(ARGV[3])
local lease_ttl = tonumber(ARGV[4])
local day_end, month_end = tonumber(ARGV[5]), tonumber(ARGV[6])
local WINDOW = 60000
local N = 6
local scopes = #KEYS / N

local function prune_tokens(tokens_key, amounts_key)
  local old = redis.call('ZRANGEBYSCORE', tokens_key, '-inf', now - WINDOW)
  if #old > 0 then
    local spent = redis.call('HMGET', amounts_key, unpack(old))
    local total = 0
    for _, v in ipairs(spent) do total = total + (tonumber(v) or 0) end
    redis.call('HINCRBY', amounts_key, '_sum', -total)
    redis.call('HDEL', amounts_key, unpack(old))
    redis.call('ZREMRANGEBYSCORE', tokens_key, '-inf', now - WINDOW)
  end
  return tonumber(redis.call('HGET', amounts_key, '_sum') or '0')
end

-- the time until `needed` more units fit, as entries of the window age out
local function wait_for(zset, amounts_key, over)
  local entries = redis.call('ZRANGE', zset, 0, -1, 'WITHSCORES')
  local freed = 0
  for i = 1, #entries, 2 do
    if amounts_key then
      freed = freed + (tonumber(redis.call('HGET', amounts_key, entries[i])) or 0)
    else
      freed = freed + 1
    end
    if freed >= over then return tonumber(entries[i + 1]) + WINDOW - now end
  end
  return WINDOW
end

local best_req = {-1, -1, 0}  -- limit, remaining, reset ms (the tightest scope)
local best_tok = {-1, -1, 0}
local refusal, retry = nil, 0

for s = 0, scopes - 1 do
  local requests, tok, amounts, leases, day, month =
    KEYS[s * N + 1], KEYS[s * N + 2], KEYS[s * N + 3], KEYS[s * N + 4], KEYS[s * N + 5],
    KEYS[s * N + 6]
  local base = 6 + s * 5
  local rpm, tpm, concurrency = tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2]), tonumber(ARGV[base + 3])
  local day_budget, month_budget = tonumber(ARGV[base + 4]), tonumber(ARGV[base + 5])

  if rpm > 0 then
    redis.call('ZREMRANGEBYSCORE', requests, '-inf', now - WINDOW)
    local used = redis.call('ZCARD', requests)
    local remaining = rpm - used
    local reset = 0
    if used > 0 then
      reset = tonumber(redis.call('ZRANGE', requests, 0, 0, 'WITHSCORES')[2]) + WINDOW - now
    end
    if remaining < 1 and not refusal then
      refusal, retry = 'requests_per_minute', wait_for(requests, nil, used - rpm + 1)
    end
    if best_req[1] < 0 or remaining < best_req[2] then best_req = {rpm, remaining, reset} end
  end

  if tpm > 0 then
    local used = prune_tokens(tok, amounts)
    local remaining = tpm - used
    local reset = 0
    if used > 0 then
      reset = tonumber(redis.call('ZRANGE', tok, 0, 0, 'WITHSCORES')[2]) + WINDOW - now
    end
    if tokens > tpm and not refusal then
      refusal, retry = 'request_exceeds_tokens_per_minute', -1
    elseif remaining < tokens and not refusal then
      refusal, retry = 'tokens_per_minute', wait_for(tok, amounts, tokens - remaining)
    end
    if best_tok[1] < 0 or remaining < best_tok[2] then best_tok = {tpm, remaining, reset} end
  end

  if concurrency > 0 then
    redis.call('ZREMRANGEBYSCORE', leases, '-inf', now)
    if redis.call('ZCARD', leases) >= concurrency and not refusal then
      local first = redis.call('ZRANGE', leases, 0, 0, 'WITHSCORES')
      refusal, retry = 'concurrent_requests', math.min(1000, tonumber(first[2]) - now)
    end
  end

  if day_budget > 0 and not refusal then
    if tonumber(redis.call('GET', day) or '0') + tokens > day_budget then
      refusal, retry = 'daily_token_budget', (day_end * 1000) - now
    end
  end
  if month_budget > 0 and not refusal then
    if tonumber(redis.call('GET', month) or '0') + tokens > month_budget then
      refusal, retry = 'monthly_token_budget', (month_end * 1000) - now
    end
  end
end

if not refusal then
  for s = 0, scopes - 1 do
    local requests, tok, amounts, leases, day, month =
      KEYS[s * N + 1], KEYS[s * N + 2], KEYS[s * N + 3], KEYS[s * N + 4], KEYS[s * N + 5],
      KEYS[s * N + 6]
    local base = 6 + s * 5
    if tonumber(ARGV[base + 1]) > 0 then
      redis.call('ZADD', requests, now, id)
      redis.call('PEXPIRE', requests, WINDOW)
    end
    if tonumber(ARGV[base + 2]) > 0 then
      redis.call('ZADD', tok, now, id)
      redis.call('HSET', amounts, id, tokens)
      redis.call('HINCRBY', amounts, '_sum', tokens)
      redis.call('PEXPIRE', tok, WINDOW)
      redis.call('PEXPIRE', amounts, WINDOW)
    end
    if tonumber(ARGV[base + 3]) > 0 then
      redis.call('ZADD', leases, now + lease_ttl, id)
      redis.call('PEXPIRE', leases, lease_ttl)
    end
    if tonumber(ARGV[base + 4]) > 0 then
      redis.call('INCRBY', day, tokens)
      redis.call('EXPIREAT', day, day_end + 86400)  -- a day's grace for late corrections
    end
    if tonumber(ARGV[base + 5]) > 0 then
      redis.call('INCRBY', month, tokens)
      redis.call('EXPIREAT', month, month_end + 86400)
    end
  end
  if best_req[1] >= 0 then best_req[2] = best_req[2] - 1 end
  if best_tok[1] >= 0 then best_tok[2] = best_tok[2] - tokens end
end

return {refusal and 0 or 1, refusal or '', retry, best_req[1], best_req[2], best_req[3],
        best_tok[1], best_tok[2], best_tok[3]}
