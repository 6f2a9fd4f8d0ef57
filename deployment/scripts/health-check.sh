#!/usr/bin/env bash
# Checks a running llm-gateway: /health, /health/ready, one real chat request and /metrics.
# Prints one line per check and what failed; exits non-zero if any check failed.
#
#   deployment/scripts/health-check.sh local                  # make run (127.0.0.1:8080, metrics :9090)
#   deployment/scripts/health-check.sh dev                    # docker-compose.dev.yml (metrics on :9091)
#   deployment/scripts/health-check.sh https://gateway.example.com
#
# Environment (all optional):
#   METRICS_URL      the /metrics URL (default: same host as the API, port 9090; for dev :9091)
#   HEALTH_MODEL     model for the chat request (default mock-1; use an alias in production)
#   GATEWAY_API_KEY  sent as "Authorization: Bearer ..." when the gateway has keys configured
#   HEALTH_TIMEOUT   seconds per request (default 10)
set -uo pipefail

usage() {
  echo "usage: $0 local|dev|URL" >&2
  exit 2
}

[[ $# -eq 1 ]] || usage
target=$1
metrics_url=${METRICS_URL:-}
case "$target" in
  local)
    base=http://127.0.0.1:8080
    metrics_url=${metrics_url:-http://127.0.0.1:9090/metrics}
    ;;
  dev)
    base=http://localhost:8080
    metrics_url=${metrics_url:-http://localhost:9091/metrics}
    ;;
  http://* | https://*)
    base=${target%/}
    if [[ -z $metrics_url ]]; then
      # Same scheme and host, the gateway's default METRICS_PORT.
      hostport=${base#*://}
      hostport=${hostport%%/*}
      metrics_url="${base%%://*}://${hostport%:*}:9090/metrics"
    fi
    ;;
  *) usage ;;
esac

model=${HEALTH_MODEL:-mock-1}
timeout=${HEALTH_TIMEOUT:-10}
auth=()
if [[ -n ${GATEWAY_API_KEY:-} ]]; then
  auth=(-H "Authorization: Bearer ${GATEWAY_API_KEY}")
fi

failures=0
body=$(mktemp)
trap 'rm -f "$body"' EXIT

# check NAME EXPECTED_STATUS GREP_PATTERN curl-args...
check() {
  local name=$1 want=$2 pattern=$3
  shift 3
  local status
  status=$(curl -sS -o "$body" -w '%{http_code}' --max-time "$timeout" "$@" 2>"$body.err") || status=000
  if [[ $status != "$want" ]]; then
    local detail
    detail=$(head -c 300 "$body" 2>/dev/null; head -c 200 "$body.err" 2>/dev/null)
    echo "FAIL $name: HTTP $status (want $want) ${detail//$'\n'/ }"
    failures=$((failures + 1))
  elif [[ -n $pattern ]] && ! grep -qE "$pattern" "$body"; then
    echo "FAIL $name: HTTP $status but the body lacks /$pattern/: $(head -c 300 "$body")"
    failures=$((failures + 1))
  else
    echo "ok   $name"
  fi
  rm -f "$body.err"
}

check "GET /health" 200 '"status"' "$base/health"
check "GET /health/ready" 200 '"ready"' "$base/health/ready"
check "POST /v1/chat/completions ($model)" 200 '"choices"' \
  "${auth[@]}" -H 'content-type: application/json' \
  -d "{\"model\": \"$model\", \"max_tokens\": 8, \"messages\": [{\"role\": \"user\", \"content\": \"health check\"}]}" \
  "$base/v1/chat/completions"
check "GET $metrics_url" 200 '^http_requests_total' "$metrics_url"

if ((failures > 0)); then
  echo "$failures check(s) failed for $base"
  exit 1
fi
echo "all checks passed for $base"
