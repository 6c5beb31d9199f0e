-- wrk script for loadtest/run.sh: walks a precomputed request list and prints one JSON line.
--
--   wrk -s walk.lua URL -- LIST_FILE MODE COUNT THREADS
--     LIST_FILE  one URL path per line (e.g. /ipfs/bafk...)
--     MODE       "loop": cycle through the list until wrk's -d ends (hit scenarios);
--                "once": each thread sends its share of the list exactly once, then stops;
--                        -d is only an upper bound (Zipf scenario: the cache sees the list once)
--     COUNT      "1": define response() and count status codes and the tier headers
--                (X-Cache-Status from nginx, X-Cidgate-Tier from cidgate). It makes wrk copy
--                headers and bodies into Lua, so it is only used where counts are needed.
--     THREADS    wrk's -t (thread k takes list entries k, k+T, k+2T, ...)
--
-- A one-line list with MODE loop and COUNT 0 is a static request (no Lua per request), as fast
-- as wrk gets. done() prints "LOADTEST_JSON {...}" with requests/s, latency percentiles (µs),
-- bytes, errors and the counts.

local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } loadtest_timespec;
  int clock_gettime(int clk_id, loadtest_timespec *tp);
]]
local ts = ffi.new("loadtest_timespec")
local function now_us()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC: comparable across threads
  return tonumber(ts.tv_sec) * 1000000 + math.floor(tonumber(ts.tv_nsec) / 1000)
end

-- ---------------------------------------------------------------- main state: setup / done
local threads = {}
local next_tid = 0

function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
  table.insert(threads, thread)
end

-- ---------------------------------------------------------------- thread state
local reqs, n, pos = {}, 0, 1
local once = false
local passes = 0
first_us, stop_us, finished, sent = 0, 0, 0, 0
status_counts = {}
tier_counts = {}

local verifying = false -- wrk calls request() once on thread 0 to validate it, before the run

local function walk_request()
  if verifying then
    verifying = false
    return reqs[1]
  end
  if pos > n then
    if once then
      if finished == 0 then
        finished = 1
        stop_us = now_us()
        wrk.thread:stop()
      end
      return reqs[n] -- never answered: the thread's loop is stopping
    end
    pos = 1
    passes = passes + 1
  end
  if first_us == 0 then first_us = now_us() end
  local r = reqs[pos]
  pos = pos + 1
  sent = sent + 1
  return r
end

local function header(headers, a, b)
  return headers[a] or headers[b]
end

local function count_response(status, headers, body)
  local k = tostring(status)
  status_counts[k] = (status_counts[k] or 0) + 1
  local tier = header(headers, "X-Cache-Status", "x-cache-status")
      or header(headers, "X-Cidgate-Tier", "x-cidgate-tier")
      or "-"
  tier_counts[tier] = (tier_counts[tier] or 0) + 1
end

function init(args)
  local file, mode, count, nthreads = args[1], args[2] or "loop", args[3] or "0", tonumber(args[4] or "1")
  if not file then error("walk.lua: usage: -- LIST_FILE MODE COUNT THREADS") end
  once = (mode == "once")
  mode_name = once and "once" or "loop"
  local f = assert(io.open(file, "r"), "walk.lua: cannot open " .. file)
  local i, only = 0, nil
  for line in f:lines() do
    if line ~= "" then
      only = line
      if i % nthreads == tid then
        n = n + 1
        reqs[n] = wrk.format("GET", line)
      end
      i = i + 1
    end
  end
  f:close()
  if i == 1 and not once then
    -- one URL: a static request, wrk sends the same bytes without calling into Lua
    wrk.path = only
    n = 1
  elseif n == 0 then
    error("walk.lua: no entries for thread " .. tostring(tid) .. " in " .. file)
  else
    request = walk_request
    verifying = (tid == 0)
  end
  if count == "1" then response = count_response end
  list_entries = n
end

-- ---------------------------------------------------------------- JSON out
local function json_value(v)
  local t = type(v)
  if t == "table" then
    local parts = {}
    if #v > 0 then
      for _, x in ipairs(v) do parts[#parts + 1] = json_value(x) end
      return "[" .. table.concat(parts, ",") .. "]"
    end
    local keys = {}
    for key in pairs(v) do keys[#keys + 1] = key end
    table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
    for _, key in ipairs(keys) do
      parts[#parts + 1] = string.format("%q", tostring(key)) .. ":" .. json_value(v[key])
    end
    return "{" .. table.concat(parts, ",") .. "}"
  elseif t == "string" then
    return string.format("%q", v)
  elseif t == "boolean" then
    return tostring(v)
  elseif t == "nil" then
    return "null"
  elseif v ~= v or v == math.huge or v == -math.huge then
    return "null"
  elseif v == math.floor(v) and math.abs(v) < 1e15 then
    return string.format("%d", v)
  else
    return string.format("%.6g", v)
  end
end

local function merge(into, from)
  if type(from) ~= "table" then return end
  for k, v in pairs(from) do into[k] = (into[k] or 0) + v end
end

function done(summary, latency, requests)
  local statuses, tiers = {}, {}
  local first, last, all_finished, mode = nil, 0, true, "loop"
  local per_thread = {}
  for _, t in ipairs(threads) do
    merge(statuses, t:get("status_counts"))
    merge(tiers, t:get("tier_counts"))
    local f, s = t:get("first_us") or 0, t:get("stop_us") or 0
    if f > 0 and (first == nil or f < first) then first = f end
    if s > last then last = s end
    if (t:get("finished") or 0) == 0 then all_finished = false end
    mode = t:get("mode_name") or mode
    per_thread[#per_thread + 1] = { tid = t:get("tid"), sent = t:get("sent"), entries = t:get("list_entries") }
  end
  local wrk_s = summary.duration / 1e6
  local elapsed = wrk_s
  -- "once" mode: when every thread got through its share, the run ended before -d did.
  if mode == "once" and all_finished and first and last > first then elapsed = (last - first) / 1e6 end
  local out = {
    requests = summary.requests,
    wrk_duration_s = wrk_s,
    elapsed_s = elapsed,
    mode = mode,
    list_finished = nil,
    rps = summary.requests / elapsed,
    bytes = summary.bytes,
    bytes_per_s = summary.bytes / elapsed,
    errors = {
      connect = summary.errors.connect, read = summary.errors.read, write = summary.errors.write,
      status = summary.errors.status, timeout = summary.errors.timeout,
    },
    latency_us = {
      mean = latency.mean, stdev = latency.stdev, min = latency.min, max = latency.max,
      p50 = latency:percentile(50), p90 = latency:percentile(90), p95 = latency:percentile(95),
      p99 = latency:percentile(99), p999 = latency:percentile(99.9),
    },
    status = statuses,
    tiers = tiers,
    threads = per_thread,
  }
  if mode == "once" then out.list_finished = all_finished end
  io.write("LOADTEST_JSON " .. json_value(out) .. "\n")
end
