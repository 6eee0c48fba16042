#!/bin/sh
# One-shot (alpine/openssl, as root, no network): the engine's private PKI for mTLS between Temporal
# and everything that dials it inside the stack. Nothing outside the stack trusts this CA or holds a
# certificate from it: people and agents dial the door, whose TLS is its own (FABRIC_HOME/tls).
#
#   $CA_DIR/ca.key            the CA's key: its own volume, mounted here only
#   $CERTS_DIR/<name>/ca.pem  the CA certificate (to verify Temporal's server certificate)
#   $CERTS_DIR/<name>/tls.pem, tls.key
#       temporal          server (and internode client) certificate: DNS temporal, localhost, 127.0.0.1
#       fabric-worker, fabric-door, fabric-gateway   client certificates (uid 10001, the fabric image)
#       temporal-ui, temporal-admin-tools            client certificates (uid 1000, Temporal's images)
#
# Each key is readable by its consumer's uid only (0400). Idempotent: what exists and is valid for
# more than RENEW_DAYS is kept; a missing, expiring or foreign leaf is reissued (restart the stack to
# load it); a new CA (delete the CA volume) reissues every leaf.
set -eu

: "${CA_DIR:=/ca}"
: "${CERTS_DIR:=/certs}"
: "${CA_DAYS:=3650}"
: "${CERT_DAYS:=825}"
: "${RENEW_DAYS:=30}"
: "${FABRIC_UID:=10001}"
: "${TEMPORAL_UID:=1000}"
: "${TEMPORAL_HOST:=temporal}"

umask 077
mkdir -p "$CA_DIR" "$CERTS_DIR"
CA_KEY="$CA_DIR/ca.key"
CA_PEM="$CA_DIR/ca.pem"

new_key() {
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"
}

if [ ! -s "$CA_KEY" ] || [ ! -s "$CA_PEM" ]; then
    echo "making the engine CA"
    new_key "$CA_KEY"
    openssl req -x509 -new -key "$CA_KEY" -sha256 -days "$CA_DAYS" -subj "/CN=InferoFabric engine CA" \
        -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" -out "$CA_PEM"
fi

# issue NAME UID EXTENDED_KEY_USAGE [SUBJECT_ALT_NAMES]
issue() {
    name=$1 owner=$2 usage=$3 sans=${4:-}
    dir="$CERTS_DIR/$name"
    mkdir -p "$dir"
    if [ -s "$dir/tls.key" ] && [ -s "$dir/tls.pem" ] && cmp -s "$CA_PEM" "$dir/ca.pem" \
        && openssl verify -CAfile "$CA_PEM" "$dir/tls.pem" >/dev/null 2>&1 \
        && openssl x509 -checkend $((RENEW_DAYS * 86400)) -noout -in "$dir/tls.pem" >/dev/null; then
        echo "$name: certificate is current"
    else
        echo "$name: issuing a certificate ($usage)"
        rm -f "$dir/tls.key" "$dir/tls.pem" "$dir/ca.pem"
        new_key "$dir/tls.key"
        openssl req -new -key "$dir/tls.key" -subj "/CN=$name" -out "$dir/tls.csr"
        {
            echo "basicConstraints=critical,CA:FALSE"
            echo "keyUsage=critical,digitalSignature"
            echo "extendedKeyUsage=$usage"
            [ -z "$sans" ] || echo "subjectAltName=$sans"
        } >"$dir/ext.cnf"
        openssl x509 -req -in "$dir/tls.csr" -CA "$CA_PEM" -CAkey "$CA_KEY" -sha256 -days "$CERT_DAYS" \
            -set_serial "0x$(openssl rand -hex 16)" -extfile "$dir/ext.cnf" -out "$dir/tls.pem"
        rm -f "$dir/tls.csr" "$dir/ext.cnf"
        cp "$CA_PEM" "$dir/ca.pem"
    fi
    # Also on every run: a volume restored from a backup gets its owners and modes back.
    if [ "$(id -u)" = 0 ]; then
        chown "$owner:$owner" "$dir/tls.key" "$dir/tls.pem" "$dir/ca.pem"
    fi
    chmod 0400 "$dir/tls.key"
    chmod 0444 "$dir/tls.pem" "$dir/ca.pem"
    chmod 0755 "$dir"
}

issue "$TEMPORAL_HOST" "$TEMPORAL_UID" "serverAuth,clientAuth" "DNS:$TEMPORAL_HOST,DNS:localhost,IP:127.0.0.1"
for name in fabric-worker fabric-door fabric-gateway; do
    issue "$name" "$FABRIC_UID" clientAuth
done
for name in temporal-ui temporal-admin-tools; do
    issue "$name" "$TEMPORAL_UID" clientAuth
done
chmod 0755 "$CERTS_DIR"
echo "engine certificates are ready in $CERTS_DIR"
