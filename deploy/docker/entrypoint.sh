#!/bin/sh
# Container entry point: `carina serve` on all interfaces over /workspace.
#   TLS: a certificate mounted at $CARINA_TLS_CERT and $CARINA_TLS_KEY (default /certs/tls.crt and
#   /certs/tls.key), or CARINA_SSL_SELF_SIGNED=true for a certificate made at start (the AWS
#   deployment's re-encryption from the load balancer). Otherwise plain HTTP.
#   CARINA_ZOO: zoo archives to install into the workspace when missing ("all", or names).
#   Extra arguments go to `carina serve` (e.g. --workers 2).
set -eu

workspace="${CARINA_WORKSPACE:-/workspace}"
cert="${CARINA_TLS_CERT:-/certs/tls.crt}"
key="${CARINA_TLS_KEY:-/certs/tls.key}"

if [ -n "${CARINA_ZOO:-}" ]; then
  names="$CARINA_ZOO"
  if [ "$names" = "all" ]; then
    names=$(python -c "from carina.zoo import load_index; print(*load_index())")
  fi
  for name in $names; do
    [ -d "$workspace/models/$name" ] || carina zoo install "$name" --workspace "$workspace"
  done
fi

set -- --host "${CARINA_HOST:-0.0.0.0}" --port "${CARINA_PORT:-5000}" --workspace "$workspace" "$@"
if [ -f "$cert" ] && [ -f "$key" ]; then
  set -- "$@" --ssl-certfile "$cert" --ssl-keyfile "$key"
elif [ "${CARINA_SSL_SELF_SIGNED:-false}" = "true" ]; then
  set -- "$@" --ssl-self-signed
fi
exec carina serve "$@"
