-- One wrk case. BENCH_PATHS: a file of request targets, taken in turn by each connection;
-- BENCH_MISS_PERCENT: that share of requests get a unique extra query parameter, which
-- neither pixxel-proxy (an unknown list parameter is forwarded) nor nginx (a new cache key)
-- can answer from cache. BENCH_TOKEN: the client token. Prints one RESULT line.
local token = os.getenv("BENCH_TOKEN")
local missPercent = tonumber(os.getenv("BENCH_MISS_PERCENT") or "0")
-- Unique per wrk run: a nonce seen in an earlier run would be a hit in nginx's cache.
local runID = os.getenv("BENCH_RUN_ID") or tostring(os.time())
local paths = {}
for line in io.lines(os.getenv("BENCH_PATHS")) do paths[#paths + 1] = line end

local threadCount = 0
function setup(thread)
    threadCount = threadCount + 1
    thread:set("threadNumber", threadCount)
end

local counter = 0
local headers = { ["Authorization"] = "Bearer " .. token }
local prepared = {}

function init(args)
    for i, path in ipairs(paths) do prepared[i] = wrk.format("GET", path, headers) end
end

-- One fixed request: wrk sends it from a prepared buffer, without calling Lua per request.
wrk.path = paths[1]
wrk.headers["Authorization"] = headers["Authorization"]

if #paths > 1 or missPercent > 0 then
    function request()
        counter = counter + 1
        if missPercent > 0 and counter % 100 < missPercent then
            return wrk.format("GET", paths[1] .. "?bench_nonce=" .. runID .. "-" .. (threadNumber or 0) .. "-" .. counter, headers)
        end
        return prepared[(counter % #prepared) + 1]
    end
end

function done(summary, latency, requests)
    -- errors.status counts answers with a status of 400 or more.
    local errors = summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout
    io.write(string.format("RESULT %.0f %d %d %d %d %d\n", summary.requests / (summary.duration / 1e6),
        latency:percentile(50), latency:percentile(99), errors, summary.errors.status, summary.requests))
end
