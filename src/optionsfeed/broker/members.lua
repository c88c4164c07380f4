-- Processors' membership and notices (optionsfeed.broker.redis).
--
-- KEYS: members (sorted set: processor id -> when its heartbeat lapses, in ms of the
--       server's clock), notices (stream of short notes). Both carry the hash tag
--       `{processors}`, so a cluster keeps them in one slot and this script is atomic.
-- ARGV: op ("join", "leave" or "notify"), member, ttl_ms, notices_maxlen, note.
--
-- join:   add or refresh member, lapsing ttl_ms from now; a new member adds a notice.
-- leave:  remove member and add a notice.
-- notify: refresh member as join does, and add the notice `note` (e.g. leases released).
-- Lapsed members are removed first. Returns the live members.
-- The server's clock is the only one read, so processors' clocks need not agree.
local members, notices = KEYS[1], KEYS[2]
local op, member, ttl, maxlen, note = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', members, '-inf', now)
if op == 'join' or op == 'notify' then
  local added = redis.call('ZADD', members, now + ttl, member)
  if op == 'notify' then
    redis.call('XADD', notices, 'MAXLEN', '~', maxlen, '*', 'n', note)
  elseif added == 1 then
    redis.call('XADD', notices, 'MAXLEN', '~', maxlen, '*', 'n', 'joined ' .. member)
  end
elseif op == 'leave' then
  redis.call('ZREM', members, member)
  redis.call('XADD', notices, 'MAXLEN', '~', maxlen, '*', 'n', 'left ' .. member)
else
  return redis.error_reply('ERR members op must be join, leave or notify')
end
-- Idle keys go away with their last member.
redis.call('PEXPIRE', members, ttl * 10)
redis.call('PEXPIRE', notices, ttl * 10)
return redis.call('ZRANGE', members, 0, -1)
