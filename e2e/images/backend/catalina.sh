#!/bin/sh
# Tomcat's catalina.sh in the OpenMRS backend test image: `run` starts the stand-in server that
# takes OpenMRS' place (clinic-operator's tests; this image holds no Tomcat and no OpenMRS).
set -e
[ "${1:-}" = run ] || { echo "catalina.sh (stand-in): only 'run' is supported" >&2; exit 2; }
. "$(dirname "$0")/setenv.sh"
exec "$(dirname "$0")/openmrs-standin"
