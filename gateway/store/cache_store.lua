-- Response cache store: write the entry with its TTL and release the fill lock.
--
-- KEYS[1]  the entry        gw:{tenant}:cache:<digest>
-- KEYS[2]  the fill lock    gw:{tenant}:lock:<digest>   (same hash slot)
-- ARGV[1]  the entry bytes
-- ARGV[2]  TTL in milliseconds (the server expires it: its clock, not ours)
-- ARGV[3]  the caller's lock token, or "" when it holds no lock
--
-- Reply: 1. The lock is deleted only if it is still the caller's: a lock that
-- expired and was taken by another request is left alone.
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if ARGV[3] ~= '' and redis.call('GET', KEYS[2]) == ARGV[3] then
  redis.call('DEL', KEYS[2])
end
return 1
