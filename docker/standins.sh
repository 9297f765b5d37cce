#!/usr/bin/env bash
# Build local stand-ins for the registry images that generated Dockerfiles name, since no registry is
# reachable here:  python:<ver>-slim-bookworm  and  ghcr.io/astral-sh/uv:<UV_VERSION>.
# Usage: docker/standins.sh [PYTHON_VERSION...]   (default: 3.11 3.12; UV_VERSION defaults to 0.13.8)
# Existing tags are kept (STANDINS_FORCE=1 rebuilds). Starts the engine if needed. See docker/README.md.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DOCKER=/usr/bin/docker
UV_VERSION=${UV_VERSION:-0.13.8}
WORK=${STANDINS_WORK:-/var/tmp/docker-standins}
PYENV_ROOT=${PYENV_ROOT:-/root/.pyenv}
SUITE=bookworm
BOOKWORM_PYTHON=3.11   # the python3 that bookworm ships
FORCE=${STANDINS_FORCE:-0}
((${#})) && VERSIONS=("$@") || VERSIONS=(3.11 3.12)

# Runtime libraries the official slim image keeps (from `ldd` of the interpreter and lib-dynload/*.so,
# minus tkinter), plus ca-certificates/netbase/tzdata that it installs explicitly.
BASE_PKGS=ca-certificates,netbase,tzdata,libbz2-1.0,libffi8,liblzma5,libncursesw6,libreadline8,libsqlite3-0,libssl3,libtinfo6,libuuid1,zlib1g,libnsl2,libtirpc3
# Debian's own 3.11, with venv (ensurepip) and distutils that the official image has in its stdlib.
DEBIAN_PY_PKGS=python3,python3-venv,python3-distutils

log() { echo "standins.sh: $*" >&2; }
die() { log "$*"; exit 1; }

have_image() { [[ $FORCE == 1 ]] && return 1; "$DOCKER" image inspect "$1" >/dev/null 2>&1; }

# "URI SUITE" pairs of the enabled deb sources of this host (one-line .list and deb822 .sources).
host_sources() {
  local files=()
  shopt -s nullglob
  files=(/etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources)
  shopt -u nullglob
  local f existing=()
  for f in "${files[@]}"; do [[ -f $f ]] && existing+=("$f"); done
  ((${#existing[@]})) || return 0
  awk '
    function flush(   n, m, i, j, u, s) {
      if (types ~ /(^| )deb( |$)/ && enabled != "no") {
        n = split(uris, u, " "); m = split(suites, s, " ")
        for (i = 1; i <= n; i++) for (j = 1; j <= m; j++) print u[i], s[j]
      }
      types = uris = suites = enabled = ""
    }
    FNR == 1 { flush() }
    FILENAME ~ /\.sources$/ {
      if ($0 ~ /^[ \t]*$/) { flush(); next }
      if ($0 ~ /^[ \t]*#/) next
      if (match($0, /^[A-Za-z-]+:/)) {
        key = tolower(substr($0, 1, RLENGTH - 1)); val = substr($0, RLENGTH + 1)
        gsub(/^[ \t]+|[ \t]+$/, "", val)
        if (key == "types") types = val; else if (key == "uris") uris = val
        else if (key == "suites") suites = val; else if (key == "enabled") enabled = tolower(val)
      }
      next
    }
    /^[ \t]*deb[ \t]/ { sub(/^[ \t]*deb[ \t]+/, ""); sub(/^\[[^]]*\][ \t]*/, ""); split($0, f, " "); print f[1], f[2] }
    END { flush() }
  ' "${existing[@]}"
}

# The mirrors apt uses on this host, so apt inside builds reaches the same (reachable) place.
MIRROR=$(host_sources | awk -v s=$SUITE '$2 == s { print $1; exit }')
SECURITY_MIRROR=$(host_sources | awk -v s=$SUITE-security '$2 == s { print $1; exit }')
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${SECURITY_MIRROR:-${MIRROR%/debian}/debian-security}

cleanup_rootfs() {
  # debootstrap mounts proc/sys inside the target; never delete through a live mount.
  local r=$1
  [[ -d $r ]] || return 0
  awk -v r="$r" '$2 == r || index($2, r "/") == 1 { print $2 }' /proc/mounts | sort -r |
    while read -r m; do umount -l "$m" || true; done
  rm -rf --one-file-system "$r"
}

# Minimal bookworm rootfs shaped like debian:bookworm-slim (apt/dpkg configs, no docs), apt sources = host mirror.
make_rootfs() {
  local r=$1 pkgs=$2
  cleanup_rootfs "$r"
  mkdir -p "$WORK/debs"
  log "debootstrap $SUITE ($MIRROR) -> $r"
  # --cache-dir keeps the .debs outside the rootfs: a second stand-in reuses them.
  debootstrap --variant=minbase --cache-dir="$WORK/debs" --include="$pkgs" "$SUITE" "$r" "$MIRROR" \
    >"$WORK/debootstrap.log" 2>&1 || { tail -n 30 "$WORK/debootstrap.log" >&2; die "debootstrap failed; log: $WORK/debootstrap.log"; }

  rm -f "$r/etc/apt/sources.list"
  cat >"$r/etc/apt/sources.list.d/debian.sources" <<SRC
Types: deb
URIs: $MIRROR
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $SECURITY_MIRROR
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  # Same apt behaviour as the official Debian images (no cached .debs/pkgcache left in layers).
  cat >"$r/etc/apt/apt.conf.d/docker-clean" <<'CONF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
CONF
  echo 'Acquire::Languages "none";' >"$r/etc/apt/apt.conf.d/docker-no-languages"
  echo 'Acquire::GzipIndexes "true";' >"$r/etc/apt/apt.conf.d/docker-gzip-indexes"
  echo 'Apt::AutoRemove::SuggestsImportant "false";' >"$r/etc/apt/apt.conf.d/docker-autoremove-suggests"
  # Slim: no docs/man/locales, now and for packages installed later in builds.
  cat >"$r/etc/dpkg/dpkg.cfg.d/docker" <<'CONF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/overrides/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/man/*
CONF
  find "$r/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
  find "$r/usr/share/doc" -mindepth 1 -type d -empty -delete
  rm -rf "$r"/usr/share/{man,info,groff,linda,locale}/* "$r"/usr/share/lintian/overrides/*
  rm -rf "$r"/var/cache/apt/archives/*.deb "$r"/var/cache/apt/*.bin "$r"/var/lib/apt/lists/*
  rm -f "$r"/var/log/*.log "$r"/var/log/apt/* "$r"/var/cache/debconf/*-old "$r"/etc/hostname
  : >"$r/etc/resolv.conf"   # docker bind-mounts its own
}

# One debootstrap per run, shared by every python stand-in (it is the slow step: ~40-60 s).
BASE=$WORK/rootfs-base
copy_base() {
  local r=$1
  [[ -f $BASE/.standins-complete ]] || { make_rootfs "$BASE" "$BASE_PKGS,$DEBIAN_PY_PKGS"; touch "$BASE/.standins-complete"; }
  cleanup_rootfs "$r"
  cp -a "$BASE" "$r"
  rm -f "$r/.standins-complete"
}

# A stand-in must not trust this host's locally added CAs (e.g. the TLS-intercepting proxy's):
# builds would then pass here without the CA secret and fail for real users.
assert_no_local_ca() {
  local r=$1 c line hit
  shopt -s nullglob
  for c in /usr/local/share/ca-certificates/*.crt /usr/local/share/ca-certificates/*/*.crt; do
    line=$(sed -n '2p' "$c")   # first base64 line after BEGIN: distinctive
    [[ -n $line ]] || continue
    hit=$(grep -rlF --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev -e "$line" "$r" | head -n 3 || true)
    [[ -z $hit ]] || die "local CA $c found in the stand-in rootfs: $hit"
  done
  shopt -u nullglob
}

import_rootfs() {
  local r=$1 tag=$2 pyver=$3
  assert_no_local_ca "$r"
  log "importing $tag"
  tar --numeric-owner -C "$r" --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' -c . |
    "$DOCKER" import \
      --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'ENV LANG=C.UTF-8' \
      --change "ENV PYTHON_VERSION=$pyver" \
      --change 'LABEL org.opencontainers.image.description=local-stand-in' \
      --change 'CMD ["python3"]' \
      - "$tag" >/dev/null
}

check_python_image() {
  local tag=$1
  "$DOCKER" run --rm --network none "$tag" python -c \
    'import ssl, sqlite3, ctypes, lzma, bz2, zlib, venv, hashlib, uuid, readline, curses, decimal, json; print("ok", __import__("sys").version.split()[0])' ||
    die "$tag failed its import check"
}

# python:3.11-slim-bookworm: bookworm's own python3 (3.11), exposed under /usr/local/bin like the official image.
build_debian_python() {
  local ver=$1 tag=python:$1-slim-bookworm r=$WORK/rootfs-py$1
  copy_base "$r"
  [[ -x $r/usr/bin/python$ver ]] || die "bookworm's python3 is not $ver"
  # The official image is not "externally managed": pip/uv install into it without --break-system-packages.
  rm -f "$r"/usr/lib/python"$ver"/EXTERNALLY-MANAGED
  # pip + setuptools like the official image, from Debian's bundled wheels (Debian's ensurepip refuses
  # the system python); they land in /usr/local. env -i: keep the host's PIP_* settings out.
  local whl; whl=$(find "$r/usr/share/python-wheels" -maxdepth 1 -name 'pip-*.whl' -printf '%f\n' | head -n 1)
  env -i PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
    chroot "$r" "/usr/bin/python$ver" "/usr/share/python-wheels/$whl/pip" install --quiet --no-index --no-compile \
      --root-user-action=ignore --no-warn-script-location --find-links /usr/share/python-wheels pip setuptools >&2 ||
    die "installing pip into $r failed"
  find "$r/usr/local/lib" -name __pycache__ -type d -prune -exec rm -rf {} +
  ln -sfn "/usr/bin/python$ver" "$r/usr/local/bin/python$ver"
  ln -sfn "python$ver" "$r/usr/local/bin/python3"
  ln -sfn python3 "$r/usr/local/bin/python"
  [[ -e $r/usr/local/bin/pip ]] || ln -sfn pip3 "$r/usr/local/bin/pip"
  local full; full=$(env -i /usr/sbin/chroot "$r" "/usr/bin/python$ver" -c 'import platform; print(platform.python_version())')
  import_rootfs "$r" "$tag" "$full"
  cleanup_rootfs "$r"
  check_python_image "$tag"
}

# python:3.12+-slim-bookworm: bookworm has no such python; relocate a pyenv CPython (built on this Debian
# 12 against bookworm's libs) into /usr/local, where the official image keeps its own build.
build_pyenv_python() {
  local ver=$1 tag=python:$1-slim-bookworm r=$WORK/rootfs-py$1 src full
  local d; src=
  for d in "$PYENV_ROOT"/versions/"$ver".*; do   # newest final release, e.g. 3.12.1 (not 3.12-dev, 3.12.0rc1)
    [[ ${d##*/} =~ ^"$ver"\.[0-9]+$ ]] || continue
    [[ -z $src ]] || [[ $(printf '%s\n%s\n' "${src##*/}" "${d##*/}" | sort -V | tail -n 1) == "${d##*/}" ]] && src=$d
  done
  [[ -n $src && -x $src/bin/python$ver ]] ||
    die "no CPython $ver under $PYENV_ROOT/versions (needed for $tag; e.g. 'pyenv install $ver')"
  full=${src##*/}
  copy_base "$r"
  # Drop Debian's python3 (the official image has only its own CPython, in /usr/local).
  local deb_py=()
  # shellcheck disable=SC2016  # dpkg-query format, not shell
  mapfile -t deb_py < <(env -i /usr/sbin/chroot "$r" dpkg-query -W -f '${db:Status-Abbrev}${Package}\n' \
    'python3*' 'libpython3*' 2>/dev/null | awk '/^ii/ { print substr($0, 4) }')
  ((${#deb_py[@]} == 0)) || env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin /usr/sbin/chroot "$r" dpkg --purge "${deb_py[@]}" \
    >"$WORK/purge.log" 2>&1 || die "dpkg --purge of Debian's python3 failed; log: $WORK/purge.log"
  rm -rf "$r"/usr/local/lib/python3* "$r"/usr/local/bin/pip*
  [[ ! -e $r/usr/bin/python3 && ! -e $r/usr/lib/python3 ]] || die "could not remove Debian's python3 from $r"
  local dst=$r/usr/local
  mkdir -p "$dst/bin" "$dst/lib/python$ver/site-packages" "$dst/include"
  cp -a "$src"/bin/. "$dst/bin/"
  cp -a "$src"/lib/libpython* "$dst/lib/"
  [[ -d $src/lib/pkgconfig ]] && cp -a "$src/lib/pkgconfig" "$dst/lib/"
  [[ -d $src/include ]] && cp -a "$src"/include/. "$dst/include/"
  # Stdlib minus what the official image deletes (tests, .pyc, static lib). Not the host's site-packages:
  # it can hold local tweaks (here: a CA-injection .pth and a pip whose certifi bundle has the proxy CA).
  tar -C "$src/lib" -c --exclude="python$ver/site-packages" --exclude='__pycache__' --exclude='*.pyc' \
    --exclude="python$ver/test" --exclude='tests' --exclude='idle_test' --exclude='libpython*.a' "python$ver" |
    tar -C "$dst/lib" -x
  rm -f "$dst"/bin/pip* "$dst/bin/python$ver-gdb.py"
  # pyenv bakes its prefix into text files (shebangs, sysconfigdata, Makefile, *-config, .pc): rewrite.
  grep -rlIF "$src" "$dst" | xargs -r sed -i "s|$src|/usr/local|g"
  ldconfig -r "$r"   # libpython in /usr/local/lib; the binary's RPATH still names pyenv's dir (harmless)
  # A pristine pip from CPython's own bundled wheel, like the official image.
  env -i PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
    /usr/sbin/chroot "$r" "/usr/local/bin/python$ver" -m ensurepip --default-pip >"$WORK/ensurepip.log" 2>&1 ||
    die "ensurepip failed in $r; log: $WORK/ensurepip.log"
  find "$dst/lib/python$ver/site-packages" -name __pycache__ -type d -prune -exec rm -rf {} +
  import_rootfs "$r" "$tag" "$full"
  cleanup_rootfs "$r"
  check_python_image "$tag"
  # Must report the relocated prefix, not pyenv's.
  "$DOCKER" run --rm --network none "$tag" python -c \
    'import sys, sysconfig; assert sys.prefix == "/usr/local" and sysconfig.get_config_var("prefix") == "/usr/local", (sys.prefix, sysconfig.get_config_var("prefix"))' ||
    die "$tag: prefix not relocated"
}

# ghcr.io/astral-sh/uv:<ver>: FROM scratch with /uv and /uvx, as the official image; binaries from the PyPI
# wheel (the musllinux one is static like the official image's; manylinux is the fallback).
build_uv() {
  local tag=ghcr.io/astral-sh/uv:$UV_VERSION d=$WORK/uv-$UV_VERSION arch
  arch=$(uname -m)
  rm -rf "$d"; mkdir -p "$d/wheel" "$d/root"
  local plat ok=0
  for plat in musllinux_1_1_$arch manylinux_2_17_$arch ""; do
    if python3 -m pip download --quiet --no-deps --only-binary=:all: --dest "$d/wheel" \
      ${plat:+--platform "$plat"} "uv==$UV_VERSION" >&2; then ok=1; break; fi
  done
  ((ok)) || die "could not download the uv==$UV_VERSION wheel from the package index"
  python3 - "$d/wheel" "$d/root" <<'PY'
import glob, os, sys, zipfile
whl = glob.glob(os.path.join(sys.argv[1], "uv-*.whl"))[0]
with zipfile.ZipFile(whl) as z:
    for name in ("uv", "uvx"):
        member = next(m for m in z.namelist() if m.endswith(".data/scripts/" + name))
        out = os.path.join(sys.argv[2], name)
        with z.open(member) as src, open(out, "wb") as dst:
            dst.write(src.read())
        os.chmod(out, 0o755)
PY
  "$d/root/uv" --version >/dev/null || die "downloaded uv binary does not run"
  log "importing $tag"
  tar --numeric-owner --owner=0 --group=0 -C "$d/root" -c uv uvx |
    "$DOCKER" import --change 'WORKDIR /io' --change 'ENTRYPOINT ["/uv"]' \
      --change 'LABEL org.opencontainers.image.description=local-stand-in' - "$tag" >/dev/null
  rm -rf "$d"
}

"$HERE/engine.sh" start
command -v debootstrap >/dev/null || die "debootstrap missing (engine.sh start should have installed it)"
mkdir -p "$WORK"
# One builder at a time (parallel test runs share the daemon and $WORK).
exec 9>"$WORK/.lock"
flock 9
trap 'cleanup_rootfs "$BASE"' EXIT   # the rootfs is only an intermediate; the images are the product

for v in "${VERSIONS[@]}"; do
  [[ $v =~ ^3\.[0-9]+$ ]] || die "bad python version '$v' (want e.g. 3.12)"
  tag=python:$v-slim-bookworm
  if have_image "$tag"; then log "$tag exists"; continue; fi
  t0=$SECONDS
  if [[ $v == "$BOOKWORM_PYTHON" ]]; then
    build_debian_python "$v"
  else
    build_pyenv_python "$v"
  fi
  log "$tag built in $((SECONDS - t0))s"
done

if have_image "ghcr.io/astral-sh/uv:$UV_VERSION"; then
  log "ghcr.io/astral-sh/uv:$UV_VERSION exists"
else
  t0=$SECONDS; build_uv; log "ghcr.io/astral-sh/uv:$UV_VERSION built in $((SECONDS - t0))s"
fi
