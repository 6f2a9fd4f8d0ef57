-- The rate-limit reservation of ratelimit_reserve.lua, made only for a request the
-- response cache will send upstream. The gateway sends it in the same write as that
-- request's cache_lookup.lua call, right behind it on the same connection, so Redis runs
-- it just after the lookup and one round trip carries both; it reserves exactly when the
-- request would have reserved after a miss: a hit, or a request that waits for another
-- replica's fill, takes nothing.
--
-- KEYS[1..#KEYS-2]  ratelimit_reserve.lua's KEYS (buckets, then budget counters)
-- KEYS[#KEYS-1]     the cache entry the lookup read     gw:{tenant}:cache:<digest>
-- KEYS[#KEYS]       its fill lock                       gw:{tenant}:lock:<digest>
-- ARGV[1..#ARGV-1]  ratelimit_reserve.lua's ARGV
-- ARGV[#ARGV]       the lookup's lock token, or "" when the lookup took no lock (no-store)
--
-- Reply: "skip" when the entry exists, or the lookup took a lock (token not "") and the
--        lock is not this token's: nothing was read or written beyond the two keys.
--        Else ratelimit_reserve.lua's reply, for its KEYS and ARGV.
-- (Not for Redis Cluster: the cache keys carry the tenant's tag, the buckets theirs.)

local token = table.remove(ARGV)
local lock = table.remove(KEYS)
local entry = table.remove(KEYS)
if redis.call('EXISTS', entry) == 1 then
  return 'skip'
end
if token ~= '' and redis.call('GET', lock) ~= token then
  return 'skip'
end

-- #include ratelimit_reserve.lua
