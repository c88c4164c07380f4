-- Leases of underlyings, one key per underlying (optionsfeed.broker.redis).
--
-- KEYS: lease (`{prefix}:{U}:lease`, in the slot of U's data, so publish.lua can
--       check it atomically with the write).
-- ARGV: op ("take", "renew", "release" or "free"), owner (a random id per processor), ttl_ms.
--
-- take:    SET NX PX; also renews a lease the owner already holds. 1 when held.
-- renew:   PEXPIRE only while the key holds owner (compare-and-expire). 1 when held.
-- release: DEL only while the key holds owner (compare-and-delete). 1 when deleted.
-- free:    changes nothing. 1 when nobody holds it.
-- Returns 0 otherwise: another owner holds it (or, for renew/release, nobody does).
local lease, op, owner, ttl = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local holder = redis.call('GET', lease)
if op == 'take' then
  if not holder then
    redis.call('SET', lease, owner, 'PX', ttl)
    return 1
  end
  if holder == owner then
    redis.call('PEXPIRE', lease, ttl)
    return 1
  end
  return 0
end
if op == 'free' then
  if holder then return 0 end
  return 1
end
if holder ~= owner then
  return 0
end
if op == 'renew' then
  redis.call('PEXPIRE', lease, ttl)
  return 1
end
if op == 'release' then
  redis.call('DEL', lease)
  return 1
end
return redis.error_reply('ERR lease op must be take, renew, release or free')
