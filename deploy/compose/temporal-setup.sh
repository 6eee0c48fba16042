#!/bin/sh
# One-shot (temporalio/admin-tools), once the Temporal server answers: the fabric's namespace and
# its search attributes (inferofabric.models.messages.SEARCH_ATTRIBUTES). `fabric worker` also
# registers missing ones at start (inferofabric.connection.ensure_search_attributes); doing it here
# first means the worker starts against a namespace that already has them, with no race between
# several workers. Idempotent. With TEMPORAL_TLS_CERT set (docker-compose.yml: Temporal requires
# client certificates) the CLI presents TEMPORAL_TLS_CERT/TEMPORAL_TLS_KEY and checks the server's
# certificate against TEMPORAL_TLS_CA for the name TEMPORAL_TLS_SERVER_NAME (default: the host).
set -eu

: "${TEMPORAL_ADDRESS:=temporal:7233}"
: "${FABRIC_NAMESPACE:=default}"
: "${FABRIC_NAMESPACE_RETENTION:=168h}"
SEARCH_ATTRIBUTES="FabricPool:Keyword FabricLocation:Keyword FabricTeam:Keyword FabricState:Keyword FabricGpuType:Keyword FabricGpus:Int"

# Dial the IPv4 address: the CLI may otherwise try an address the server does not listen on.
host=${TEMPORAL_ADDRESS%:*}
port=${TEMPORAL_ADDRESS##*:}
ip=$(getent ahostsv4 "$host" | awk 'NR == 1 { print $1 }')
address="${ip:-$host}:$port"
if [ -n "${TEMPORAL_TLS_CERT:-}" ]; then
    : "${TEMPORAL_TLS_KEY:?TEMPORAL_TLS_KEY must be set with TEMPORAL_TLS_CERT}"
    : "${TEMPORAL_TLS_CA:?TEMPORAL_TLS_CA must be set with TEMPORAL_TLS_CERT}"
    : "${TEMPORAL_TLS_SERVER_NAME:=$host}"
fi
temporal_cli() {
    if [ -n "${TEMPORAL_TLS_CERT:-}" ]; then
        temporal "$@" --tls-cert-path "$TEMPORAL_TLS_CERT" --tls-key-path "$TEMPORAL_TLS_KEY" \
            --tls-ca-path "$TEMPORAL_TLS_CA" --tls-server-name "$TEMPORAL_TLS_SERVER_NAME"
    else
        temporal "$@"
    fi
}
t() { temporal_cli "$@" --address "$address" --namespace "$FABRIC_NAMESPACE"; }

attempt=0
until temporal_cli operator cluster health --address "$address" 2>/dev/null | grep -q SERVING; do
    attempt=$((attempt + 1))
    [ "$attempt" -lt 90 ] || { echo "Temporal at $address never became healthy" >&2; exit 1; }
    sleep 2
done

if ! t operator namespace describe >/dev/null 2>&1; then
    echo "creating namespace $FABRIC_NAMESPACE (retention $FABRIC_NAMESPACE_RETENTION)"
    t operator namespace create --retention "$FABRIC_NAMESPACE_RETENTION"
fi

# A new namespace reaches the frontend's cache after a few seconds.
attempt=0
until t operator search-attribute list >/dev/null 2>&1; do
    attempt=$((attempt + 1))
    [ "$attempt" -lt 60 ] || { echo "namespace $FABRIC_NAMESPACE never became visible" >&2; exit 1; }
    sleep 1
done

for pair in $SEARCH_ATTRIBUTES; do
    name=${pair%%:*}
    type=${pair#*:}
    if t operator search-attribute list | grep -qw "$name"; then
        echo "search attribute $name exists"
    else
        echo "creating search attribute $name ($type)"
        t operator search-attribute create --name "$name" --type "$type"
    fi
done

# Wait until the server lists all of them, so workflows started right after can use them.
attempt=0
for pair in $SEARCH_ATTRIBUTES; do
    until t operator search-attribute list | grep -qw "${pair%%:*}"; do
        attempt=$((attempt + 1))
        [ "$attempt" -lt 60 ] || { echo "search attribute ${pair%%:*} never became visible" >&2; exit 1; }
        sleep 1
    done
done
echo "namespace $FABRIC_NAMESPACE and the fabric's search attributes are ready"
