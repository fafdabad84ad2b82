-- POSTs one fixed body, read from a file, on every request; prints the results as JSON.
--
--   wrk -t1 -c32 -d15s -s post.lua URL -- BODY_FILE CONTENT_TYPE ["Header: value" ...]
--
-- The body is read in binary mode, so the same script sends JSON and Open Inference
-- Protocol binary tensors. The request is built once per thread (wrk.format) and
-- reused, so the load generator does as little work per request as possible.

local request_bytes

function init(args)
  if #args < 2 then
    error("usage: wrk ... -s post.lua URL -- BODY_FILE CONTENT_TYPE [\"Header: value\" ...]")
  end
  local file = assert(io.open(args[1], "rb"))
  local body = file:read("*a")
  file:close()
  local headers = { ["Content-Type"] = args[2] }
  for i = 3, #args do
    local name, value = string.match(args[i], "^([^:]+):%s*(.*)$")
    if name == nil then
      error("not a header: " .. args[i])
    end
    headers[name] = value
  end
  request_bytes = wrk.format("POST", nil, headers, body)
end

function request()
  return request_bytes
end

-- One line that bench/run.py parses; latencies in microseconds.
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"latency_us": {"p50": %d, "p90": %d, "p99": %d, "max": %d, "mean": %.1f}, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean,
    e.connect, e.read, e.write, e.status, e.timeout))
end
