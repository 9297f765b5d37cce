#!/bin/sh
# initializeCommand of both devcontainers: runs on the host, in the project folder, before the image is built.
# - The CA certificate of a TLS-intercepting proxy, when the host has one in EXTRA_CA (as `uv run build-image` reads
#   it), is copied to .devcontainer/extra-ca.pem: the build gets it as the secret `extra_ca` (build.options) and the
#   container trusts it (on-start.sh). Without EXTRA_CA the file is empty, and nothing changes. It is git- and
#   docker-ignored (*.pem), so it reaches no commit and no image layer.
# - The cloud credential folders the container mounts read-only are created (empty) where missing: a bind mount
#   needs its source to exist.
set -eu
ca=.devcontainer/extra-ca.pem
if [ -n "${EXTRA_CA:-}" ]; then
  [ -f "$EXTRA_CA" ] || { echo "error: EXTRA_CA=$EXTRA_CA is not a file (a PEM certificate the build should trust)" >&2; exit 1; }
  cp "$EXTRA_CA" "$ca"
else
  : >"$ca"
fi
home=${HOME:-${USERPROFILE:-}}
for folder in .aws .azure .config/gcloud .kube; do
  mkdir -p "$home/$folder"
done
