-- wrk script for bench/media.py --wrk: every request asks for a random 64 KiB range
-- of a file of WRK_SIZE bytes (the same ranges the Python client asks for).
local size = tonumber(os.getenv("WRK_SIZE"))
local span = 65536
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("seed", counter)
end

function init(args)
  math.randomseed(os.time() * 1000 + (seed or 0))
end

function request()
  local start = math.random(0, size - span - 1)
  wrk.headers["Range"] = "bytes=" .. start .. "-" .. (start + span - 1)
  return wrk.format(nil, nil, wrk.headers)
end
