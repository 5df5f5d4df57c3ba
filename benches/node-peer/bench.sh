#!/usr/bin/env bash
# The Node peer under the same load as shared/tools/floor/bench.sh: nginx as WeChat on
# 127.0.0.1:18190, the peer on 127.0.0.1:18500, wrk -t1 -c64 -d8s three times on /healthz
# and on returning logins, with the peer's CPU per login. Run it next to loadtest.sh on
# wxauth and compare the ratios of one session, never absolute figures.
# Needs: npm ci here (see README.md), apt-get install -y wrk nginx-light bc.
set -euo pipefail
cd "$(dirname "$0")"
T=$(mktemp -d)
cat > "$T/nginx.conf" <<NG
worker_processes 1; pid $T/nginx.pid; error_log $T/error.log; events { worker_connections 4096; }
http { access_log off; client_body_temp_path $T; proxy_temp_path $T; fastcgi_temp_path $T; uwsgi_temp_path $T; scgi_temp_path $T;
  map \$arg_js_code \$name { "~^(?<n>[^%]+)" \$n; default "x"; }
  server { listen 127.0.0.1:18190 backlog=4096; keepalive_requests 1000000;
    location /sns/jscode2session { default_type text/plain; return 200 '{"openid":"o_\$name","session_key":"tiihtNczf5v6AKRyjwEUhQ=="}'; } } }
NG
cat > "$T/returning.lua" <<'LUA'
counter = 0
request = function() counter = counter + 1
 return wrk.format("POST", "/v1/login", {["Content-Type"]="application/json"}, '{"code":"bench#' .. counter .. '"}') end
LUA
nginx -c "$T/nginx.conf" -g 'daemon off;' & NGX=$!
PEER_DB="$T/peer.sqlite" node server.mjs 2>"$T/server.log" & SRV=$!
cleanup() { kill $SRV $NGX 2>/dev/null; wait $SRV $NGX 2>/dev/null; rm -rf "$T"; }
trap cleanup EXIT
for _ in $(seq 50); do curl -sf http://127.0.0.1:18500/healthz >/dev/null 2>&1 && break; sleep 0.1; done
curl -sf -X POST -H 'Content-Type: application/json' -d '{"code":"bench#0"}' http://127.0.0.1:18500/v1/login >/dev/null
wrk -t1 -c64 -d3s -s "$T/returning.lua" http://127.0.0.1:18500/v1/login >/dev/null
wrk -t1 -c64 -d3s http://127.0.0.1:18500/healthz >/dev/null
HZ=$(getconf CLK_TCK)
for i in 1 2 3; do
  echo "=== healthz run $i"; wrk -t1 -c64 -d8s http://127.0.0.1:18500/healthz | grep -E "Requests/sec|Latency "
  echo "=== login run $i"
  a=$(awk '{print $14+$15}' /proc/$SRV/stat)
  out=$(wrk -t1 -c64 -d8s --latency -s "$T/returning.lua" http://127.0.0.1:18500/v1/login)
  b=$(awk '{print $14+$15}' /proc/$SRV/stat)
  grep -E "Requests/sec|Latency |Non-2xx" <<<"$out" || true
  reqs=$(awk '/requests in/{print $1}' <<<"$out")
  echo "CPU: server_us_per_login=$(echo "scale=2; ($b-$a)*1000000/$HZ/$reqs" | bc)"
done
