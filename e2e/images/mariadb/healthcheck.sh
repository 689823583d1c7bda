#!/bin/bash
# healthcheck.sh of the MariaDB test image (clinic-operator's tests), for the two checks of the
# official image that the operator's probes use, made as the official script makes them:
#   --connect             the server answers `select @@skip_networking` with 0 over its socket
#                         (so it works with require_secure_transport), else a TCP connection
#                         with the healthcheck account succeeds
#   --innodb_initialized  InnoDB is up (over the socket)
# The account's credentials are in the data directory, written at initialisation when
# MARIADB_MYSQL_LOCALHOST_USER is set, so the probes carry no password.
set -eu
DATADIR=${DATADIR:-/var/lib/mysql}
defaults=(--defaults-extra-file="$DATADIR/.my-healthcheck.cnf")
[ -r "$DATADIR/.my-healthcheck.cnf" ] || { echo "no $DATADIR/.my-healthcheck.cnf" >&2; exit 1; }
sql() { mariadb "${defaults[@]}" --protocol socket -B --skip-column-names "$@"; }
[ $# -gt 0 ] || set -- --connect
for check in "$@"; do
  case "$check" in
    --connect)
      networking=$(sql -e 'select @@skip_networking' 2>/dev/null || true)
      case "$networking" in
        0) ;;
        1) exit 1 ;;
        *) mariadb "${defaults[@]}" --protocol=tcp -h 127.0.0.1 -e 'SELECT 1' >/dev/null ;;
      esac
      ;;
    --innodb_initialized)
      ok=$(sql -e "SELECT 1 FROM information_schema.ENGINES WHERE engine='InnoDB' AND support IN ('YES','DEFAULT','ENABLED')")
      [ "$ok" = 1 ]
      ;;
    *)
      echo "healthcheck.sh: unsupported check $check" >&2
      exit 2
      ;;
  esac
done
