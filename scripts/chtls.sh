#!/usr/bin/env bash
# chtls.sh start DIR | stop DIR
#
# A private ClickHouse 18.16 with https for tests (scripts/chctl.sh plus the
# fragments etc/clickhouse/tls.xml.in and users-tls.xml.in), everything under
# DIR:
#   DIR/certs/ca.crt            a CA made here (EC P-256, self-signed)
#   DIR/certs/server.crt, .key  the server's certificate from it, for
#                               127.0.0.1 and localhost
#   DIR/certs/client.crt, .key  a client certificate from it (the https port
#                               requires one)
#   DIR/certs/wrong-ca.crt      another CA, which signed nothing here
#   DIR/ch/                     the server (http and native ports on loopback
#                               as usual, https on a third)
# The server has a user "spangate" with a random password. start prints
#   {"http":P,"https":P,"tcp":P,"ca":"...","wrongCa":"...","clientCert":"...",
#    "clientKey":"...","serverCert":"...","user":"spangate","password":"..."}
# once https answers; stop stops the server (idempotent).
set -euo pipefail

usage() { echo "usage: $0 start DIR | stop DIR" >&2; exit 2; }
die() { echo "chtls.sh: $*" >&2; exit 1; }

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
tmpl="$here/../etc/clickhouse"

[[ $# -eq 2 ]] || usage
cmd=$1
DIR=$2

case "$cmd" in
start)
    command -v openssl >/dev/null || die "openssl not found (apt-get install openssl)"
    mkdir -p "$DIR/certs" "$DIR/conf"
    DIR=$(cd "$DIR" && pwd -P)
    c=$DIR/certs
    ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
    {
        openssl req -x509 "${ec[@]}" -keyout "$c/ca.key" -out "$c/ca.crt" -days 3650 \
            -subj "/CN=spangate test CA" -addext "basicConstraints=critical,CA:TRUE" \
            -addext "keyUsage=critical,keyCertSign,cRLSign"
        openssl req -x509 "${ec[@]}" -keyout "$c/wrong-ca.key" -out "$c/wrong-ca.crt" -days 3650 \
            -subj "/CN=some other CA" -addext "basicConstraints=critical,CA:TRUE"
        openssl req "${ec[@]}" -keyout "$c/server.key" -out "$c/server.csr" -subj "/CN=localhost"
        printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" "basicConstraints=CA:FALSE" \
            "extendedKeyUsage=serverAuth" >"$c/server.ext"
        openssl x509 -req -in "$c/server.csr" -CA "$c/ca.crt" -CAkey "$c/ca.key" -CAcreateserial \
            -out "$c/server.crt" -days 3650 -extfile "$c/server.ext"
        openssl req "${ec[@]}" -keyout "$c/client.key" -out "$c/client.csr" -subj "/CN=spangate"
        printf '%s\n' "basicConstraints=CA:FALSE" "extendedKeyUsage=clientAuth" >"$c/client.ext"
        openssl x509 -req -in "$c/client.csr" -CA "$c/ca.crt" -CAkey "$c/ca.key" -CAcreateserial \
            -out "$c/client.crt" -days 3650 -extfile "$c/client.ext"
    } >"$c/openssl.log" 2>&1 || { cat "$c/openssl.log" >&2; die "making the certificates failed"; }
    # The server reads its key as whoever runs it; the key stays private to us.
    chmod 600 "$c"/*.key
    password=$(openssl rand -hex 16)
    http=$("$here/freeport.sh")
    tcp=$("$here/freeport.sh" "$http")
    https=$("$here/freeport.sh" "$http" "$tcp")
    sed -e "s|@HTTPS_PORT@|$https|g" -e "s|@CERT@|$c/server.crt|g" -e "s|@KEY@|$c/server.key|g" \
        -e "s|@CA@|$c/ca.crt|g" "$tmpl/tls.xml.in" >"$DIR/conf/tls.xml"
    sed -e "s|@USER@|spangate|g" -e "s|@PASSWORD@|$password|g" "$tmpl/users-tls.xml.in" \
        >"$DIR/conf/users-tls.xml"
    "$here/chctl.sh" start "$DIR/ch" "$http" "$tcp" "$DIR/conf/tls.xml" "$DIR/conf/users-tls.xml" >&2
    # The https listener opens with the others; make sure it took the certificate.
    for _ in $(seq 1 100); do
        if [[ "$(curl -s --max-time 2 --cacert "$c/ca.crt" --cert "$c/client.crt" --key "$c/client.key" \
            "https://127.0.0.1:$https/ping" 2>/dev/null)" == "Ok." ]]; then
            printf '{"http":%s,"https":%s,"tcp":%s,"ca":"%s","wrongCa":"%s","clientCert":"%s",' \
                "$http" "$https" "$tcp" "$c/ca.crt" "$c/wrong-ca.crt" "$c/client.crt"
            printf '"clientKey":"%s","serverCert":"%s","user":"spangate","password":"%s"}\n' \
                "$c/client.key" "$c/server.crt" "$password"
            exit 0
        fi
        sleep 0.1
    done
    "$here/chctl.sh" stop "$DIR/ch" || true
    die "https on 127.0.0.1:$https did not answer (logs in $DIR/ch/log)"
    ;;
stop)
    [[ -d "$DIR" ]] || exit 0
    "$here/chctl.sh" stop "$DIR/ch"
    ;;
*) usage ;;
esac
