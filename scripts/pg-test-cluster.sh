#!/usr/bin/env bash
# Starts a throwaway PostgreSQL cluster on 127.0.0.1 for the tests, and stops it.
#   source scripts/pg-test-cluster.sh   # starts it; exports FEDGATE_TEST_POSTGRES_URL
#   fedgate_pg_stop                      # stops it and deletes its files
# PostgreSQL refuses to run as root, so the server runs as the 'postgres' system user.
# fsync is off: test data only, never use these settings for a real deployment.
# Strict for its own steps; the sourcing shell gets its own options back at the end.
fedgate_pg_saved_options=$(set +o)
set -euo pipefail
FEDGATE_PG_BIN=${FEDGATE_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}
if [ ! -x "$FEDGATE_PG_BIN/initdb" ]; then
  echo "pg-test-cluster: no PostgreSQL server found; install it with: apt-get install -y postgresql" >&2
  eval "$fedgate_pg_saved_options"
  return 1 2>/dev/null || exit 1
fi
FEDGATE_PG_PORT=${FEDGATE_PG_PORT:-55432}
FEDGATE_PG_DIR=$(mktemp -d -t fedgate-pg.XXXXXX)
id -u postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
chown postgres: "$FEDGATE_PG_DIR"
fedgate_as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
fedgate_as_pg "$FEDGATE_PG_BIN/initdb" -D "$FEDGATE_PG_DIR/data" -U postgres -A trust --no-sync -E UTF8 >"$FEDGATE_PG_DIR/initdb.log"
fedgate_as_pg "$FEDGATE_PG_BIN/pg_ctl" -D "$FEDGATE_PG_DIR/data" -l "$FEDGATE_PG_DIR/server.log" -w -t 60 \
  -o "-h 127.0.0.1 -p $FEDGATE_PG_PORT -k $FEDGATE_PG_DIR -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" start >/dev/null
fedgate_as_pg "$FEDGATE_PG_BIN/createdb" -h 127.0.0.1 -p "$FEDGATE_PG_PORT" -U postgres fedgate_test
export FEDGATE_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$FEDGATE_PG_PORT/fedgate_test"
fedgate_pg_stop() {
  fedgate_as_pg "$FEDGATE_PG_BIN/pg_ctl" -D "$FEDGATE_PG_DIR/data" -m fast -w stop >/dev/null || true
  rm -rf "$FEDGATE_PG_DIR"
}
echo "pg-test-cluster: PostgreSQL running at $FEDGATE_TEST_POSTGRES_URL"
eval "$fedgate_pg_saved_options"
unset fedgate_pg_saved_options
