#!/bin/sh
# Writes a new PostgreSQL password for the Compose stack's `postgres` profile, as two env files
# beside this script that only you can read (Compose reads them, the containers get variables):
#   secrets/postgres.env   POSTGRES_PASSWORD, for the postgres service's first start
#   secrets/database.env   LINGSHU_DATABASE_URL with the same password, for lingshu-server
# PostgreSQL takes POSTGRES_PASSWORD only when it creates its data volume: to change the password
# of an existing database, ALTER ROLE lingshu PASSWORD '...' in it, then run this script with
# that password as its argument.
set -eu
cd "$(dirname "$0")"
umask 077
mkdir -p secrets
chmod 0700 secrets
password="${1:-$(openssl rand -hex 24)}"
case "$password" in
  *[!A-Za-z0-9._~-]*) echo "use letters, digits and . _ ~ - only (the password goes into a URL)" >&2; exit 1 ;;
esac
printf 'POSTGRES_PASSWORD=%s\n' "$password" > secrets/postgres.env.new
printf 'LINGSHU_DATABASE_URL=postgresql+asyncpg://lingshu:%s@postgres:5432/lingshu\n' "$password" \
  > secrets/database.env.new
mv secrets/postgres.env.new secrets/postgres.env
mv secrets/database.env.new secrets/database.env
echo "wrote secrets/postgres.env and secrets/database.env (mode 0600)"
