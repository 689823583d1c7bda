#!/usr/bin/env bash
# The load kit: drives a clinic's gateway with the actions of a typical OpenMRS session, through
# vegeta (github.com/tsenart/vegeta, MIT; `make tools` builds it), and reports the latency
# percentiles and the errors against the brief's objectives (3 s per action, 99.9 %).
#
#   OPENMRS_PASSWORD=<admin password> hack/loadtest.sh <gateway URL> [requests/s] [duration]
#
# The URL is where users reach the clinic's gateway (https://emr.clinic.example.fr, or
# http://localhost:8080 through `kubectl -n <ns> port-forward svc/<name>-gateway 8080:80`).
# Each round of five requests: the login page, the session (authenticated), a patient search,
# a new visit and an observation for a patient the kit creates first (so it writes to the
# clinic's database: run it against a test clinic, not one with real patients). Defaults: 10
# requests/s for 30s. VEGETA names the binary (default: the one `make tools` built), OUT a
# directory to keep the results in (default: a temporary one, removed).
#
# Prints one line: requests, rate, success, p50/p95/p99/max latency, the longest stretch of
# failures of one action, and whether the objectives were met. Exits 0 whatever the verdict; 2 when it
# cannot run.
set -euo pipefail
url=${1:?usage: OPENMRS_PASSWORD=... hack/loadtest.sh <gateway URL> [requests/s] [duration]}
url=${url%/}
rate=${2:-10}
duration=${3:-30s}
user=${OPENMRS_USER:-admin}
password=${OPENMRS_PASSWORD:?OPENMRS_PASSWORD is the password of the admin account}
objective=${OBJECTIVE_SECONDS:-3}
here=$(cd "$(dirname "$0")/.." && pwd)
vegeta=${VEGETA:-$("$here/e2e/cluster/tools/build.sh")/vegeta}
for tool in curl jq awk "$vegeta"; do
  command -v "$tool" >/dev/null || { echo "loadtest: $tool is missing" >&2; exit 2; }
done
if [ -n "${OUT:-}" ]; then
  dir=$OUT; mkdir -p "$dir"
else
  dir=$(mktemp -d); trap 'rm -rf "$dir"' EXIT
fi

auth=$(printf '%s:%s' "$user" "$password" | base64 -w0)
family="Loadtest$RANDOM"
patient=$(curl -sS -f -m 10 -u "$user:$password" -H 'Content-Type: application/json' \
  -d "{\"person\":{\"names\":[{\"givenName\":\"Kit\",\"familyName\":\"$family\"}]}}" \
  "$url/openmrs/ws/rest/v1/patient" | jq -r '.uuid // empty') || true
if [ -z "$patient" ]; then
  echo "loadtest: could not create the test patient at $url (is the clinic up, the password right?)" >&2
  exit 2
fi
printf '{"patient":"%s","visitType":"Facility Visit"}\n' "$patient" >"$dir/visit.json"
printf '{"person":"%s","concept":"Weight (kg)","value":72}\n' "$patient" >"$dir/obs.json"
cat >"$dir/targets" <<EOF
GET $url/openmrs/spa/login

GET $url/openmrs/ws/rest/v1/session
Authorization: Basic $auth

GET $url/openmrs/ws/rest/v1/patient?q=$family&v=default
Authorization: Basic $auth

POST $url/openmrs/ws/rest/v1/visit
Authorization: Basic $auth
Content-Type: application/json
@$dir/visit.json

POST $url/openmrs/ws/rest/v1/obs
Authorization: Basic $auth
Content-Type: application/json
@$dir/obs.json
EOF

"$vegeta" attack -targets="$dir/targets" -rate="$rate/s" -duration="$duration" -timeout=10s \
  -max-workers=64 >"$dir/results.bin"
"$vegeta" report -type=json "$dir/results.bin" >"$dir/report.json"
# The longest stretch of failures of one action (method and URL): from its first failed request
# to its next answered one (or its last request), in seconds; what a user repeating that
# action would have waited.
longest=$("$vegeta" encode --to json "$dir/results.bin" | jq -rs '
  def seconds: (.timestamp | sub("(\\.[0-9]+)?(Z|[+-][0-9:]+)$"; "Z") | fromdateiso8601)
    + (.timestamp | (capture("\\.(?<f>[0-9]+)") | .f) // "0" | "0." + . | tonumber);
  [group_by(.method + " " + .url)[]
   | sort_by(seconds)
   | reduce .[] as $r ({start: null, longest: 0, last: 0};
       ($r | seconds) as $t
       | if ($r.code >= 200 and $r.code < 400)
         then (if .start then .longest = ([.longest, $t - .start] | max) | .start = null else . end)
         else (if .start then . else .start = $t end) end
       | .last = $t)
   | if .start then [.longest, .last - .start] | max else .longest end]
  | (max // 0) * 10 | round / 10')
jq -r --arg objective "$objective" --arg longest "$longest" '
  def s: . / 1e9 | . * 1000 | round / 1000;
  (.latencies."95th" / 1e9 <= ($objective | tonumber)) as $fast
  | (.success >= 0.999) as $available
  | "requests=\(.requests) rate=\(.rate * 10 | round / 10)/s success=\(.success * 10000 | round / 100)% "
    + "p50=\(.latencies."50th" | s)s p95=\(.latencies."95th" | s)s p99=\(.latencies."99th" | s)s "
    + "max=\(.latencies.max | s)s longest_failure=\($longest)s "
    + "objectives=\(if $fast and $available then "met" else "missed" end) "
    + "(p95 <= \($objective)s: \($fast), success >= 99.9%: \($available))"
' "$dir/report.json"
