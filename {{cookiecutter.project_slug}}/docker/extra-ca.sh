# Sourced by the Dockerfile's RUN steps that reach a package index: `. /tmp/extra-ca.sh && uv sync ...`.
# Trusts one more CA certificate, the optional BuildKit secret `extra_ca` (a PEM file), for networks whose proxy
# intercepts TLS. The combined bundle is written to /dev/shm, a tmpfs that exists for that RUN only, so the
# certificate never lands in an image layer. Without the secret nothing changes.
set -eu
if [ -s /run/secrets/extra_ca ]; then
    extra_ca_bundle=/dev/shm/ca-bundle.pem
    cat /etc/ssl/certs/ca-certificates.crt /run/secrets/extra_ca >"$extra_ca_bundle"
    # uv, pip/requests, curl and git read these variables; apt reads the extra config file APT_CONFIG names.
    export SSL_CERT_FILE="$extra_ca_bundle" REQUESTS_CA_BUNDLE="$extra_ca_bundle" CURL_CA_BUNDLE="$extra_ca_bundle" \
        GIT_SSL_CAINFO="$extra_ca_bundle" APT_CONFIG=/dev/shm/apt-extra-ca.conf
    printf 'Acquire::https::CAInfo "%s";\n' "$extra_ca_bundle" >"$APT_CONFIG"
fi
