-- wrk script for scripts/bench.py: each thread replays its share of a file of pre-signed
-- callbacks, one per line: nonce TAB timestamp TAB signature TAB body.
local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  local path, nthreads = args[1], tonumber(args[2])
  reqs = {}
  local i = 0
  for line in io.lines(path) do
    if i % nthreads == id then
      local nonce, ts, sig, body = line:match("^([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$")
      table.insert(reqs, wrk.format("POST", "/webhooks/sinch", {
        ["Content-Type"] = "application/json",
        ["x-sinch-webhook-signature"] = sig,
        ["x-sinch-webhook-signature-nonce"] = nonce,
        ["x-sinch-webhook-signature-timestamp"] = ts,
        ["x-sinch-webhook-signature-algorithm"] = "HmacSHA256",
      }, body))
    end
    i = i + 1
  end
  idx = 0
end

function request()
  idx = idx + 1
  if idx > #reqs then idx = 1 end
  return reqs[idx]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, ' ..
    '"non2xx": %d, "connect": %d, "read": %d, "write": %d, "timeout": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect, e.read, e.write, e.timeout))
end
