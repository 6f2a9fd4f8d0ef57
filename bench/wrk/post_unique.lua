-- wrk script for bench/e2e.py's production targets: like post.lua, but every request
-- is different, so the gateway's response cache never hits. The body in $BENCH_BODY
-- holds the placeholder @@UNIQUE@@ (in the user message); each request replaces it
-- with "$BENCH_NONCE-<thread>-<counter>" ($BENCH_NONCE: one value per wrk run, so a
-- second run does not repeat the first one's bodies).
local path = assert(os.getenv("BENCH_BODY"), "BENCH_BODY is not set")
local f = assert(io.open(path, "rb"))
local body = f:read("*a")
f:close()
local head, rest = body:match("^(.-)@@UNIQUE@@(.*)$")
assert(head, "no @@UNIQUE@@ in " .. path)
local prefix = head .. (os.getenv("BENCH_NONCE") or tostring(os.time())) .. "-"

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("BENCH_KEY") or "bench-key")

local threads = 0
function setup(thread)
   threads = threads + 1
   thread:set("thread_id", threads)
end

local counter = 0
function request()
   counter = counter + 1
   return wrk.format(nil, nil, nil, prefix .. thread_id .. "-" .. counter .. rest)
end
