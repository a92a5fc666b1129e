#!/bin/sh
# The official postgres image's first start, as far as compose.yaml relies on it: an empty $PGDATA is
# initialised with POSTGRES_USER (password POSTGRES_PASSWORD, required from other hosts) and POSTGRES_DB,
# listening on every address; then the server runs in the foreground.
set -eu
user=${POSTGRES_USER:-postgres}
db=${POSTGRES_DB:-$user}
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    pwfile=$(mktemp)
    printf '%s\n' "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set}" > "$pwfile"
    initdb -D "$PGDATA" -U "$user" --pwfile="$pwfile" -E UTF8 --auth-local=trust --auth-host=scram-sha-256
    rm -f "$pwfile"
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    echo "listen_addresses = '*'" >> "$PGDATA/postgresql.conf"
    if [ "$db" != postgres ]; then
        pg_ctl -D "$PGDATA" -w -o "-c listen_addresses=''" start
        createdb -U "$user" "$db"
        pg_ctl -D "$PGDATA" -w -m fast stop
    fi
fi
exec "$@"
