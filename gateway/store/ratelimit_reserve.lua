-- Rate limit reservation: take n_i tokens from every bucket, all or nothing, in one call.
--
-- KEYS[i]        bucket i's state, a string "<tat_us> <tat_frac>" (missing = a full bucket),
--                all in one hash slot (the caller's hash tag)
-- ARGV[1]        now in microseconds, or "" to use the server clock (TIME). Only tests pin it;
--                a pinned call also writes without expiry so its keys outlive slow tests.
-- ARGV[3i-1..3i+1]  capacity_i, period_us_i, n_i for bucket i (integers, as _speedups.bucket)
--
-- Reply: one string of space-separated integers:
--        "allowed  ok_1 remaining_1 retry_after_us_1 reset_us_1 tat_us_1 tat_frac_1  ..."
--   allowed   1 if every bucket had n_i tokens: all were taken and written; 0 if any
--             refused: nothing was written.
--   ok_i      1 if bucket i alone could take n_i (so a refusal names its buckets)
--   remaining whole tokens in bucket i after this call (before the take on a refusal)
--   retry     0 when ok_i; else exact microseconds until n_i are there; -1 = never
--             (n_i > capacity_i)
--   reset     microseconds until bucket i is full again
--   tat_us, tat_frac   the bucket's state after this call (what is stored)
-- Errors: "ValueError: ..." / "TypeError: ..." for arguments or a stored state out of
-- range, raised before anything is written.
--
-- The math is _speedups/_bucket_py.py's GCRA in exact integers below 2**53: division
-- goes through math.fmod (exact in IEEE doubles), never through a rounded quotient, and
-- integers are written with %.0f (tostring would print 1.732e+15).

-- BEGIN gcra: identical in ratelimit_reserve.lua and ratelimit_settle.lua (tested)
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
local function encode(values)
  local out = {}
  for i = 1, #values do
    out[i] = string.format('%.0f', values[i])
  end
  return table.concat(out, ' ')
end

local function clock()
  if ARGV[1] ~= nil and ARGV[1] ~= '' then
    return int(ARGV[1], 'now_us', 0, MAX_TIME), true
  end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2]), false
end
-- END gcra

-- take(): _bucket_py.take, plus the bucket's remaining/reset before the take.
-- Returns ok, nu, nf, remaining, retry, reset, remaining_before, reset_before.
local function take(tu, tf, now, c, p, k)
  local bu, bf
  if tu < now then
    bu, bf = now, 0
  else
    bu, bf = tu, tf
  end
  local rem0 = tokens(bu, bf, now, c, p)
  local reset0 = bu - now + ((bf > 0) and 1 or 0)
  if k > c then
    return false, tu, tf, rem0, -1, reset0, rem0, reset0
  end
  local q, r = muldiv(k, p, c)
  local nu = bu + q
  local nf = bf + r
  if nf >= c then
    nf = nf - c
    nu = nu + 1
  end
  local wait = nu + ((nf > 0) and 1 or 0) - now - p
  if wait > 0 then
    return false, tu, tf, rem0, wait, reset0, rem0, reset0
  end
  return true, nu, nf, tokens(nu, nf, now, c, p), 0, nu - now + ((nf > 0) and 1 or 0), rem0, reset0
end

local n = #KEYS
if #ARGV ~= 1 + 3 * n then
  fail('ValueError', 'expected 1 + 3 * #KEYS arguments')
end
local now, pinned = clock()
local rows = {}
local allowed = 1
for i = 1, n do
  local c = int(ARGV[3 * i - 1], 'capacity', 1, MAX_CAP)
  local p = int(ARGV[3 * i], 'period_us', 1, MAX_PERIOD)
  local k = int(ARGV[3 * i + 1], 'n', 0, MAX_SAFE)
  local tu, tf = load(KEYS[i], c)
  local ok, nu, nf, rem, retry, reset, rem0, reset0 = take(tu, tf, now, c, p, k)
  rows[i] = {ok, nu, nf, rem, retry, reset, tu, tf, rem0, reset0}
  if not ok then
    allowed = 0
  end
end

local reply = {allowed}
for i = 1, n do
  local row = rows[i]
  if allowed == 1 then
    store(KEYS[i], row[2], row[3], now, pinned)
    reply[#reply + 1] = 1
    reply[#reply + 1] = row[4]
    reply[#reply + 1] = 0
    reply[#reply + 1] = row[6]
    reply[#reply + 1] = row[2]
    reply[#reply + 1] = row[3]
  else
    -- Nothing taken: report every bucket as it stands (its own retry if it refused).
    reply[#reply + 1] = row[1] and 1 or 0
    reply[#reply + 1] = row[9]
    reply[#reply + 1] = row[5]
    reply[#reply + 1] = row[10]
    reply[#reply + 1] = row[7]
    reply[#reply + 1] = row[8]
  end
end
return encode(reply)
