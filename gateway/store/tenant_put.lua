-- Tenant record write: a virtual key or team record, its index entry and its digest entry,
-- in one call (the admin API's writes; all keys share the {tenants} hash tag).
--
-- KEYS[1]        the record ("gw:{tenants}:key:<id>" or "gw:{tenants}:team:<id>")
-- KEYS[2]        the index set of that kind's ids
-- KEYS[3..]      digest entries: with ARGV[3] = 1, KEYS[3] is written (a copy of the record,
--                what the auth path reads in one GET); every other one is deleted
-- ARGV[1]        the id
-- ARGV[2]        the record's JSON, or "" to delete the record and its index entry
-- ARGV[3]        1 if KEYS[3] is the digest entry to write, else 0
--
-- Reply: the number of keys written or deleted.

local ident, record = ARGV[1], ARGV[2]
local mapped = tonumber(ARGV[3]) == 1
local changed = 0
if record == '' then
  changed = changed + redis.call('DEL', KEYS[1])
  redis.call('SREM', KEYS[2], ident)
else
  redis.call('SET', KEYS[1], record)
  redis.call('SADD', KEYS[2], ident)
  changed = changed + 1
end
for i = 3, #KEYS do
  if i == 3 and mapped then
    redis.call('SET', KEYS[i], record)
    changed = changed + 1
  else
    changed = changed + redis.call('DEL', KEYS[i])
  end
end
return changed
