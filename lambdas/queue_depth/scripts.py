"""The publisher's server-side reads: Lua scripts that return figures, never whole messages.

A queue's message or an `unacked` entry can be any size and any shape (a 30 MB body, JSON nested a
hundred thousand deep): reading one into the function would tie its memory and its parsing to what
a producer sent. These scripts run on the broker, look at no more than a fixed window of bytes at
each end of a message, and reply with counts and short strings only.

ElastiCache allows EVAL/EVALSHA (its restricted commands are administrative: CONFIG, DEBUG, SAVE and
the like) and asks that every key a script touches be passed in KEYS, which these do, and that
scripts be parameterized so that one cached copy serves every call (ElastiCache guide, "Lua
scripts"). Both are read-only and bounded: about one O(1) command per list, one HSCAN batch of
`unacked` at a time with the Lua heap collected between batches, a byte budget on what they read.
"""

from __future__ import annotations

from hashlib import sha1

# KEYS: the lists of one queue (bare name, then priority siblings).
# ARGV[1]: bytes looked at from each end of a message for the send stamp.
# Reply: {depth, oldest stamp as text or false, then key, type for each key that is not a list}.
# The stamp is searched as the text `"celery_fleet_sent_at": <number>`; in JSON that can only be a
# key (inside a string value the quotes are escaped), and kombu writes headers after the body, so
# the window at the end finds it first.
QUEUE_SCRIPT = """
local window = tonumber(ARGV[1])
local pattern = '"celery_fleet_sent_at"%s*:%s*(%-?[%d][%d%.eE%+%-]*)'
local function stamp(message)
  if not message then return nil end
  local size = #message
  local parts
  if size <= 2 * window then
    parts = {message}
  else
    parts = {string.sub(message, size - window + 1), string.sub(message, 1, window)}
  end
  for _, part in ipairs(parts) do
    local text = string.match(part, pattern)
    if text then
      local value = tonumber(text)
      if value and value == value and value > -math.huge and value < math.huge then
        return string.sub(text, 1, 40), value
      end
    end
  end
  return nil
end
local depth = 0
local oldest_text, oldest = false, nil
local reply = {}
for _, key in ipairs(KEYS) do
  local kind = redis.call('TYPE', key)['ok']
  if kind == 'list' then
    local length = redis.call('LLEN', key)
    depth = depth + length
    local ends = {-1}
    if length > 1 then ends = {-1, 0} end
    for _, index in ipairs(ends) do
      local text, value = stamp(redis.call('LINDEX', key, index))
      if text and (oldest == nil or value < oldest) then
        oldest_text, oldest = text, value
      end
    end
    collectgarbage()
  elseif kind ~= 'none' then
    reply[#reply + 1] = key
    reply[#reply + 1] = kind
  end
end
table.insert(reply, 1, oldest_text)
table.insert(reply, 1, depth)
return reply
"""

# KEYS[1]: kombu's `unacked` hash (delivery tag -> JSON [message, exchange, routing_key]).
# ARGV[1]: most entries read; ARGV[2]: most bytes of entries read; ARGV[3]: bytes looked at from the
# end of an entry for its routing key; ARGV[4..]: the configured queues, each JSON-encoded as kombu
# writes a routing key.
# Reply: {entries (HLEN), 1 if every entry was read else 0, entries per queue in ARGV order...}, or
# {-1, type} when the key is not a hash.
# The routing key is the entry's last JSON string, read backwards from its closing bracket.
UNACKED_SCRIPT = """
local key = KEYS[1]
local max_entries, max_bytes, window = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local kind = redis.call('TYPE', key)['ok']
if kind ~= 'hash' and kind ~= 'none' then return {-1, kind} end
local counts, index = {}, {}
for position = 4, #ARGV do
  counts[position - 3] = 0
  index[ARGV[position]] = position - 3
end
local total = redis.call('HLEN', key)
local function reply(complete)
  local result = {total, complete}
  for position = 1, #counts do result[#result + 1] = counts[position] end
  return result
end
if total > max_entries then return reply(0) end
local function last_string(entry)
  local size = #entry
  local stop = math.max(1, size - window + 1)
  local position = size
  local function skip_space()
    while position >= stop and string.find(' \\t\\r\\n', string.sub(entry, position, position), 1, true) do
      position = position - 1
    end
  end
  skip_space()
  if position < stop or string.byte(entry, position) ~= 93 then return nil end
  position = position - 1
  skip_space()
  if position < stop or string.byte(entry, position) ~= 34 then return nil end
  local closing = position
  position = position - 1
  while position >= stop do
    if string.byte(entry, position) == 34 then
      local backslashes, before = 0, position - 1
      while before >= stop and string.byte(entry, before) == 92 do
        backslashes, before = backslashes + 1, before - 1
      end
      if backslashes % 2 == 0 then return string.sub(entry, position, closing) end
    end
    position = position - 1
  end
  return nil
end
local cursor, read_bytes = '0', 0
repeat
  local batch = redis.call('HSCAN', key, cursor, 'COUNT', 100)
  cursor = batch[1]
  local items = batch[2]
  for position = 2, #items, 2 do
    local entry = items[position]
    read_bytes = read_bytes + #entry
    local queue = index[last_string(entry)]
    if queue then counts[queue] = counts[queue] + 1 end
  end
  batch, items = nil, nil
  collectgarbage()
  if read_bytes > max_bytes then return reply(0) end
until cursor == '0'
return reply(1)
"""


def digest(script: str) -> str:
    """The SHA1 EVALSHA names `script` by (what SCRIPT LOAD returns)."""
    return sha1(script.encode(), usedforsecurity=False).hexdigest()


QUEUE_SCRIPT_SHA = digest(QUEUE_SCRIPT)
UNACKED_SCRIPT_SHA = digest(UNACKED_SCRIPT)
