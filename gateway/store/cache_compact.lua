-- Response cache compaction: replace a stored stream (its frames) with the answer
-- assembled from it, keeping the entry's remaining TTL, only if the entry still holds
-- exactly what was read (a newer answer stored meanwhile is left alone).
--
-- KEYS[1]  the entry        gw:{tenant}:cache:<digest>
-- ARGV[1]  the assembled entry bytes
-- ARGV[2]  SHA-1 (hex) of the bytes that were read
--
-- Reply: 1 if replaced, 0 if the entry changed or expired meanwhile.
local current = redis.call('GET', KEYS[1])
if not current or redis.sha1hex(current) ~= ARGV[2] then
  return 0
end
local ttl = redis.call('PTTL', KEYS[1])
if ttl <= 0 then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
return 1
