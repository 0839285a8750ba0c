#!/usr/bin/env bash
# `make test-docker`: build the Dockerfile, run the image and test it in the running container, then
# clean up. Runs as root (or with sudo) on Debian 12 or 13, from a fresh machine. Phases:
#
#  1. Docker: the daemon already running, if any (used, never stopped). Otherwise one started here, on
#     its own socket and data folder under a temporary folder, stopped and deleted at the end. The
#     Dockerfile needs Docker >= 25 (HEALTHCHECK --start-interval) and Debian 12's docker.io is 20.10,
#     so dockerd, containerd and buildx come from Debian 13's packages, unpacked (not installed) beside
#     Debian 12's runc (Debian 13's needs a newer C library).
#  2. The base image python:3.11-slim, pulled. Where no registry answers, a stand-in of that name: a
#     minimal Debian 12 (its python3 is 3.11) with python3-venv, made by mmdebstrap the way Debian's
#     slim images are (no manuals, docs or locales), with this machine's CA bundle and a `python`.
#  3. A local package index of the wheels the image installs (.ci/docker_index.py), served on
#     127.0.0.1 and given to the build as TORCH_INDEX and PIP_INDEX_URL (without those build args the
#     Dockerfile takes PyTorch's CPU index and PyPI, as for anyone else). The build runs with
#     --network host to reach it.
#  4. The build (cold; then on a warm cache, unchanged and after an edit of the app), the container
#     (port 7860 published on 127.0.0.1 only, the class's folder on a named volume), its HEALTHCHECK until
#     healthy, tests/docker/ in Chromium against it (pytest -m docker), and `docker stop`, under 5 s.
#  5. A table of how long each phase took, also when one fails.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=prefix-playground:test-docker
BASE=python:3.11-slim
BASE_SUITE=bookworm      # Debian 12: python3 is 3.11, as in python:3.11-slim
ENGINE_SUITE=trixie      # Debian 13: Docker 26
MAX_IMAGE_GB=2.5         # with CPU torch
MAX_STOP_S=5
PY=${PY:-.venv/bin/python}
SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo

W=$(mktemp -d /tmp/pp-docker.XXXXXX)  # everything this run makes: logs, index, and a daemon's data if it starts one
mkdir -p "$W/logs"
CONTAINER='' VOLUME='' DOCKERD_PID='' NEW_BRIDGE='' HTTP_PID='' SIZE='' BASE_SIZE='' STOP_CODE='' BASE_HOW='' ENGINE='' URL='' INDEX=''
IMAGES=()                # images to remove at the end: the ones built here, and the stand-in base if made here
PHASES=()                # "name|seconds", in order
CURRENT=                 # the phase running now (named in the report if it fails)

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
T_START=$(now)

phase() {  # phase NAME COMMAND...: run it, recording its wall time under NAME
  CURRENT=$1; shift
  local t0; t0=$(now)
  "$@"
  PHASES+=("$CURRENT|$(since "$t0")")
  CURRENT=
}

say() { printf 'test-docker: %s\n' "$*"; }
fail() { printf 'test-docker: %s\n' "$*" >&2; return 1; }

wait_for() {  # wait_for SECONDS WHAT COMMAND...: until COMMAND succeeds, polled every 0.2 s, at most SECONDS
  local limit=$1 what=$2; shift 2
  local t0; t0=$(now)
  until "$@" >/dev/null 2>&1; do
    awk -v t="$(since "$t0")" -v l="$limit" 'BEGIN { exit !(t < l) }' || { fail "$what: not within $limit s"; return 1; }
    sleep 0.2
  done
}

log_tail() { tail -n "${2:-40}" "$1" | sed 's/^/  | /' >&2; }

apt_install() {  # Debian 12's packages, from the lists as they are or, failing that, fresh ones
  local opts=(-y -qq -o Dpkg::Use-Pty=0 --no-install-recommends)
  { DEBIAN_FRONTEND=noninteractive $SUDO apt-get install "${opts[@]}" "$@" ||
    { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install "${opts[@]}" "$@"; }
  } >> "$W/logs/apt.log" 2>&1 || { log_tail "$W/logs/apt.log"; fail "apt-get install $* failed"; }
}

debian_mirror() {  # the Debian mirror this machine's apt uses (deb.debian.org if none is named)
  local uri
  uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null |
        grep -oE '^(URIs:|deb)[[:space:]]+[a-z]+://[^[:space:]]+' | awk '{ print $2 }' | grep -E '/debian/?$' |
        head -n 1 || true)
  echo "${uri:-http://deb.debian.org/debian}"
}

major() { "$@" 2>/dev/null | grep -oE '[0-9]+\.[0-9]+' | head -n 1 | cut -d. -f1; }

fetch_debs() {  # fetch_debs SUITE PACKAGE...: another Debian release's packages, unpacked under $W/engine/root
  local suite=$1 a=$W/apt; shift
  mkdir -p "$a/lists/partial" "$a/cache/archives/partial" "$a/debs" "$W/engine/root"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $(debian_mirror) $suite main" > "$a/sources.list"
  local o=(-o Dir::Etc::SourceList="$a/sources.list" -o Dir::Etc::SourceParts=- -o Dir::State::Lists="$a/lists"
           -o Dir::Cache="$a/cache" -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache= -o APT::Sandbox::User=root)
  { apt-get "${o[@]}" update -qq && (cd "$a/debs" && apt-get "${o[@]}" download "$@"); } >> "$W/logs/apt.log" 2>&1 ||
    { log_tail "$W/logs/apt.log"; fail "could not fetch $* from Debian $suite"; }
  local deb; for deb in "$a"/debs/*.deb; do dpkg-deb -x "$deb" "$W/engine/root"; done
}

# --- 1. Docker --------------------------------------------------------------------------------------
use_buildx() {  # `docker build` needs the buildx plugin (BuildKit); Debian 13's where this client has none
  docker buildx version > /dev/null 2>&1 && return
  [ -x "$W/engine/root/usr/libexec/docker/cli-plugins/docker-buildx" ] || fetch_debs "$ENGINE_SUITE" docker-buildx
  mkdir -p "$W/docker-config/cli-plugins"
  cp "$W/engine/root/usr/libexec/docker/cli-plugins/docker-buildx" "$W/docker-config/cli-plugins/"
  export DOCKER_CONFIG=$W/docker-config
}

install_engine() {
  [ "$(id -u)" = 0 ] || { fail "no Docker daemon runs, and starting one needs root"; return 1; }
  command -v runc > /dev/null || apt_install runc
  if [ "$(major dockerd --version || echo 0)" -ge 25 ] 2>/dev/null; then return; fi
  local pkgs=(docker.io containerd docker-buildx)
  command -v docker > /dev/null || pkgs+=(docker-cli)
  fetch_debs "$ENGINE_SUITE" "${pkgs[@]}"
  local r=$W/engine/root b=$W/engine/bin
  mkdir -p "$b"
  cp "$r/usr/sbin/dockerd" "$r/usr/sbin/docker-proxy" "$r/usr/bin/containerd" "$r/usr/bin/containerd-shim-runc-v2" "$b/"
  [ ! -x "$r/usr/bin/docker" ] || cp "$r/usr/bin/docker" "$b/"
  export PATH=$b:$PATH
}

start_daemon() {
  mkdir -p "$W/run"
  [ -e /sys/class/net/docker0 ] || NEW_BRIDGE=1  # dockerd makes the bridge docker0 and leaves it when it stops
  # niced, so that a build beside other work on this machine yields to it
  nice -n 10 dockerd --iptables=false --ip6tables=false --data-root "$W/data" --exec-root "$W/run" \
    --pidfile "$W/run/dockerd.pid" -H "unix://$W/run/docker.sock" > "$W/logs/dockerd.log" 2>&1 &
  DOCKERD_PID=$!
  export DOCKER_HOST=unix://$W/run/docker.sock
  wait_for 60 "the Docker daemon" docker info || { log_tail "$W/logs/dockerd.log"; return 1; }
}

server_version() { docker version --format '{{.Server.Version}}'; }

# --- 2. the base image --------------------------------------------------------------------------------
make_standin() {
  command -v mmdebstrap > /dev/null || apt_install mmdebstrap
  # shellcheck disable=SC2016  # "$1" is mmdebstrap's: the new root folder
  local hooks=(--customize-hook='ln -sf python3 "$1/usr/bin/python"')
  [ ! -f /etc/ssl/certs/ca-certificates.crt ] ||  # this machine's CAs: pip must trust what it trusts
    hooks+=(--customize-hook='copy-in /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs')
  local slim=()
  local p; for p in man doc locale info groff lintian linda; do slim+=(--dpkgopt="path-exclude=/usr/share/$p/*"); done
  slim+=(--dpkgopt='path-include=/usr/share/doc/*/copyright')
  timeout 600 mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates \
      "${slim[@]}" "${hooks[@]}" "$BASE_SUITE" - "$(debian_mirror)" 2>> "$W/logs/base.log" |
    docker import --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$BASE" >> "$W/logs/base.log" ||
    { log_tail "$W/logs/base.log"; fail "could not make the stand-in base"; }
}

ensure_base() {
  if docker image inspect "$BASE" > /dev/null 2>&1; then BASE_HOW="already here"; return; fi
  if timeout 120 docker pull -q "$BASE" >> "$W/logs/base.log" 2>&1; then BASE_HOW=pulled; return; fi
  say "$BASE cannot be pulled ($(tail -n 1 "$W/logs/base.log")); making a stand-in from Debian $BASE_SUITE"
  IMAGES+=("$BASE")
  phase "stand-in base (mmdebstrap + import)" make_standin
  BASE_HOW="stand-in (Debian $BASE_SUITE, mmdebstrap)"
}

# --- 3. the local index -----------------------------------------------------------------------------
free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
http_ok() { "$PY" -c 'import sys, urllib.request as u; u.build_opener(u.ProxyHandler({})).open(sys.argv[1], timeout=2)' "$1"; }

make_index() {
  "$PY" .ci/docker_index.py "$W/index" > "$W/logs/index.log" 2>&1 || { log_tail "$W/logs/index.log"; return 1; }
  say "$(tail -n 1 "$W/logs/index.log")"
  local port; port=$(free_port)
  "$PY" -m http.server --bind 127.0.0.1 --directory "$W/index" "$port" > "$W/logs/index-http.log" 2>&1 &
  HTTP_PID=$!
  INDEX=http://127.0.0.1:$port/simple/
  wait_for 20 "the local index at $INDEX" http_ok "$INDEX"
}

# --- 4. build, run, test, stop ------------------------------------------------------------------------
build() {  # build TAG LOG [CONTEXT]: the Dockerfile, pip pointed at the local index
  IMAGES+=("$1")
  timeout 1800 nice -n 10 docker build --progress plain --network host \
      --build-arg TORCH_INDEX="$INDEX" --build-arg PIP_INDEX_URL="$INDEX" -t "$1" "${3:-.}" \
      > "$W/logs/$2.log" 2>&1 || { log_tail "$W/logs/$2.log" 60; fail "docker build failed ($2)"; }
}

build_after_edit() {  # the context as git sees it, plus one new file under assets/: only the last COPY reruns
  mkdir -p "$W/edit/assets"
  echo "edited $(date)" > "$W/edit/assets/build-probe.txt"
  git ls-files -z --cached --others --exclude-standard | tar --null --ignore-failed-read -T - -cf "$W/context.tar"
  tar -rf "$W/context.tar" -C "$W/edit" assets/build-probe.txt
  build "$IMAGE-edited" build-edited - < "$W/context.tar"
}

health() { docker inspect -f '{{.State.Health.Status}}' "$CONTAINER"; }

run_until_healthy() {
  CONTAINER=prefix-playground-test-docker-$$
  VOLUME=$CONTAINER-library  # the class's folder on a named volume, as docs/deploy.md runs it
  docker run -d --name "$CONTAINER" -p 127.0.0.1::7860 -v "$VOLUME:/home/user/.local/share/prefix-playground" \
    "$IMAGE" > /dev/null
  local t0 status; t0=$(now)
  while status=$(health); [ "$status" != healthy ]; do
    if [ "$status" = unhealthy ] || [ "$(docker inspect -f '{{.State.Running}}' "$CONTAINER")" != true ] ||
       ! awk -v t="$(since "$t0")" 'BEGIN { exit !(t < 120) }'; then
      docker logs "$CONTAINER" > "$W/logs/container.log" 2>&1; log_tail "$W/logs/container.log"
      fail "the container is $status, not healthy, after $(since "$t0") s"; return 1
    fi
    sleep 0.1
  done
  URL=http://$(docker port "$CONTAINER" 7860/tcp | grep -m 1 '^127\.0\.0\.1:')/
}

container_tests() {
  PLAYGROUND_DOCKER_CONTAINER=$CONTAINER PLAYGROUND_DOCKER_URL=$URL \
    timeout 900 "$PY" -m pytest -q -p no:cacheprovider -m docker tests/docker
}

stop_container() { timeout 60 docker stop -t 10 "$CONTAINER" > /dev/null; }

# --- cleanup and report -----------------------------------------------------------------------------
unmount_under() {  # what a killed daemon may have left mounted under a folder
  awk -v w="$1" 'index($5, w) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
    while read -r m; do $SUDO umount -l "$m" 2>/dev/null || true; done
}

stop_daemon() {
  kill "$DOCKERD_PID" 2>/dev/null || return 0
  local _; for _ in $(seq 1 150); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.2; done
  kill -0 "$DOCKERD_PID" 2>/dev/null && kill -9 "$DOCKERD_PID" 2>/dev/null
  wait "$DOCKERD_PID" 2>/dev/null || true
}

report() {
  printf '\n%-40s %9s\n' "make test-docker: phase" seconds
  local p; for p in "${PHASES[@]}"; do printf '%-40s %9s\n' "${p%%|*}" "${p#*|}"; done
  printf '%-40s %9s\n' total "$(since "$T_START")"
  [ -z "$ENGINE" ] || echo "docker: $ENGINE"
  [ -z "$BASE_HOW" ] || echo "base $BASE: $BASE_HOW${BASE_SIZE:+, $BASE_SIZE}"
  [ -z "$SIZE" ] || echo "image $IMAGE: $SIZE (docker image inspect)"
  [ -z "$STOP_CODE" ] || echo "docker stop: exit code $STOP_CODE"
  echo "logs: artifacts/test-docker/"
  if [ "$1" = 0 ]; then echo "test-docker: passed"; else echo "test-docker: FAILED${CURRENT:+ in: $CURRENT} (exit $1)"; fi
}

cleanup() {
  local rc=$? t0; t0=$(now)
  set +e
  trap - EXIT INT TERM
  [ -z "$CONTAINER" ] || { docker logs "$CONTAINER" > "$W/logs/container.log" 2>&1; docker rm -f "$CONTAINER" > /dev/null 2>&1; }
  [ -z "$VOLUME" ] || docker volume rm "$VOLUME" > /dev/null 2>&1
  local img; for img in "${IMAGES[@]}"; do docker rmi -f "$img" > /dev/null 2>&1; done
  [ -z "$HTTP_PID" ] || { kill "$HTTP_PID" 2>/dev/null; wait "$HTTP_PID" 2>/dev/null; }
  if [ -n "$DOCKERD_PID" ]; then
    stop_daemon; unmount_under "$W"
    [ -z "$NEW_BRIDGE" ] || ip link delete docker0 2>/dev/null
  fi
  rm -rf artifacts/test-docker && mkdir -p artifacts/test-docker && cp -r "$W/logs/." artifacts/test-docker/
  $SUDO rm -rf "$W"
  PHASES+=("cleanup (container, images, daemon)|$(since "$t0")")
  report "$rc"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the run ------------------------------------------------------------------------------------------
[ -x "$PY" ] || fail "$PY is missing: run \`make install\` first (make test-docker does)"
if docker info > /dev/null 2>&1; then
  [ "$(major server_version)" -ge 25 ] || fail "the running Docker daemon is $(server_version); the Dockerfile needs >= 25"
  ENGINE="the daemon already running ($(server_version)), left running"
else
  phase "install Docker (apt)" install_engine
  phase "start dockerd" start_daemon
  ENGINE="dockerd $(server_version), started here and stopped at the end"
fi
use_buildx
ensure_base
BASE_SIZE=$(docker image inspect -f '{{.Size}}' "$BASE" | awk '{ printf "%.0f MB", $1 / 1e6 }')
phase "local index (pip wheel + serve)" make_index
phase "docker build (cold)" build "$IMAGE" build-cold
phase "docker build (warm, unchanged)" build "$IMAGE" build-warm
phase "docker build (warm, app edited)" build_after_edit
bytes=$(docker image inspect -f '{{.Size}}' "$IMAGE")
SIZE=$(awk -v b="$bytes" 'BEGIN { printf "%.2f GB (%.0f bytes)", b / 1e9, b }')
docker history --format '{{.Size}}\t{{.CreatedBy}}' "$IMAGE" > "$W/logs/history.txt"
awk -v b="$bytes" -v m="$MAX_IMAGE_GB" 'BEGIN { exit !(b < m * 1e9) }' || fail "the image is $SIZE, over $MAX_IMAGE_GB GB"
phase "docker run -> healthy" run_until_healthy
say "healthy at $URL"
phase "container tests (pytest -m docker)" container_tests
phase "docker stop" stop_container
STOP_CODE=$(docker inspect -f '{{.State.ExitCode}}' "$CONTAINER")
stop_s=${PHASES[-1]#*|}
awk -v s="$stop_s" -v m="$MAX_STOP_S" 'BEGIN { exit !(s < m) }' || fail "docker stop took $stop_s s (limit $MAX_STOP_S s)"
[ "$STOP_CODE" = 0 ] || fail "the app exited with $STOP_CODE on docker stop (SIGINT), not 0"
