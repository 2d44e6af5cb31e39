#!/bin/sh
# Re-take the screenshots of docs/OPERATOR-GUIDE.md with headless Chromium (Debian's
# `chromium`, `pngquant`). Needs a Prefect server holding the example deployments
# (`vowvault deploy --work-pool vowvault`) and a completed run of backup/lumiere-photos.
# Start that server with PREFECT_SERVER_API_PORT set to its port, or its UI calls port 4200.
#   usage: docs/img/capture.sh [http://127.0.0.1:4200]
set -eu
UI=${1:-http://127.0.0.1:4200}
OUT=$(cd "$(dirname "$0")" && pwd)
RUN=$(curl -sf -X POST "$UI/api/flow_runs/filter" -H 'content-type: application/json' -d \
  '{"flow_runs": {"name": {"any_": ["lumiere-photos"]}, "state": {"type": {"any_": ["COMPLETED"]}}},
    "sort": "START_TIME_DESC", "limit": 1}' |
  python3 -c 'import json, sys; print(json.load(sys.stdin)[0]["id"])')

shot() {  # FILE PATH HEIGHT
  profile=$(mktemp -d)
  chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$profile" --hide-scrollbars --window-size=1600,"$3" \
    --virtual-time-budget=20000 --screenshot="$OUT/$1" "$UI$2" >/dev/null 2>&1
  rm -rf "$profile"
  pngquant --force --skip-if-larger --output "$OUT/$1" 256 "$OUT/$1" || true
  echo "$OUT/$1: $(wc -c < "$OUT/$1") bytes"
}

shot deployments.png /v2/deployments 1000
shot backup-flow-run.png "/v2/runs/flow-run/$RUN" 1000
shot work-pool-queues.png "/v2/work-pools/work-pool/vowvault?tab=Work+Queues" 620
shot concurrency-limits.png /v2/concurrency-limits 480
