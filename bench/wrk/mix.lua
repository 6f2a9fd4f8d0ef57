-- wrk script for bench/e2e.py --soak (bench/soak.py): cycles through the request bodies
-- whose files are listed in $BENCH_MIX (one path a line; a body listed twice is sent
-- twice as often), POSTing each with Content-Type and a bearer key ($BENCH_KEY), and
-- tallies the response statuses, printed at the end as "status <code> <count>" lines.
local list = assert(os.getenv("BENCH_MIX"), "BENCH_MIX is not set")
local bodies = {}
for name in io.lines(list) do
   local f = assert(io.open(name, "rb"))
   bodies[#bodies + 1] = f:read("*a")
   f:close()
end
assert(#bodies > 0, "no bodies listed in " .. list)

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("BENCH_KEY") or "bench-key")

local threads = {}
function setup(thread)
   threads[#threads + 1] = thread
end

local sent = 0
function request()
   sent = sent + 1
   return wrk.format(nil, nil, nil, bodies[(sent - 1) % #bodies + 1])
end

statuses = {}  -- global: done() reads it from each thread
function response(status, headers, body)
   statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
   local total = {}
   for _, thread in ipairs(threads) do
      for code, n in pairs(thread:get("statuses")) do
         total[code] = (total[code] or 0) + n
      end
   end
   for code, n in pairs(total) do
      io.write(string.format("status %d %d\n", code, n))
   end
end
