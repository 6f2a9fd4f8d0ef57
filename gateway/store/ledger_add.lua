-- Cost ledger increment: add integer deltas to fields of several hashes, in one call (a
-- batch of requests' costs and tokens; all keys share the {spend} hash tag, so the totals
-- per key, per team and over all never disagree, even on a cluster).
--
-- KEYS[i]        a ledger hash ("gw:{spend}:<day>:<entity>")
-- ARGV[1]        seconds each hash lives after its last write (its retention)
-- ARGV[2..]      for each KEYS[i] in order: the count c_i of its fields, then c_i pairs
--                field, delta (integers: nano-USD, tokens, requests)
--
-- Reply: the number of fields incremented.

local ttl = tonumber(ARGV[1])
local at = 2
local count = 0
for i = 1, #KEYS do
  local c = tonumber(ARGV[at])
  at = at + 1
  for _ = 1, c do
    redis.call('HINCRBY', KEYS[i], ARGV[at], ARGV[at + 1])
    at = at + 2
    count = count + 1
  end
  redis.call('EXPIRE', KEYS[i], ttl)
end
return count
