#!/bin/sh
# One-shot (postgres image): the store's database `fabric`, owned by its own role `fabric`, on the
# same PostgreSQL server as Temporal. Idempotent; re-running it also applies a changed password.
# The worker creates and migrates the tables itself (Alembic) when it starts.
set -eu

: "${PGHOST:=postgresql}"
: "${PGUSER:=temporal}"
: "${PGPASSWORD:?PGPASSWORD (the PostgreSQL admin password) must be set}"
: "${FABRIC_DB_PASSWORD:?FABRIC_DB_PASSWORD must be set}"
export PGHOST PGUSER PGPASSWORD

attempt=0
until pg_isready -q -d postgres; do
    attempt=$((attempt + 1))
    [ "$attempt" -lt 60 ] || { echo "PostgreSQL at $PGHOST never became ready" >&2; exit 1; }
    sleep 1
done

psql -X -q -v ON_ERROR_STOP=1 -d postgres -v fabric_password="$FABRIC_DB_PASSWORD" <<'SQL'
SELECT 'CREATE ROLE fabric LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'fabric') \gexec
ALTER ROLE fabric WITH LOGIN PASSWORD :'fabric_password';
SELECT 'CREATE DATABASE fabric OWNER fabric' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'fabric') \gexec
REVOKE ALL ON DATABASE fabric FROM PUBLIC;
GRANT ALL ON DATABASE fabric TO fabric;
SQL
echo "database fabric is ready"
