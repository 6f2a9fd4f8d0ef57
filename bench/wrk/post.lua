-- wrk script for bench/e2e.py: POST the JSON body in the file named by $BENCH_BODY
-- (a chat request; the streaming cells use a body with "stream": true) with
-- Content-Type and a bearer key ($BENCH_KEY, default "bench-key").
local path = assert(os.getenv("BENCH_BODY"), "BENCH_BODY is not set")
local f = assert(io.open(path, "rb"))
local body = f:read("*a")
f:close()

wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("BENCH_KEY") or "bench-key")
