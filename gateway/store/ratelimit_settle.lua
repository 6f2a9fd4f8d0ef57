-- Rate limit settlement: correct reservations to the real usage, in one call; with
-- budgets, correct each budget's hold to the request's real cost in the same call.
--
-- KEYS[i]        bucket i's state, a string "<tat_us> <tat_frac>" (missing = a full bucket),
--                for i <= m = #KEYS - d; then KEYS[m+j], budget counter j (integer nano-USD
--                used, see ratelimit_reserve.lua). All in one hash slot (the caller's tag).
-- ARGV[1]        now in microseconds, or "" to use the server clock (TIME). Only tests pin it;
--                a pinned call also writes without expiry.
-- ARGV[4i-2..4i+1]  capacity_i, period_us_i, reserved_i, actual_i for bucket i
-- ARGV[4m+4j-2..4m+4j+1]  limit_j, reserved_j, actual_j, expire_at_j for budget j (nano-USD;
--                the counter becomes max(0, used - reserved + actual), never refused)
-- ARGV[4m+4d+2]  d, the number of budget counters; present only when d > 0
--
-- Reply: one string of space-separated integers, per bucket i, then per budget j:
--        "remaining_1 tat_us_1 tat_frac_1  remaining_2 ...  used_1 ..."
--   actual < reserved refunds the difference (never above capacity); actual > reserved
--   charges it, never refused: the bucket may go into debt, and later takes wait.
--   remaining is whole tokens after the correction (0 while in debt).
-- Errors: "ValueError: ..." / "TypeError: ..." for arguments out of range, or a charge
-- whose debt would pass MAX_TAT_US, raised before anything is written.
--
-- The math is _speedups/_bucket_py.py's settle(); the shared GCRA block and its
-- exact-integer rules are in ratelimit_gcra.lua (a prelude scripts.py splices in at the
-- #include line below).

-- #include ratelimit_gcra.lua

-- settle(): _bucket_py.settle. Returns nu, nf.
local function settle(tu, tf, now, c, p, res, act)
  local nu, nf
  if tu < now then
    nu, nf = now, 0
  else
    nu, nf = tu, tf
  end
  if act > res then
    local q, r = muldiv(act - res, p, c)
    local carry = (nf + r >= c) and 1 or 0
    if q < 0 or q > MAX_TAT - nu - carry then
      fail('ValueError', 'settle: the charge would put the debt beyond MAX_TAT_US')
    end
    nu = nu + q + carry
    nf = nf + r - carry * c
  elseif res > act then
    local q, r = muldiv(res - act, p, c)
    if q < 0 or q > nu then
      nu, nf = now, 0
    else
      nu = nu - q
      nf = nf - r
      if nf < 0 then
        nf = nf + c
        nu = nu - 1
      end
      if nu < now then
        nu, nf = now, 0
      end
    end
  end
  return nu, nf
end

local n, d = budget_count(4)
local now, pinned = clock()
local spent = {}
for j = 1, d do
  local base = 4 * n + 4 * j - 2
  int(ARGV[base], 'limit', 0, MAX_SAFE)
  local res = int(ARGV[base + 1], 'reserved', 0, MAX_SAFE)
  local act = int(ARGV[base + 2], 'actual', 0, MAX_SAFE)
  local expire_at = int(ARGV[base + 3], 'expire_at', 0, MAX_TIME)
  local used = load_used(KEYS[n + j]) - res
  if used < 0 then
    used = 0
  end
  if act > MAX_SAFE - used then
    fail('ValueError', 'settle: the budget counter would pass 2^53')
  end
  spent[j] = {used + act, expire_at}
end
local rows = {}
for i = 1, n do
  local c = int(ARGV[4 * i - 2], 'capacity', 1, MAX_CAP)
  local p = int(ARGV[4 * i - 1], 'period_us', 1, MAX_PERIOD)
  local res = int(ARGV[4 * i], 'reserved', 0, MAX_SAFE)
  local act = int(ARGV[4 * i + 1], 'actual', 0, MAX_SAFE)
  local tu, tf = load(KEYS[i], c)
  local nu, nf = settle(tu, tf, now, c, p, res, act)
  rows[i] = {nu, nf, tokens(nu, nf, now, c, p)}
end
local reply = {}
for i = 1, n do
  local row = rows[i]
  store(KEYS[i], row[1], row[2], now, pinned)
  reply[#reply + 1] = row[3]
  reply[#reply + 1] = row[1]
  reply[#reply + 1] = row[2]
end
for j = 1, d do
  store_used(KEYS[n + j], spent[j][1], spent[j][2])
  reply[#reply + 1] = spent[j][1]
end
return encode(reply)
