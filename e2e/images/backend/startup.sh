#!/bin/bash
# /openmrs/startup.sh of the test image standing in for
# docker.io/openmrs/openmrs-reference-application-3-backend (clinic-operator's tests). It follows
# the upstream start script's contract and writes where it writes — the OMRS_* variables with
# upstream's defaults, /openmrs/openmrs-server.properties, the data directory's module,
# configuration and frontend folders refreshed from /openmrs/distribution with `cp -a`, a wait
# for the database port (up to an hour), Tomcat's webapps/work/temp cleared and the war copied
# into webapps with `cp -a`, bin/setenv.sh — and then starts the stand-in server in Tomcat's
# place (catalina.sh run). What runs is NOT OpenMRS: see openmrs-standin.
set -euo pipefail

OMRS_HOME=${OMRS_HOME:-/openmrs}
OMRS_DATA_DIR="$OMRS_HOME/data"
OMRS_WEBAPP_NAME=${OMRS_WEBAPP_NAME:-openmrs}
OMRS_ADMIN_USER_PASSWORD=${OMRS_ADMIN_USER_PASSWORD:-Admin123}
OMRS_AUTO_UPDATE_DATABASE=${OMRS_AUTO_UPDATE_DATABASE:-true}
OMRS_CREATE_TABLES=${OMRS_CREATE_TABLES:-true}
OMRS_DB=${OMRS_DB:-mysql}
OMRS_DB_HOSTNAME=${OMRS_DB_HOSTNAME:-localhost}
OMRS_DB_PORT=${OMRS_DB_PORT:-3306}
OMRS_DB_NAME=${OMRS_DB_NAME:-openmrs}
OMRS_DB_USERNAME=${OMRS_DB_USERNAME:-openmrs}
OMRS_DB_PASSWORD=${OMRS_DB_PASSWORD:-openmrs}
OMRS_DB_EXTRA_ARGS=${OMRS_DB_EXTRA_ARGS:-}
# As upstream: the driver follows OMRS_DB (MySQL Connector/J or MariaDB Connector/J), the
# arguments are upstream's defaults followed by OMRS_DB_EXTRA_ARGS, and OMRS_DB_URL wins.
case "$OMRS_DB" in
  mariadb) OMRS_DB_JDBC_PROTOCOL=${OMRS_DB_JDBC_PROTOCOL:-mariadb} ;;
  *) OMRS_DB_JDBC_PROTOCOL=${OMRS_DB_JDBC_PROTOCOL:-mysql} ;;
esac
OMRS_DB_ARGS=${OMRS_DB_ARGS:-?autoReconnect=true&sessionVariables=default_storage_engine=InnoDB&useUnicode=true&characterEncoding=UTF-8}
OMRS_DB_URL=${OMRS_DB_URL:-jdbc:$OMRS_DB_JDBC_PROTOCOL://$OMRS_DB_HOSTNAME:$OMRS_DB_PORT/$OMRS_DB_NAME$OMRS_DB_ARGS$OMRS_DB_EXTRA_ARGS}
OMRS_INSTALL_METHOD=${OMRS_INSTALL_METHOD:-auto}
OMRS_MODULE_WEB_ADMIN=${OMRS_MODULE_WEB_ADMIN:-true}
OMRS_JAVA_MEMORY_OPTS=${OMRS_JAVA_MEMORY_OPTS:--XX:NewSize=128m}
OMRS_SERVER_PROPERTIES_FILE="$OMRS_HOME/$OMRS_WEBAPP_NAME-server.properties"
OMRS_DISTRO_DIR="$OMRS_HOME/distribution"

echo "Initiating OpenMRS stand-in startup"
for dir in modules owa configuration frontend; do
  rm -fR "${OMRS_DATA_DIR:?}/$dir"
  mkdir -p "$OMRS_DATA_DIR/$dir"
done
[ -d "$OMRS_DISTRO_DIR/openmrs_modules" ] && cp -a "$OMRS_DISTRO_DIR/openmrs_modules/." "$OMRS_DATA_DIR/modules"
[ -d "$OMRS_DISTRO_DIR/openmrs_config" ] && cp -a "$OMRS_DISTRO_DIR/openmrs_config/." "$OMRS_DATA_DIR/configuration"

echo "Writing out $OMRS_SERVER_PROPERTIES_FILE"
escape() { printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/:/\\:/g' -e 's/=/\\=/g'; }
cat >"$OMRS_SERVER_PROPERTIES_FILE" <<PROPS
install_method=${OMRS_INSTALL_METHOD}
connection.url=$(escape "$OMRS_DB_URL")
connection.username=$(escape "$OMRS_DB_USERNAME")
connection.password=$(escape "$OMRS_DB_PASSWORD")
has_current_openmrs_database=true
create_database_user=false
module_web_admin=${OMRS_MODULE_WEB_ADMIN}
create_tables=${OMRS_CREATE_TABLES}
auto_update_database=${OMRS_AUTO_UPDATE_DATABASE}
admin_user_password=$(escape "$OMRS_ADMIN_USER_PASSWORD")
PROPS

# As upstream: every OMRS_EXTRA_<X> is a property (`_` -> `.`, `__` -> `_`, lowercased). Once
# installed, OpenMRS reads its runtime properties, not the installation ones: the extra
# properties are merged into them, taking precedence, at every start; at installation they go
# into the installation properties, prefixed `property.`.
OMRS_RUNTIME_PROPERTIES_FILE="$OMRS_DATA_DIR/$OMRS_WEBAPP_NAME-runtime.properties"
extra=""
for name in $(compgen -v OMRS_EXTRA_ || true); do
  key=$(printf '%s' "${name#OMRS_EXTRA_}" | tr '[:upper:]' '[:lower:]')
  key=${key//_/.}
  key=${key//../_}
  extra+="$key=${!name}"$'\n'
done
if [ -n "$extra" ]; then
  if [ -f "$OMRS_RUNTIME_PROPERTIES_FILE" ]; then
    echo "Found existing runtime properties file at $OMRS_RUNTIME_PROPERTIES_FILE. Merging with extra properties."
    printf '%s' "$extra" >"$OMRS_DATA_DIR/openmrs-extra.properties"
    awk -F= '!a[$1]++' "$OMRS_DATA_DIR/openmrs-extra.properties" "$OMRS_RUNTIME_PROPERTIES_FILE" >"$OMRS_DATA_DIR/openmrs-merged.properties"
    mv "$OMRS_DATA_DIR/openmrs-merged.properties" "$OMRS_RUNTIME_PROPERTIES_FILE"
    rm -f "$OMRS_DATA_DIR/openmrs-extra.properties"
  else
    printf '%s' "$extra" | sed -e '/^$/d' -e 's/^/property./' >>"$OMRS_SERVER_PROPERTIES_FILE"
  fi
fi

echo "Waiting for database to initialize..."
for _ in $(seq 1 3600); do
  if (exec 3<>"/dev/tcp/$OMRS_DB_HOSTNAME/$OMRS_DB_PORT") 2>/dev/null; then break; fi
  sleep 1
done

TOMCAT_DIR=/usr/local/tomcat
echo "Clearing out Tomcat directories"
rm -fR "${TOMCAT_DIR:?}"/webapps/* "${TOMCAT_DIR:?}"/work/* "${TOMCAT_DIR:?}"/temp/*
echo "Loading WAR into appropriate location"
cp -a "$OMRS_DISTRO_DIR/openmrs_core/." "$TOMCAT_DIR/webapps"
cat >"$TOMCAT_DIR/bin/setenv.sh" <<ENV
export CATALINA_OPTS="${OMRS_JAVA_MEMORY_OPTS} -DOPENMRS_INSTALLATION_SCRIPT=${OMRS_SERVER_PROPERTIES_FILE} -DOPENMRS_APPLICATION_DATA_DIRECTORY=${OMRS_DATA_DIR}/"
ENV

echo "Starting up the OpenMRS stand-in..."
exec "$TOMCAT_DIR/bin/catalina.sh" run
