#!/bin/bash
# Entrypoint of the test image that stands in for docker.io/library/mariadb:10.11, written for
# clinic-operator's tests (Debian's mariadb-server underneath). It implements the part of the
# official image's documented contract that the operator uses:
#   MARIADB_ROOT_PASSWORD, MARIADB_DATABASE, MARIADB_USER, MARIADB_PASSWORD,
#   MARIADB_MYSQL_LOCALHOST_USER (a localhost-only `healthcheck` account whose credentials
#   stay in the data directory, read by healthcheck.sh), MARIADB_AUTO_UPGRADE, and the
#   server's own configuration from /etc/mysql/conf.d (e.g. init_file).
# Not implemented: /docker-entrypoint-initdb.d, *_FILE variables, random/empty root passwords.
set -euo pipefail

log() { echo "$(date -u +%FT%TZ) [entrypoint] $*" >&2; }

if [ "${1:0:1}" = '-' ]; then
  set -- mariadbd "$@"
fi
if [ "$1" != mariadbd ] && [ "$1" != mysqld ]; then
  exec "$@"
fi

DATADIR=${DATADIR:-/var/lib/mysql}
SOCKET=/run/mysqld/mysqld.sock

temp_server_start() {
  "$@" --skip-networking --socket="$SOCKET" --skip-slave-start --expire-logs-days=0 \
    --loose-innodb_buffer_pool_load_at_startup=0 &
  TEMP_PID=$!
  for _ in $(seq 1 120); do
    if mariadb --protocol=socket --socket="$SOCKET" "${ROOT_AUTH[@]}" -e 'SELECT 1' >/dev/null 2>&1; then
      return 0
    fi
    if ! kill -0 "$TEMP_PID" 2>/dev/null; then
      log "the temporary server exited"
      return 1
    fi
    sleep 1
  done
  log "the temporary server did not answer in 120 s"
  return 1
}

temp_server_stop() {
  mariadb-admin --socket="$SOCKET" "${ROOT_AUTH[@]}" shutdown
  wait "$TEMP_PID" || true
}

sql() { mariadb --protocol=socket --socket="$SOCKET" "${ROOT_AUTH[@]}" --binary-mode "$@"; }

sql_escape() { printf '%s' "$1" | sed -e "s/\\\\/\\\\\\\\/g" -e "s/'/\\\\'/g"; }

if [ ! -d "$DATADIR/mysql" ]; then
  if [ -z "${MARIADB_ROOT_PASSWORD:-}" ]; then
    log "error: database is uninitialized and MARIADB_ROOT_PASSWORD is not set"
    exit 1
  fi
  log "initialising the data directory $DATADIR"
  mariadb-install-db --datadir="$DATADIR" --skip-test-db --auth-root-authentication-method=normal \
    --default-time-zone=SYSTEM --skip-log-bin --expire-logs-days=0 \
    --loose-innodb_buffer_pool_load_at_startup=0 --loose-innodb_buffer_pool_dump_at_shutdown=0 \
    >/dev/null
  ROOT_AUTH=(-uroot)
  temp_server_start "$@"
  root_pw=$(sql_escape "$MARIADB_ROOT_PASSWORD")
  statements="SET @@SESSION.SQL_LOG_BIN=0;
    DROP USER IF EXISTS ''@'localhost', ''@'$(cat /proc/sys/kernel/hostname)';
    ALTER USER 'root'@'localhost' IDENTIFIED BY '$root_pw';
    CREATE USER 'root'@'%' IDENTIFIED BY '$root_pw';
    GRANT ALL ON *.* TO 'root'@'%' WITH GRANT OPTION;
    GRANT PROXY ON ''@'%' TO 'root'@'%' WITH GRANT OPTION;"
  if [ -n "${MARIADB_MYSQL_LOCALHOST_USER:-}" ]; then
    hc_pw=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
    statements="$statements
      CREATE USER 'healthcheck'@'127.0.0.1' IDENTIFIED BY '$hc_pw';
      CREATE USER 'healthcheck'@'::1' IDENTIFIED BY '$hc_pw';
      CREATE USER 'healthcheck'@'localhost' IDENTIFIED BY '$hc_pw';"
    umask 077
    printf '[mariadb-client]\nport=3306\nsocket=%s\nuser=healthcheck\npassword=%s\n' "$SOCKET" "$hc_pw" \
      >"$DATADIR/.my-healthcheck.cnf"
    umask 022
  fi
  if [ -n "${MARIADB_DATABASE:-}" ]; then
    statements="$statements
      CREATE DATABASE IF NOT EXISTS \`$MARIADB_DATABASE\`;"
  fi
  if [ -n "${MARIADB_USER:-}" ] && [ -n "${MARIADB_PASSWORD:-}" ]; then
    user_pw=$(sql_escape "$MARIADB_PASSWORD")
    statements="$statements
      CREATE USER '$MARIADB_USER'@'%' IDENTIFIED BY '$user_pw';"
    if [ -n "${MARIADB_DATABASE:-}" ]; then
      statements="$statements
        GRANT ALL ON \`${MARIADB_DATABASE//_/\\_}\`.* TO '$MARIADB_USER'@'%';"
    fi
  fi
  echo "$statements" | sql
  ROOT_AUTH=(-uroot "-p$MARIADB_ROOT_PASSWORD")
  temp_server_stop
  log "data directory initialised"
elif [ -n "${MARIADB_AUTO_UPGRADE:-}" ]; then
  server_version=$("$1" --version | sed -E 's/.*Ver ([0-9.]+)-MariaDB.*/\1/')
  data_version=$(sed -E 's/-MariaDB.*//' "$DATADIR/mysql_upgrade_info" 2>/dev/null || true)
  if [ "$server_version" != "$data_version" ]; then
    log "upgrading the data directory from ${data_version:-unknown} to $server_version"
    ROOT_AUTH=(-uroot "-p${MARIADB_ROOT_PASSWORD:-}")
    temp_server_start "$@"
    mariadb-upgrade --socket="$SOCKET" "${ROOT_AUTH[@]}"
    temp_server_stop
  fi
fi

log "starting $*"
exec "$@"
