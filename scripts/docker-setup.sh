#!/usr/bin/env bash
# Make a Docker engine and flotilla's offline test image available on this machine.
#
# Used by CI and by the docker driver's tests (test/docker-driver.test.ts). Runs as root and
# is idempotent: every step checks first and only does what is missing.
#
#   1. When `docker info` fails:
#      - installs Debian's docker.io and busybox-static when they are missing
#        (`apt-get update` only if the install fails without it);
#      - starts dockerd in the background (log: /tmp/dockerd.log, pid: /tmp/dockerd.pid) and
#        waits (bounded, DOCKER_SETUP_TIMEOUT seconds, default 60) for /var/run/docker.sock
#        and `docker info`.
#   2. When the image flotilla/busybox:test is missing, builds it offline (no registry is
#      reachable here): a root filesystem holding the static /bin/busybox, one symlink per
#      applet (`busybox --list`), a minimal /etc/passwd and /etc/group and a /tmp, then
#      `tar -C rootfs -c . | docker import - flotilla/busybox:test`.
#   3. Checks that a published port answers from the host (prints a warning if not).
#
# dockerd flags: on this sandbox (Debian 12, docker.io 20.10, cgroup v1, ext4) dockerd starts
# with its DEFAULT flags: overlay2 storage, the docker0 bridge, iptables NAT and docker-proxy
# all work, so port publishing (`-p 18080:8080`, HostConfig.PortBindings) works from the host
# on 127.0.0.1 and on the machine's addresses. If the defaults fail on another machine, the
# script tries, in order, until one starts:
#      (defaults)
#      --iptables=false                         no NAT rules: published ports still work on
#                                               the host through docker-proxy (userland)
#      --storage-driver=vfs                     no overlayfs (slow, copies every layer)
#      --iptables=false --storage-driver=vfs
# FLOTILLA_DOCKERD_FLAGS="…" forces one set of flags instead. The flags that worked are written
# to /tmp/dockerd.flags. (`--bridge=none` is deliberately NOT in the list: it disables the
# default network, and so port publishing.)
#
# Environment: FLOTILLA_TEST_IMAGE (default flotilla/busybox:test), FLOTILLA_DOCKERD_FLAGS,
# DOCKER_SETUP_TIMEOUT (default 60), DOCKER_SETUP_SKIP_PORT_CHECK=1.
set -euo pipefail

IMAGE=${FLOTILLA_TEST_IMAGE:-flotilla/busybox:test}
SOCK=/var/run/docker.sock
LOG=/tmp/dockerd.log
PIDFILE=/tmp/dockerd.pid
FLAGSFILE=/tmp/dockerd.flags
TIMEOUT=${DOCKER_SETUP_TIMEOUT:-60}
export DEBIAN_FRONTEND=noninteractive

say() { echo "docker-setup: $*"; }
die() { echo "docker-setup: error: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (it installs packages and starts dockerd)"

engine_up() { docker info >/dev/null 2>&1; }

# ---------------------------------------------------------------------------------------------
# Packages

install_packages() {
  local missing=()
  command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
  command -v docker >/dev/null 2>&1 || missing+=(docker.io)
  dpkg -s busybox-static >/dev/null 2>&1 || missing+=(busybox-static)
  if [ ${#missing[@]} -eq 0 ]; then
    say "packages: docker.io and busybox-static already installed"
    return
  fi
  # unique
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  say "installing ${missing[*]}"
  if ! apt-get install -y --no-install-recommends "${missing[@]}" >/tmp/docker-setup-apt.log 2>&1; then
    say "apt-get install failed; running apt-get update and retrying"
    apt-get update >>/tmp/docker-setup-apt.log 2>&1 || true
    apt-get install -y --no-install-recommends "${missing[@]}" >>/tmp/docker-setup-apt.log 2>&1 \
      || { tail -20 /tmp/docker-setup-apt.log >&2; die "cannot install ${missing[*]} (see /tmp/docker-setup-apt.log)"; }
  fi
  say "installed ${missing[*]}"
}

# ---------------------------------------------------------------------------------------------
# dockerd

dockerd_pid_alive() {
  [ -f "$PIDFILE" ] || return 1
  local pid
  pid=$(cat "$PIDFILE" 2>/dev/null || true)
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && grep -q dockerd "/proc/$pid/cmdline" 2>/dev/null
}

# Wait until the socket exists and `docker info` answers; fail early when the daemon dies.
wait_engine() {
  local pid=$1 deadline=$((SECONDS + TIMEOUT))
  while [ $SECONDS -lt $deadline ]; do
    if [ -S "$SOCK" ] && engine_up; then return 0; fi
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then return 1; fi
    sleep 0.5
  done
  return 1
}

start_dockerd() {
  local flags=$1 pid
  say "starting dockerd ${flags:-(default flags)} (log: $LOG)"
  echo "=== $(date -u +%FT%TZ) dockerd $flags" >>"$LOG"
  # setsid: the daemon outlives this script and its process group.
  # shellcheck disable=SC2086
  setsid dockerd $flags >>"$LOG" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$PIDFILE"
  if wait_engine "$pid"; then
    echo "$flags" >"$FLAGSFILE"
    say "dockerd is up (pid $pid, flags: ${flags:-default})"
    return 0
  fi
  say "dockerd ${flags:-(default flags)} did not come up within ${TIMEOUT}s; last log lines:"
  tail -5 "$LOG" | sed 's/^/    /'
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$PIDFILE"
  return 1
}

ensure_engine() {
  if engine_up; then
    say "docker engine already running ($(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?'))"
    return
  fi
  install_packages
  if dockerd_pid_alive; then
    say "dockerd (pid $(cat "$PIDFILE")) is running but not answering yet; waiting"
    if wait_engine "$(cat "$PIDFILE")"; then say "docker engine is up"; return; fi
    die "dockerd (pid $(cat "$PIDFILE")) does not answer on $SOCK (see $LOG)"
  fi
  local candidates=()
  if [ -n "${FLOTILLA_DOCKERD_FLAGS:-}" ]; then
    candidates=("$FLOTILLA_DOCKERD_FLAGS")
  else
    candidates=("" "--iptables=false" "--storage-driver=vfs" "--iptables=false --storage-driver=vfs")
  fi
  for flags in "${candidates[@]}"; do
    if start_dockerd "$flags"; then return; fi
  done
  die "dockerd did not start with any of the flag sets tried (see $LOG)"
}

# ---------------------------------------------------------------------------------------------
# The offline image

ensure_image() {
  if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    say "image $IMAGE already present"
    return
  fi
  local bb=/bin/busybox
  [ -x "$bb" ] || install_packages
  [ -x "$bb" ] || die "$bb is missing (package busybox-static)"
  if ! file -L "$bb" 2>/dev/null | grep -q 'statically linked' && ldd "$bb" >/dev/null 2>&1; then
    die "$bb is not statically linked (install busybox-static)"
  fi
  local root
  root=$(mktemp -d /tmp/flotilla-rootfs.XXXXXX)
  trap 'rm -rf "$root"' RETURN
  mkdir -p "$root"/{bin,etc,tmp,root,proc,sys,dev,var,usr/bin}
  chmod 1777 "$root/tmp"
  cp "$bb" "$root/bin/busybox"
  local n=0
  for applet in $("$bb" --list); do
    [ -e "$root/bin/$applet" ] || { ln -s busybox "$root/bin/$applet"; n=$((n + 1)); }
  done
  ln -s /bin/env "$root/usr/bin/env"
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
  tar -C "$root" -c . | docker import \
    -c 'ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'CMD ["sh"]' \
    - "$IMAGE" >/dev/null
  say "built $IMAGE offline from $bb ($n applets)"
}

# ---------------------------------------------------------------------------------------------
# Port publishing self-check: a container publishes 8080 on a host port; the host connects.

check_ports() {
  [ "${DOCKER_SETUP_SKIP_PORT_CHECK:-}" = 1 ] && return
  local port name="flotilla-setup-portcheck-$$" ok=""
  port=$((20000 + RANDOM % 20000))
  docker rm -f "$name" >/dev/null 2>&1 || true
  if ! docker run -d --name "$name" -p "$port:8080" "$IMAGE" \
      sh -c 'mkdir -p /www && echo flotilla-port-ok >/www/index.html && exec httpd -f -p 8080 -h /www' >/dev/null 2>&1; then
    say "WARNING: cannot run a container publishing a port"
    docker rm -f "$name" >/dev/null 2>&1 || true
    return
  fi
  for _ in $(seq 1 20); do
    if exec 3<>"/dev/tcp/127.0.0.1/$port" 2>/dev/null; then
      printf 'GET / HTTP/1.0\r\n\r\n' >&3
      if grep -q flotilla-port-ok <&3; then ok=1; fi
      exec 3<&- 3>&-
      [ -n "$ok" ] && break
    fi
    sleep 0.25
  done
  docker rm -f "$name" >/dev/null 2>&1 || true
  if [ -n "$ok" ]; then
    say "port publishing works (host 127.0.0.1:$port -> container 8080)"
  else
    say "WARNING: a published port did not answer on 127.0.0.1:$port (tests of published ports will fail)"
  fi
}

ensure_engine
ensure_image
check_ports
say "done: engine $(docker version --format '{{.Server.Version}}' 2>/dev/null), image $IMAGE"
