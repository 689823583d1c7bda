#!/bin/sh
# Start script of the test image standing in for
# docker.io/openmrs/openmrs-reference-application-3-frontend (clinic-operator's tests): the same
# contract as the upstream image's startup.sh — it rewrites index.html in place with SPA_PATH,
# API_URL, SPA_CONFIG_URLS (space- or comma-separated), SPA_DEFAULT_LOCALE (default en_GB) and
# IMPORTMAP_URL, then runs nginx in the foreground. The site it serves is a static page, not the
# OpenMRS 3 application.
set -e
html=/usr/share/nginx/html
if [ -z "${SPA_CONFIG_URLS:-}" ]; then
  sed -i -e 's/"$SPA_CONFIG_URLS"//' "$html/index.html"
else
  urls=
  for url in $(echo "$SPA_CONFIG_URLS" | tr ',' ' '); do
    urls="${urls:+$urls,}\"$url\""
  done
  export SPA_CONFIG_URLS="$urls"
  sed -i -e 's/"$SPA_CONFIG_URLS"/$SPA_CONFIG_URLS/' "$html/index.html"
fi
export SPA_DEFAULT_LOCALE="${SPA_DEFAULT_LOCALE:-en_GB}"
export IMPORTMAP_URL="${IMPORTMAP_URL:-${SPA_PATH:-}/importmap.json}"
envsubst '${IMPORTMAP_URL} ${SPA_PATH} ${API_URL} ${SPA_CONFIG_URLS} ${SPA_DEFAULT_LOCALE}' \
  <"$html/index.html" | sponge "$html/index.html"
exec nginx -g 'daemon off;'
