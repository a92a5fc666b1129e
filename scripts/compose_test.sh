#!/usr/bin/env bash
# `make compose-test`: the stack of compose.yaml brought up for real, tested, and torn down.
#
#   1. engine: `docker compose` where a Docker engine answers, else podman + podman-compose (installed here)
#   2. where no image registry answers, the base images the Dockerfiles and compose.yaml name are built
#      locally under the same names (debootstrap, docker/standins/); they are kept for the next run
#   3. our images (docker/Dockerfile), with the CPU torch wheel and CA bundle the host's pip uses
#   4. postgres; the trainer job trains a nano model on a nano world; `--profile cpu up`: two vllm-cpu
#      servers, the indexer job (a nano world's news), the gateway
#   5. tests/integration against the gateway, then the eval job
#
# The stack is torn down on every exit, volumes included; on failure the logs of every service and job are
# kept in var/compose-test/logs. Timings go to var/compose-test/timings.txt.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-.venv/bin/python}
STATE=$PWD/var/compose-test
LOGS=$STATE/logs
PROJECT=keepcurrent-test
PROFILES=(--profile cpu --profile train --profile eval)
PODMAN_COMPOSE_VERSION=1.6.0
STACK_TIMEOUT_S=${STACK_TIMEOUT_S:-900}

rm -rf "$LOGS" "$STATE/docs" "$STATE/timings.txt"
mkdir -p "$LOGS" "$STATE/docs"
started=$SECONDS
step() { # step NAME: prints and records how long the previous step took
    local now=$SECONDS
    if [[ -n ${step_name:-} ]]; then
        printf '%-28s %4d s\n' "$step_name" $((now - step_start)) | tee -a "$STATE/timings.txt"
    fi
    step_name=$1 step_start=$now
    echo "== compose-test: $1"
}

# ---- 1. the engine ----------------------------------------------------------------------------------
if docker info >/dev/null 2>&1; then
    ENGINE=docker
    COMPOSE=(docker compose)
else
    ENGINE=podman
    if ! command -v podman >/dev/null || ! command -v runc >/dev/null; then
        apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q podman runc uidmap fuse-overlayfs slirp4netns
    fi
    if [[ ! -x .venv-compose/bin/podman-compose ]]; then
        python3 -m venv .venv-compose
        .venv-compose/bin/pip install --quiet "podman-compose==$PODMAN_COMPOSE_VERSION"
    fi
    # runc as the runtime, and ulimits high enough for vLLM (its open files and threads).
    export CONTAINERS_CONF=$PWD/docker/podman/containers.conf
    COMPOSE=("$PWD/.venv-compose/bin/podman-compose")
fi
compose() { "${COMPOSE[@]}" -p "$PROJECT" "$@"; }

# ---- 2. base images where no registry answers -------------------------------------------------------
have_image() { "$ENGINE" image inspect "$1" >/dev/null 2>&1; }
pulled() { timeout 300 "$ENGINE" pull -q "$1" >/dev/null 2>&1; }
base_image() { # base_image NAME RECIPE: present, pulled, or built from RECIPE (a Containerfile or `debootstrap`)
    local name=$1 recipe=$2
    if have_image "$name" || pulled "$name"; then
        return
    fi
    echo "no registry: building $name locally ($recipe)"
    if [[ $recipe == debootstrap ]]; then
        command -v debootstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap
        local root
        root=$(mktemp -d /var/tmp/kc-rootfs.XXXXXX)
        debootstrap --variant=minbase bookworm "$root" http://deb.debian.org/debian >>"$LOGS/base-images.log" 2>&1 \
            || { tail -30 "$LOGS/base-images.log"; return 1; }
        # What the official slim image leaves out: the downloaded packages and package lists.
        rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
        tar -C "$root" -c . | "$ENGINE" import --change 'CMD ["bash"]' - "$name" >>"$LOGS/base-images.log" 2>&1
        rm -rf "$root"
    else
        "$ENGINE" build -t "$name" -f "$recipe" docker/standins >>"$LOGS/base-images.log" 2>&1 \
            || { tail -30 "$LOGS/base-images.log"; return 1; }
    fi
}

step "base images"
base_image docker.io/library/debian:bookworm-slim debootstrap
base_image docker.io/library/python:3.11-slim-bookworm docker/standins/python.Containerfile
base_image docker.io/library/postgres:15-bookworm docker/standins/postgres.Containerfile

# ---- 3. our images ----------------------------------------------------------------------------------
step "images"
# The CPU torch wheel, fetched by the host's own pip configuration (this machine class keeps it on disk);
# found, the images install it from docker/local/wheels and need no PyTorch index.
torch_pin=$("$PY" -c 'import tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
print(next(d for d in deps if d.startswith("torch==")))')
mkdir -p docker/local/wheels
if "$PY" -m pip download --quiet --no-deps --only-binary :all: -d docker/local/wheels "$torch_pin+cpu" 2>/dev/null; then
    export TORCH_INDEX=
fi
cert=${PIP_CERT:-$("$PY" -m pip config get global.cert 2>/dev/null || true)}
if [[ -n $cert && -f $cert ]]; then
    cp "$cert" docker/local/ca-certificates.crt
fi
compose --profile cpu build gateway vllm-cpu >"$LOGS/build.log" 2>&1 || { tail -30 "$LOGS/build.log"; exit 1; }
"$ENGINE" image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E '(^|/)keepcurrent' | tee -a "$STATE/timings.txt"

# ---- 4. the stack -----------------------------------------------------------------------------------
free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
pg_port=$(free_port)
gw_port=$(free_port)
password=$("$PY" -c 'import secrets; print(secrets.token_hex(12))')
api_key=$("$PY" -c 'import secrets; print(secrets.token_hex(16))')
export POSTGRES_PASSWORD=$password POSTGRES_PUBLISH=127.0.0.1:$pg_port GATEWAY_PUBLISH=127.0.0.1:$gw_port
export DOCS_DIR=$STATE/docs KC_ENV_FILE=$STATE/keepcurrent.env
# The deployment's env file, with an API key so that the tests go through authentication.
{ cat docker/keepcurrent.env; echo "KC_API_KEY=$api_key"; } >"$KC_ENV_FILE"
# The documents the indexer job ingests: the news of the nano world the trainer job trains on (same seed).
"$PY" -m eval world --seed 0 --size nano --out "$STATE/world" >"$LOGS/world.log" 2>&1
rm -rf "$STATE/docs/world" && cp -r "$STATE/world/docs_post" "$STATE/docs/world"

container() { # the id of SERVICE's container (compose's labels; podman-compose's `ps` takes no service)
    "$ENGINE" ps -a -q --filter "label=com.docker.compose.project=$PROJECT" \
        --filter "label=com.docker.compose.service=$1" | head -1
}
save_logs() {
    local service id
    for service in $(compose "${PROFILES[@]}" config --services 2>/dev/null); do
        id=$(container "$service")
        if [[ -n $id ]]; then
            "$ENGINE" logs "$id" >"$LOGS/$service.log" 2>&1 || true
        fi
    done
}
teardown() {
    local rc=$?
    if ((rc != 0)); then
        save_logs
        echo "compose-test FAILED (exit $rc): logs in $LOGS" >&2
    else
        rm -rf "$LOGS"
    fi
    compose "${PROFILES[@]}" down -v >"$STATE/down.log" 2>&1 || true
    exit "$rc"
}
# A run killed before its trap could fire may have left its stack behind.
compose "${PROFILES[@]}" down -v >"$STATE/down.log" 2>&1 || true
trap teardown EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

healthy() {
    if [[ $ENGINE == podman ]]; then
        # podman 4 runs health checks from systemd timers; without systemd, run the check itself.
        podman healthcheck run "$1" >/dev/null 2>&1
    else
        [[ $(docker inspect -f '{{.State.Health.Status}}' "$1") == healthy ]]
    fi
}
wait_healthy() { # wait_healthy SERVICE...: every one healthy within STACK_TIMEOUT_S, or fail
    local deadline=$((SECONDS + STACK_TIMEOUT_S)) service id
    for service in "$@"; do
        id=$(container "$service")
        [[ -n $id ]] || { echo "$service: no container" >&2; return 1; }
        until healthy "$id"; do
            if [[ $("$ENGINE" inspect -f '{{.State.Status}}' "$id") != running ]]; then
                echo "$service stopped before it was healthy" >&2
                return 1
            fi
            ((SECONDS < deadline)) || { echo "$service not healthy after $STACK_TIMEOUT_S s" >&2; return 1; }
            sleep 3
        done
    done
}
wait_done() { # wait_done SERVICE: a one-shot service's container exited 0 (service_completed_successfully)
    local id
    id=$(container "$1")
    [[ -n $id ]] || { echo "$1: no container" >&2; return 1; }
    local code
    code=$("$ENGINE" wait "$id" | tail -1)
    [[ $code == 0 ]] || { echo "$1 exited with $code" >&2; return 1; }
}
job() { # job NAME ARGS...: a one-shot service, its output in the logs
    echo "   $*"
    # --no-deps: what the jobs need is up already, and podman-compose would `up` it again.
    compose "${PROFILES[@]}" run --rm --no-deps "$@" >"$LOGS/$1.log" 2>&1 || { tail -30 "$LOGS/$1.log"; return 1; }
}

# The order of compose.yaml's depends_on conditions, kept by this script one stage at a time and each
# service started with --no-deps: podman-compose cannot wait for health checks with podman 4, and the
# container dependencies it declares instead make podman 4.3 refuse to start the gateway once the indexer
# job has exited. Docker Compose would keep the order itself; the stages do it the same way for both.
step "postgres"
compose up -d postgres >"$LOGS/up.log" 2>&1
wait_healthy postgres

step "trainer job (nano)"
job trainer train DEMO_PRESET=nano DEMO_WORLD_SIZE=nano "SFT_FLAGS=--epochs 1" \
    "CPT_FLAGS=--replay 0.25 --paraphrases 1 --epochs 1"

step "stack up (vllm-cpu x2)"
compose --profile cpu up -d --no-deps vllm-cpu vllm-cpu-cpt indexer >>"$LOGS/up.log" 2>&1
wait_done indexer
compose --profile cpu up -d --no-deps gateway >>"$LOGS/up.log" 2>&1
wait_healthy vllm-cpu vllm-cpu-cpt gateway

# ---- 5. tests against it ----------------------------------------------------------------------------
step "tests/integration"
KC_GATEWAY_URL=http://127.0.0.1:$gw_port \
    KC_GATEWAY_API_KEY=$api_key \
    KC_STACK_DATABASE_URL=postgresql+psycopg://keepcurrent:$password@127.0.0.1:$pg_port/keepcurrent \
    KC_STACK_DOCS_DIR=$DOCS_DIR \
    KC_STACK_INGEST="${COMPOSE[*]} -p $PROJECT run --rm --no-deps indexer" \
    "$PY" -m pytest tests/integration -p no:cacheprovider -q

step "eval job"
job eval --questions /var/lib/keepcurrent/world/questions --run-id compose-test --limit 2
compose "${PROFILES[@]}" run --rm --no-deps --entrypoint test eval \
    -s /var/lib/keepcurrent/reports/compose-test/report.html >>"$LOGS/eval.log" 2>&1

step "done"
echo "compose-test passed in $((SECONDS - started)) s ($ENGINE); timings in $STATE/timings.txt"
