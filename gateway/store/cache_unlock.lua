-- Release the response cache's fill lock without storing (the fill failed).
--
-- KEYS[1]  the fill lock    gw:{tenant}:lock:<digest>
-- ARGV[1]  the caller's lock token
--
-- Reply: 1 if the caller's lock was deleted, 0 if it had expired or belongs to
-- another request (then it is left alone).
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
