"""The Lua scripts that are the only writers of the Redis quota counters.

Each runs atomically on the server and reads the server's clock (TIME, in
microseconds), so processes with drifting clocks still share one window. They
count in the forms described in `windows` and must agree with `memory`:

  log    ZSET call id -> admission time
  count  HASH bucket index -> calls        (HINCRBYFLOAT)
  sum    HASH bucket index -> tokens/spend (HINCRBYFLOAT)
  slots  ZSET call id -> slot expiry

Every write renews the key's PEXPIRE, so idle subjects vanish on their own.
Limits go in as one text argument and states come back as one string: fewer
arguments and reply elements cost the client less, and Redis would truncate
Lua numbers in a reply to integers anyway.
"""

from __future__ import annotations

_PRELUDE = """
if redis.replicate_commands then redis.replicate_commands() end  -- TIME before writes (Redis < 5)
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])

local function has_room(used, limit, need)
  if need > 0 then return used + need <= limit end
  return used < limit
end

local function need_of(form)
  if form == 'sum' then return 0 end
  return 1
end

-- Numbers are formatted by hand: Lua's own tostring keeps 14 digits, a time in us has 16.
local function fmt(number)
  return string.format('%.17g', number)
end

-- One "<form> <number> <window us>" line per key (one argument: cheaper to send).
local function parse(text)
  local specs = {}
  for form, number, window in string.gmatch(text, '(%S+) (%S+) (%S+)') do
    specs[#specs + 1] = {form = form, limit = tonumber(number), window = tonumber(window)}
  end
  return specs
end

local function expire(key, micros)
  redis.call('PEXPIRE', key, fmt(math.ceil(micros / 1000) + 1))
end

-- Measures one counter (dropping what has left its window): used, and what
-- `wait` needs (the sorted buckets of a bucketed counter).
local function measure(key, form, window, buckets)
  if form == 'log' then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', fmt(now - window))
    return redis.call('ZCARD', key), nil
  end
  if form == 'slots' then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', fmt(now))
    return redis.call('ZCARD', key), nil
  end
  local size = window / buckets
  local first = math.floor(now / size) - buckets
  local flat = redis.call('HGETALL', key)
  local used, kept, stale = 0, {}, {}
  for i = 1, #flat, 2 do
    local index = tonumber(flat[i])
    if index < first then
      stale[#stale + 1] = flat[i]
    else
      local amount = tonumber(flat[i + 1])
      used = used + amount
      kept[#kept + 1] = {index, amount}
    end
  end
  if #stale > 0 then redis.call('HDEL', key, unpack(stale)) end
  table.sort(kept, function(a, b) return a[1] < b[1] end)
  return used, kept
end

-- Microseconds until the counter has room again (it has none now).
local function wait(key, spec, buckets, used, kept, slot_retry)
  local form, limit, window = spec.form, spec.limit, spec.window
  if form == 'log' then
    local whole = math.floor(limit)
    if whole < 1 then return window end
    local entry = redis.call('ZRANGE', key, fmt(used - whole), fmt(used - whole), 'WITHSCORES')
    return tonumber(entry[2]) + window - now
  end
  if form == 'slots' then
    local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    if first[2] then return math.min(slot_retry, tonumber(first[2]) - now) end
    return slot_retry
  end
  local size = window / buckets
  local need = need_of(form)
  for _, bucket in ipairs(kept) do
    used = used - bucket[2]
    if has_room(used, limit, need) then return (bucket[1] + buckets + 1) * size - now end
  end
  return window
end

local function add(key, form, window, buckets, call_id, slot_ttl, amount)
  if form == 'log' then
    redis.call('ZADD', key, fmt(now), call_id)
    expire(key, window)
  elseif form == 'slots' then
    redis.call('ZADD', key, fmt(now + slot_ttl), call_id)
    expire(key, slot_ttl)
  else
    local size = window / buckets
    local index = string.format('%.0f', math.floor(now / size))
    redis.call('HINCRBYFLOAT', key, index, fmt(amount))
    expire(key, window + size)
  end
end
"""

CHECK = (
    _PRELUDE
    + """
-- Admit (count = 1) or only look (count = 0).
-- KEYS[i]: the counter of limit i. ARGV: call id, slot ttl (us), slot retry (us), buckets,
-- count, then one "<form> <limit> <window us>" per key.
-- Reply: "<allowed> <used> <us until room> ..." per key; -1: there is room.
local call_id, slot_ttl = ARGV[1], tonumber(ARGV[2])
local slot_retry, buckets, count = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5] == '1'
local specs = parse(ARGV[6])
local used, kept = {}, {}
local allowed = 1
for i, spec in ipairs(specs) do
  used[i], kept[i] = measure(KEYS[i], spec.form, spec.window, buckets)
  if not has_room(used[i], spec.limit, need_of(spec.form)) then allowed = 0 end
end
local reply = {allowed}
for i, spec in ipairs(specs) do
  local need = need_of(spec.form)
  if count and allowed == 1 and need > 0 then
    add(KEYS[i], spec.form, spec.window, buckets, call_id, slot_ttl, need)
    used[i] = used[i] + need
    if kept[i] then
      kept[i][#kept[i] + 1] = {math.floor(now / (spec.window / buckets)), need}
    end
  end
  local until_room = -1
  if not has_room(used[i], spec.limit, need) then
    until_room = wait(KEYS[i], spec, buckets, used[i], kept[i], slot_retry)
  end
  reply[#reply + 1] = fmt(used[i])
  reply[#reply + 1] = fmt(until_room)
end
return table.concat(reply, ' ')
"""
)

SETTLE = (
    _PRELUDE
    + """
-- KEYS[i]: a counter to settle. ARGV: call id, buckets, then one "<form> <amount> <window us>"
-- per key: 'slots' gives the call's slot back, 'sum' adds the amount to the current bucket.
local call_id, buckets = ARGV[1], tonumber(ARGV[2])
for i, spec in ipairs(parse(ARGV[3])) do
  if spec.form == 'slots' then
    redis.call('ZREM', KEYS[i], call_id)
  else
    add(KEYS[i], spec.form, spec.window, buckets, call_id, 0, spec.limit)
  end
end
return 0
"""
)

FORGET = """
-- KEYS: every counter of one subject (found by SCAN), all dropped at once.
if #KEYS > 0 then return redis.call('DEL', unpack(KEYS)) end
return 0
"""
