-- Apply one Publication to one underlying, atomically (optionsfeed.broker.redis).
--
-- KEYS: meta (hash), chain (hash), hist (stream), live (pub/sub channel), lease
--       (string: the owner's id); all carry the same {U} hash tag, so a cluster
--       keeps them in one slot.
-- ARGV: epoch, prev, seq, ts, payload, reset ("1"/"0"),
--       info (ChainInfo JSON, "" = keep the current listing), maxlen,
--       publish ("PUBLISH" on one Redis, "SPUBLISH" on a cluster: a shard channel,
--       checked against this script's slot like the keys),
--       owner (the publisher's lease id; "" = no lease check),
--       then record pairs: field, full record JSON, ...
--
-- Returns 1 when applied. Refuses with an error reply starting "FENCED" (and writes
-- nothing) when an owner is given and the lease key does not hold it: the check is
-- atomic with the write, so a processor whose lease lapsed or was taken over (a
-- stale leader: frozen, partitioned) can never write, whatever its clock says. Refuses with an error reply starting "CONFLICT" (and
-- writes nothing) when a non-reset publication does not continue the cache's
-- epoch/seq. The Python side checks seq >= 1 and seq > prev before sending, so
-- XADD cannot fail after the first write. No JSON is parsed here: the processor
-- sends finished records.
local meta, chain, hist, live, lease = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local epoch, prev, seq, ts = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local payload, reset, info, maxlen = ARGV[5], ARGV[6] == '1', ARGV[7], ARGV[8]
local publish, owner = ARGV[9], ARGV[10]
if owner ~= '' then
  local holder = redis.call('GET', lease)
  if holder ~= owner then
    return redis.error_reply('FENCED lease held by ' .. (holder or 'nobody'))
  end
end
if publish ~= 'PUBLISH' and publish ~= 'SPUBLISH' then
  return redis.error_reply('ERR publish command must be PUBLISH or SPUBLISH')
end

if reset then
  -- A new epoch: the old cache and history go in the same atomic step, since
  -- stream ids only grow and the old records must not outlive their epoch.
  redis.call('DEL', chain, hist)
else
  local cur = redis.call('HMGET', meta, 'epoch', 'seq')
  -- Both are compared as strings: Python writes canonical decimal integers.
  if cur[1] ~= epoch or cur[2] ~= prev then
    local have = 'nothing'
    if cur[1] then have = cur[1] .. '/' .. tostring(cur[2]) end
    return redis.error_reply('CONFLICT cache at ' .. have .. ', publication continues ' .. epoch .. '/' .. prev)
  end
end

redis.call('XADD', hist, 'MAXLEN', '~', maxlen, seq .. '-0', 'e', payload)

-- unpack() is limited by Lua's C stack (about 8000 values): 1000 pairs per HSET.
local n = #ARGV
local i = 11
while i <= n do
  local j = math.min(i + 1999, n)
  redis.call('HSET', chain, unpack(ARGV, i, j))
  i = j + 1
end

if info ~= '' then
  redis.call('HSET', meta, 'epoch', epoch, 'seq', seq, 'updated_us', ts, 'info', info)
else
  redis.call('HSET', meta, 'epoch', epoch, 'seq', seq, 'updated_us', ts)
end
redis.call(publish, live, payload)
return 1
