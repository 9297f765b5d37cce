#!/usr/bin/env bash
# Start/stop a local Docker engine (BuildKit-capable) on a Debian 12 machine, as root,
# with no container registry reachable. See docker/README.md.
#   engine.sh start   install docker.io + debootstrap if missing, start dockerd, wait for it
#   engine.sh stop    stop the dockerd this script started (by PID)
#   engine.sh env     print `export` lines to eval: eval "$(docker/engine.sh env)"
set -euo pipefail

STATE_DIR=${DOCKER_ENGINE_STATE:-/var/tmp/docker-engine}
PID_FILE=$STATE_DIR/dockerd.pid
LOG_FILE=$STATE_DIR/dockerd.log
CA_BUNDLE=$STATE_DIR/extra-ca.pem
DOCKER_BIN=/usr/bin/docker          # Debian's client: speaks BuildKit (the static /usr/local/bin one has no buildx)
START_TIMEOUT=${DOCKER_START_TIMEOUT:-60}

die() { echo "engine.sh: $*" >&2; exit 1; }

# True if PID names a live, non-zombie process.
alive() {
  local pid=$1 state
  [[ $pid =~ ^[0-9]+$ ]] && [[ -r /proc/$pid/stat ]] || return 1
  state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
  [[ $state != Z && $state != X ]]
}

answers() { "$DOCKER_BIN" info >/dev/null 2>&1; }

install_packages() {
  # Idempotent: only touch apt when something is missing; one `apt-get update` per call.
  local missing=()
  [[ -x /usr/sbin/dockerd && -x $DOCKER_BIN ]] || missing+=(docker.io)
  command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
  ((${#missing[@]})) || return 0
  # Another apt run (e.g. a background install) holds the dpkg lock: wait for it.
  local _
  for _ in $(seq 1 300); do
    pgrep -x apt-get >/dev/null || pgrep -x dpkg >/dev/null || break
    sleep 1
  done
  # Re-check after waiting: the background install may have provided everything.
  missing=()
  [[ -x /usr/sbin/dockerd && -x $DOCKER_BIN ]] || missing+=(docker.io)
  command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
  ((${#missing[@]})) || return 0
  echo "engine.sh: installing ${missing[*]} (log: $STATE_DIR/apt.log)" >&2
  mkdir -p "$STATE_DIR"
  export DEBIAN_FRONTEND=noninteractive
  { apt-get -o DPkg::Lock::Timeout=300 update -qq &&
    apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${missing[@]}"; } \
    >"$STATE_DIR/apt.log" 2>&1 || { tail -n 20 "$STATE_DIR/apt.log" >&2; die "apt-get failed; log: $STATE_DIR/apt.log"; }
}

# Stale pid files (after a SIGKILL) make dockerd/containerd refuse to start.
clean_stale_pidfiles() {
  local f pid
  for f in /var/run/docker.pid /var/run/docker/containerd/containerd.pid "$PID_FILE"; do
    [[ -f $f ]] || continue
    pid=$(tr -dc '0-9' <"$f")
    alive "$pid" || rm -f "$f"
  done
}

write_ca_bundle() {
  # The locally added CAs (e.g. the egress proxy's TLS-intercepting CA), for builds to mount as a secret.
  mkdir -p "$STATE_DIR"
  local tmp=$CA_BUNDLE.tmp.$$
  shopt -s nullglob
  local certs=(/usr/local/share/ca-certificates/*.crt /usr/local/share/ca-certificates/*/*.crt)
  shopt -u nullglob
  if ((${#certs[@]})); then
    for c in "${certs[@]}"; do cat "$c"; echo; done >"$tmp"
  else
    : >"$tmp"   # none: an empty bundle keeps `--secret src=` valid
  fi
  if cmp -s "$tmp" "$CA_BUNDLE" 2>/dev/null; then rm -f "$tmp"; else mv "$tmp" "$CA_BUNDLE"; fi
}

start() {
  install_packages   # a no-op when present; also run when a daemon answers, as standins.sh needs debootstrap
  if answers; then echo "engine.sh: docker already answers" >&2; return 0; fi
  mkdir -p "$STATE_DIR"
  clean_stale_pidfiles
  if [[ -f $PID_FILE ]]; then
    die "dockerd (pid $(cat "$PID_FILE")) is alive but does not answer; see $LOG_FILE or run '$0 stop'"
  fi
  # Dead proxy: any pull attempt fails at once instead of leaving the machine; local traffic is exempt.
  # setsid: own session, so the daemon survives the caller's shell/job control.
  HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9 NO_PROXY=localhost,127.0.0.1 \
  http_proxy=http://127.0.0.1:9 https_proxy=http://127.0.0.1:9 no_proxy=localhost,127.0.0.1 \
    setsid /usr/sbin/dockerd --storage-driver=overlay2 >>"$LOG_FILE" 2>&1 </dev/null &
  echo $! >"$PID_FILE"
  local pid=$! t0=$SECONDS
  until answers; do
    if ! alive "$pid"; then
      rm -f "$PID_FILE"
      tail -n 20 "$LOG_FILE" >&2
      die "dockerd exited during start-up; log: $LOG_FILE"
    fi
    ((SECONDS - t0 < START_TIMEOUT)) || die "dockerd (pid $pid) did not answer 'docker info' within ${START_TIMEOUT}s; log: $LOG_FILE"
    sleep 0.2
  done
  write_ca_bundle
  echo "engine.sh: dockerd pid $pid ready in $((SECONDS - t0))s; log: $LOG_FILE" >&2
}

stop() {
  local pid
  pid=$(tr -dc '0-9' 2>/dev/null <"$PID_FILE" || true)
  if ! alive "$pid"; then
    rm -f "$PID_FILE"
    answers && echo "engine.sh: a docker daemon answers but was not started by this script; leaving it" >&2
    return 0
  fi
  kill -TERM "$pid"
  # dockerd stops its containers and containerd on SIGTERM; give it time, then force.
  local _
  for _ in $(seq 1 150); do alive "$pid" || break; sleep 0.2; done
  if alive "$pid"; then echo "engine.sh: dockerd $pid ignored SIGTERM; killing" >&2; kill -KILL "$pid" || true; fi
  rm -f "$PID_FILE"
  clean_stale_pidfiles
  echo "engine.sh: dockerd $pid stopped" >&2
}

print_env() {
  write_ca_bundle
  # /usr/bin ahead of /usr/local/bin so a plain `docker` (devcontainer CLI, scripts) is Debian's client;
  # the rest of the caller's PATH order (pyenv shims etc.) is kept.
  local p="" d
  local IFS=:
  for d in $PATH; do
    [[ $d == /usr/bin ]] && continue
    [[ $d == /usr/local/bin && $p != *:/usr/bin:* ]] && p+=":/usr/bin"
    p+=":$d"
  done
  [[ $p == *:/usr/bin:* || $p == *:/usr/bin ]] || p+=":/usr/bin"
  p=${p#:}
  printf 'export DOCKER=%q\n' "$DOCKER_BIN"
  printf 'export DOCKER_BUILDKIT=1\n'
  printf 'export TESTCONTAINERS_RYUK_DISABLED=true\n'   # the reaper image cannot be pulled
  printf 'export TC_HOST=127.0.0.1\n'                   # else testcontainers picks the bridge gateway here
  printf 'export EXTRA_CA=%q\n' "$CA_BUNDLE"
  printf 'export PATH=%q\n' "$p"
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  env) print_env ;;
  *) echo "usage: $0 start|stop|env" >&2; exit 2 ;;
esac
