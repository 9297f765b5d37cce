#!/bin/sh
# postStartCommand of both devcontainers: runs inside, as `dev`, each time the container starts.
# - Trusts the proxy CA from on-host.sh (if any), for uv, pip, curl and git here (SSL_CERT_FILE names the bundle).
# - Lets `dev` use the host's Docker engine through its socket: joins the group that owns the socket.
# - Says in one line when the workspace is not writable by `dev`.
set -eu
ca=.devcontainer/extra-ca.pem
if [ -s "$ca" ]; then
  sudo cp "$ca" /usr/local/share/ca-certificates/devcontainer-extra-ca.crt
  sudo update-ca-certificates >/dev/null
fi
socket=/var/run/docker.sock
if [ -S "$socket" ] && ! [ -w "$socket" ]; then
  gid=$(stat -c %g "$socket")
  group=$(getent group "$gid" | cut -d: -f1)
  if [ -z "$group" ]; then
    group=docker-host
    sudo groupadd --gid "$gid" "$group"
  fi
  sudo usermod -aG "$group" "$(id -un)"  # new shells and `devcontainer exec` sessions have it
fi
if ! [ -w . ]; then
  echo "error: the workspace $(pwd) belongs to uid $(stat -c %u .), and dev (uid $(id -u)) cannot write it: on Linux let the Dev Containers tools match the uids (updateRemoteUserUID, on by default), or chown the checkout to your user" >&2
fi
