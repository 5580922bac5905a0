#!/usr/bin/env bash
# Certificates for llbkitd's mutual TLS, and the Kubernetes Secrets that carry them
# (BuildKit's examples/kubernetes/create-certs.sh does the same with mkcert; this uses openssl).
#
#   deploy/kubernetes/create-certs.sh SAN [SAN...]
#   deploy/kubernetes/create-certs.sh '*.llbkitd.build.svc' '*.llbkitd.build.svc.cluster.local' 127.0.0.1
#
# Each SAN is a name or an IP address clients reach a daemon by: with the headless Service, a
# pod is llbkitd-N.llbkitd.<namespace>.svc, so give the wildcard of its namespace. Writes, under
# ./.certs (CERTS_DIR):
#   daemon/{ca,cert,key}.pem   the daemon's (mounted at /certs by statefulset.yaml)
#   client/{ca,cert,key}.pem   a client's: llbkit --tlsdir .certs/client, buildctl the same
#   llbkitd-daemon-certs.yaml, llbkitd-client-certs.yaml   the Secrets (kubectl apply -f)
# The CA's key is left in ca-key.pem, to issue more client certificates; keep it elsewhere.
set -euo pipefail
if [ "$#" -lt 1 ]; then
    sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 1
fi
dir=${CERTS_DIR:-./.certs}
days=${CERT_DAYS:-825}
mkdir -p "$dir/daemon" "$dir/client"
cd "$dir"
umask 077

san=""
for name in "$@"; do
    if [[ "$name" =~ ^[0-9.]+$ || "$name" == *:* ]]; then kind=IP; else kind=DNS; fi
    san="${san:+$san,}$kind:$name"
done
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

if [ ! -e ca-key.pem ]; then
    key ca-key.pem
    openssl req -x509 -new -key ca-key.pem -out ca.pem -days 3650 -subj "/CN=llbkitd CA" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
fi
issue() {  # issue DIR CN EXTENSIONS
    key "$1/key.pem"
    openssl req -new -key "$1/key.pem" -subj "/CN=$2" -out "$1/req.pem"
    openssl x509 -req -in "$1/req.pem" -CA ca.pem -CAkey ca-key.pem -CAcreateserial \
        -days "$days" -out "$1/cert.pem" -extfile <(printf '%s\n' "${@:3}") 2>/dev/null
    rm -f "$1/req.pem"
    cp ca.pem "$1/ca.pem"
}
issue daemon llbkitd "subjectAltName=$san" "extendedKeyUsage=serverAuth" \
    "keyUsage=critical,digitalSignature"
issue client client "extendedKeyUsage=clientAuth" "keyUsage=critical,digitalSignature"

secret() {  # secret NAME DIR
    {
        printf 'apiVersion: v1\nkind: Secret\nmetadata:\n  name: %s\ntype: Opaque\ndata:\n' "$1"
        for file in ca.pem cert.pem key.pem; do
            printf '  %s: %s\n' "$file" "$(base64 -w0 <"$2/$file")"
        done
    } >"$1.yaml"
}
secret llbkitd-daemon-certs daemon
secret llbkitd-client-certs client
echo "create-certs: $(pwd) (SANs $san)" >&2
