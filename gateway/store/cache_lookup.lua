-- Response cache lookup, with the cross-replica single-flight lock, in one round trip.
--
-- KEYS[1]  the entry        gw:{tenant}:cache:<digest>
-- KEYS[2]  the fill lock    gw:{tenant}:lock:<digest>   (same hash slot: the {tenant} tag)
-- ARGV[1]  this caller's lock token (random, unique per request)
-- ARGV[2]  lock lifetime in milliseconds; "0" = only look, never lock
--
-- Reply: {entry, held}
--   entry  the stored bytes, or nil on a miss
--   held   1 when, after this call, the caller holds the lock (it was free, or
--          already the caller's), so it should fill the entry; 0 when another
--          request holds it (wait and look again) or on a hit.
local entry = redis.call('GET', KEYS[1])
if entry then
  return {entry, 0}
end
if ARGV[2] == '0' then
  return {false, 0}
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {false, 1}
end
if redis.call('GET', KEYS[2]) == ARGV[1] then
  return {false, 1}
end
return {false, 0}
