-- Prelude, not a script: the GCRA math shared by ratelimit_reserve.lua and
-- ratelimit_settle.lua. Never loaded on its own: scripts.source() splices this file in
-- place of each script's "-- #include ratelimit_gcra.lua" line, so Redis still gets one
-- self-contained script per call (one EVALSHA, keys in KEYS, TIME inside).
--
-- The math is _speedups/_bucket_py.py's GCRA in exact integers below 2**53: division
-- goes through math.fmod (exact in IEEE doubles), never through a rounded quotient, and
-- integers are written with %.0f (tostring would print 1.732e+15).
-- Defines: MAX_SAFE, MAX_CAP, MAX_PERIOD, MAX_TIME, MAX_TAT, floor, fmod, fail, divmod,
-- int, muldiv, load, tokens, store, encode, clock (reads ARGV[1] and TIME); and, for the
-- USD budget counters both scripts may carry after the buckets: budget_count, load_used,
-- store_used.

-- BEGIN gcra: shared by ratelimit_reserve.lua and ratelimit_settle.lua
local MAX_SAFE = 9007199254740991 -- 2^53 - 1
local MAX_CAP = 1099511627775 -- 2^40 - 1
local MAX_PERIOD = 1099511627775 -- 2^40 - 1
local MAX_TIME = 4503599627370496 -- 2^52
local MAX_TAT = 9002801208229888 -- 2^53 - 2^42
local floor = math.floor
local fmod = math.fmod

local function fail(kind, msg)
  error({err = kind .. ': ' .. msg})
end

-- (x // d, x % d) for integers 0 <= x < 2^53, d >= 1: fmod is exact, so is the rest.
local function divmod(x, d)
  local r = fmod(x, d)
  return (x - r) / d, r
end

local function int(v, name, lo, hi)
  local x = tonumber(v)
  if x == nil or x ~= floor(x) then
    fail('TypeError', name .. ' must be an int')
  end
  if x < lo or x > hi then
    fail('ValueError', name .. ' must be in [' .. string.format('%.0f', lo) .. ', '
      .. string.format('%.0f', hi) .. ']')
  end
  return x
end

-- (a * b // d, a * b % d) without an intermediate reaching 2^53; (-1, 0) on overflow.
local function muldiv(b, a, d)
  if b <= divmod(MAX_SAFE, a) then
    return divmod(a * b, d)
  end
  -- a * b = qa * b * d + ra * b (a = qa * d + ra): the quotient is qa * b + ra * b // d,
  -- exact whenever ra * b fits, as it does for a token count over a minute's period.
  local qa, ra = divmod(a, d)
  if ra == 0 or b <= divmod(MAX_SAFE, ra) then
    local q, r = divmod(ra * b, d)
    if qa > 0 and b > divmod(MAX_SAFE - q, qa) then
      return -1, 0
    end
    return qa * b + q, r
  end
  local q, r = 0, 0
  local shift = 48
  while shift >= 0 do
    local x = r * 4096 + a * fmod(floor(b / 2 ^ shift), 4096)
    local hi, rr = divmod(x, d)
    if q > floor((MAX_SAFE - hi) / 4096) then
      return -1, 0
    end
    q = q * 4096 + hi
    r = rr
    shift = shift - 12
  end
  return q, r
end

-- The stored state of KEYS[i] for capacity c, tat_frac carried if written under a
-- smaller capacity. Missing key = (0, 0) = full.
local function load(key, c)
  local raw = redis.call('GET', key)
  if not raw then
    return 0, 0
  end
  local sp = string.find(raw, ' ', 1, true)
  if not sp then
    fail('TypeError', 'state must be a (tat_us, tat_frac) pair')
  end
  local tu = int(string.sub(raw, 1, sp - 1), 'state tat_us', 0, MAX_TAT)
  local tf = int(string.sub(raw, sp + 1), 'state tat_frac', 0, MAX_SAFE)
  if tf >= c then
    local q, r = divmod(tf, c)
    tu = tu + q
    tf = r
    if tu > MAX_TAT then
      fail('ValueError', 'state tat_us out of range after carrying tat_frac')
    end
  end
  return tu, tf
end

-- Whole tokens at now for TAT = su + sf/c >= now, clamped at 0.
local function tokens(su, sf, now, c, p)
  local du = now + p - su
  if du <= 0 then
    return 0
  end
  local q, r = muldiv(du - 1, c, p)
  return q + divmod(r + c - sf, p)
end

local function store(key, tu, tf, now, pinned)
  local v = string.format('%.0f %.0f', tu, tf)
  if pinned then
    redis.call('SET', key, v)
  else
    -- Gone once full again (a missing key is a full bucket); 1 s of slack.
    local ahead = tu - now
    if ahead < 0 then
      ahead = 0
    end
    redis.call('SET', key, v, 'PX', string.format('%.0f', floor(ahead / 1000) + 1000))
  end
end

-- One bulk string of space-separated integers: a client parses it in one split,
-- where a long array reply costs a pure-Python RESP parser a few µs per element.
-- One string.format call for them all (a call per value cost ~0.5 µs each).
local function encode(values)
  local n = #values
  if n == 0 then
    return ''
  end
  return string.format(string.rep('%.0f ', n - 1) .. '%.0f', unpack(values, 1, n))
end

local function clock()
  if ARGV[1] ~= nil and ARGV[1] ~= '' then
    return int(ARGV[1], 'now_us', 0, MAX_TIME), true
  end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2]), false
end
-- END gcra

-- BEGIN budget: the USD budget counters (integer nano-USD) after the buckets
-- (#KEYS - d buckets, d budgets): d is the last argument, present only when d > 0.
local function budget_count(per_bucket)
  local total = #KEYS
  if #ARGV == 1 + per_bucket * total then
    return total, 0
  end
  if #ARGV ~= 2 + per_bucket * total then
    fail('ValueError', 'expected 1 + ' .. per_bucket .. ' * #KEYS arguments, +1 with budgets')
  end
  local d = int(ARGV[#ARGV], 'budget count', 1, total)
  return total - d, d
end

local function load_used(key)
  local raw = redis.call('GET', key)
  if not raw then
    return 0
  end
  return int(raw, 'budget used', 0, MAX_SAFE)
end

local function store_used(key, used, expire_at)
  redis.call('SET', key, string.format('%.0f', used))
  if expire_at > 0 then
    redis.call('EXPIREAT', key, string.format('%.0f', expire_at))
  end
end
-- END budget
