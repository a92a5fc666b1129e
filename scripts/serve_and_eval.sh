#!/usr/bin/env bash
# Start the gateway on the embedded engine, run the eval over HTTP against it, stop the gateway.
#
#   scripts/serve_and_eval.sh RUN_ID QUESTIONS [eval run flags...]
#
# The gateway takes everything from KC_* variables (KC_HOME, KC_MODEL, KC_CPT_MODEL, ...); its log goes to
# $KC_HOME/gateway.log. The eval resumes RUN_ID when it exists, so an interrupted demo picks up where it
# stopped and a finished one only prints its report again.
set -euo pipefail

run_id=$1 questions=$2
shift 2
py=${PY:-.venv/bin/python}
port=${KC_PORT:-$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
url="http://127.0.0.1:$port"
log="$KC_HOME/gateway.log"

KC_PORT=$port "$py" -m service >"$log" 2>&1 &
gateway=$!
trap 'kill $gateway 2>/dev/null; wait $gateway 2>/dev/null || true' EXIT

echo "gateway: starting on $url (log: $log)"
for _ in $(seq 1 240); do
  if ! kill -0 "$gateway" 2>/dev/null; then
    echo "gateway: exited during start-up; the end of $log:" >&2
    tail -20 "$log" >&2
    exit 1
  fi
  if "$py" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)" "$url/readyz" 2>/dev/null; then
    break
  fi
  sleep 0.5
done
echo "gateway: ready"

"$py" -m eval run --questions "$questions" --gateway "$url" --run-id "$run_id" --resume "$@"
