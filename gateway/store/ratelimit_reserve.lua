-- Rate limit reservation: take n_i tokens from every bucket, all or nothing, in one call;
-- with budgets, hold each request's maximum cost on its USD budget counters in the same call.
--
-- KEYS[i]        bucket i's state, a string "<tat_us> <tat_frac>" (missing = a full bucket),
--                for i <= m = #KEYS - d; then KEYS[m+j], budget counter j: the integer
--                nano-USD used in its period (settled spend + holds in flight; missing = 0).
--                All in one hash slot (the caller's hash tag).
-- ARGV[1]        now in microseconds, or "" to use the server clock (TIME). Only tests pin it;
--                a pinned call also writes without expiry so its keys outlive slow tests.
-- ARGV[3i-1..3i+1]  capacity_i, period_us_i, n_i for bucket i (integers, as _speedups.bucket)
-- ARGV[3m+3j-1..3m+3j+1]  limit_j, amount_j, expire_at_j for budget j: its limit and the hold
--                (nano-USD), and the unix second after which the counter may go (0: never)
-- ARGV[3m+3d+2]  d, the number of budget counters; present only when d > 0 (so a call
--                without budgets is exactly the rate-limit layout, 1 + 3 * #KEYS arguments)
--
-- Reply: one string of space-separated integers:
--        "allowed  ok_1 remaining_1 retry_after_us_1 reset_us_1 tat_us_1 tat_frac_1  ...
--         bok_1 used_1 ..."
--   allowed   1 if every bucket had n_i tokens and every budget had room for its amount
--             (used + amount <= limit): all were taken and written; 0 if any refused:
--             nothing was written.
--   bok_j     1 if budget j alone had room; used_j its counter after the call (before the
--             hold on a refusal).
--   ok_i      1 if bucket i alone could take n_i (so a refusal names its buckets)
--   remaining whole tokens in bucket i after this call (before the take on a refusal)
--   retry     0 when ok_i; else exact microseconds until n_i are there; -1 = never
--             (n_i > capacity_i)
--   reset     microseconds until bucket i is full again
--   tat_us, tat_frac   the bucket's state after this call (what is stored)
-- Errors: "ValueError: ..." / "TypeError: ..." for arguments or a stored state out of
-- range, raised before anything is written.
--
-- The math is _speedups/_bucket_py.py's GCRA, shared with ratelimit_settle.lua through
-- ratelimit_gcra.lua (a prelude scripts.py splices in at the #include line below).

-- #include ratelimit_gcra.lua

-- take(): _bucket_py.take. Returns ok, nu, nf, remaining, retry, reset (on a refusal the
-- state is unchanged and remaining/reset are the bucket's before the take).
local function take(tu, tf, now, c, p, k)
  local bu, bf
  if tu < now then
    bu, bf = now, 0
  else
    bu, bf = tu, tf
  end
  if k > c then
    return false, tu, tf, tokens(bu, bf, now, c, p), -1, bu - now + ((bf > 0) and 1 or 0)
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
    return false, tu, tf, tokens(bu, bf, now, c, p), wait, bu - now + ((bf > 0) and 1 or 0)
  end
  return true, nu, nf, tokens(nu, nf, now, c, p), 0, nu - now + ((nf > 0) and 1 or 0)
end

-- A bucket that could take its share while another refused reports itself as it
-- stands: its tokens and reset before the take (computed only then).
local function before(tu, tf, now, c, p)
  if tu < now then
    return tokens(now, 0, now, c, p), 0
  end
  return tokens(tu, tf, now, c, p), tu - now + ((tf > 0) and 1 or 0)
end

local n, d = budget_count(3)
local now, pinned = clock()
local rows = {}
local allowed = 1
local holds = {}
for j = 1, d do
  local base = 3 * n + 3 * j - 1
  local limit = int(ARGV[base], 'limit', 0, MAX_SAFE)
  local amount = int(ARGV[base + 1], 'amount', 0, MAX_SAFE)
  local expire_at = int(ARGV[base + 2], 'expire_at', 0, MAX_TIME)
  local used = load_used(KEYS[n + j])
  local ok = amount <= limit and used <= limit - amount
  holds[j] = {ok, used, amount, expire_at}
  if not ok then
    allowed = 0
  end
end
for i = 1, n do
  local c = int(ARGV[3 * i - 1], 'capacity', 1, MAX_CAP)
  local p = int(ARGV[3 * i], 'period_us', 1, MAX_PERIOD)
  local k = int(ARGV[3 * i + 1], 'n', 0, MAX_SAFE)
  local tu, tf = load(KEYS[i], c)
  local ok, nu, nf, rem, retry, reset = take(tu, tf, now, c, p, k)
  rows[i] = {ok, nu, nf, rem, retry, reset, tu, tf, c, p}
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
    local rem, reset = row[4], row[6]
    if row[1] then
      rem, reset = before(row[7], row[8], now, row[9], row[10])
    end
    reply[#reply + 1] = row[1] and 1 or 0
    reply[#reply + 1] = rem
    reply[#reply + 1] = row[5]
    reply[#reply + 1] = reset
    reply[#reply + 1] = row[7]
    reply[#reply + 1] = row[8]
  end
end
for j = 1, d do
  local h = holds[j]
  local used = h[2]
  if allowed == 1 then
    used = used + h[3]
    store_used(KEYS[n + j], used, h[4])
  end
  reply[#reply + 1] = h[1] and 1 or 0
  reply[#reply + 1] = used
end
return encode(reply)
