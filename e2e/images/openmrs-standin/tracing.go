package main

// What the OpenTelemetry Java agent does for OpenMRS, as far as the tests look: when the
// container's JAVA_TOOL_OPTIONS names a -javaagent jar that exists (an init container copied it
// in) and OTEL_TRACES_EXPORTER is otlp, every request becomes a SERVER span that continues the
// request's W3C trace context and is posted to OTEL_EXPORTER_OTLP_ENDPOINT/v1/traces with the
// resource of OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES. The real agent sends protobuf
// (http/protobuf); the stand-in sends OTLP's JSON encoding, which OTLP/HTTP receivers accept too.

import (
	"bytes"
	"encoding/json"
	"log"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

type tracer struct {
	endpoint string
	resource []map[string]any
	spans    chan map[string]any
	client   *http.Client
}

// newTracer returns nil when no agent is loaded: no span is made, as without the agent.
func newTracer() *tracer {
	jar := ""
	for _, option := range strings.Fields(os.Getenv("JAVA_TOOL_OPTIONS")) {
		if path, ok := strings.CutPrefix(option, "-javaagent:"); ok {
			jar = path
		}
	}
	if jar == "" || os.Getenv("OTEL_TRACES_EXPORTER") != "otlp" {
		return nil
	}
	if info, err := os.Stat(jar); err != nil || info.Size() == 0 {
		log.Printf("OpenTelemetry agent %s not loadable: %v", jar, err)
		return nil
	}
	endpoint := strings.TrimSuffix(envOr("OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4318"), "/")
	resource := []map[string]any{attribute("service.name", envOr("OTEL_SERVICE_NAME", "unknown_service"))}
	for _, pair := range strings.Split(os.Getenv("OTEL_RESOURCE_ATTRIBUTES"), ",") {
		if key, value, ok := strings.Cut(pair, "="); ok && key != "" {
			resource = append(resource, attribute(strings.TrimSpace(key), strings.TrimSpace(value)))
		}
	}
	t := &tracer{
		endpoint: endpoint + "/v1/traces",
		resource: resource,
		spans:    make(chan map[string]any, 256),
		client:   &http.Client{Timeout: 3 * time.Second},
	}
	go t.export()
	log.Printf("OpenTelemetry agent stand-in (%s): exporting spans to %s", jar, t.endpoint)
	return t
}

func attribute(key string, value any) map[string]any {
	switch v := value.(type) {
	case int:
		return map[string]any{"key": key, "value": map[string]any{"intValue": strconv.Itoa(v)}}
	default:
		return map[string]any{"key": key, "value": map[string]any{"stringValue": v}}
	}
}

// traceContext is the trace id and parent span id of a valid W3C traceparent, or a new trace.
func traceContext(header string) (traceID, parent string) {
	parts := strings.Split(header, "-")
	if len(parts) == 4 && parts[0] == "00" && isHex(parts[1], 32) && isHex(parts[2], 16) &&
		parts[1] != strings.Repeat("0", 32) && parts[2] != strings.Repeat("0", 16) {
		return parts[1], parts[2]
	}
	return randomHex(16), ""
}

func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for _, c := range s {
		if !strings.ContainsRune("0123456789abcdef", c) {
			return false
		}
	}
	return true
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(status int) {
	r.status = status
	r.ResponseWriter.WriteHeader(status)
}

// wrap traces each request handled by next, when an agent is loaded.
func (t *tracer) wrap(next http.Handler) http.Handler {
	if t == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		traceID, parent := traceContext(r.Header.Get("traceparent"))
		start := time.Now()
		recorder := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(recorder, r)
		span := map[string]any{
			"traceId":           traceID,
			"spanId":            randomHex(8),
			"name":              r.Method + " " + r.URL.Path,
			"kind":              2, // SERVER
			"startTimeUnixNano": strconv.FormatInt(start.UnixNano(), 10),
			"endTimeUnixNano":   strconv.FormatInt(time.Now().UnixNano(), 10),
			"attributes": []map[string]any{
				attribute("http.request.method", r.Method),
				attribute("url.path", r.URL.Path),
				attribute("http.response.status_code", recorder.status),
			},
		}
		if parent != "" {
			span["parentSpanId"] = parent
		}
		select {
		case t.spans <- span:
		default: // the exporter is behind: drop, as the agent's bounded queue does
		}
	})
}

// export posts spans one batch per second at most, like the agent's batch processor.
func (t *tracer) export() {
	for first := range t.spans {
		batch := []map[string]any{first}
		deadline := time.After(time.Second)
	collect:
		for len(batch) < 64 {
			select {
			case span := <-t.spans:
				batch = append(batch, span)
			case <-deadline:
				break collect
			}
		}
		body, err := json.Marshal(map[string]any{"resourceSpans": []map[string]any{{
			"resource":   map[string]any{"attributes": t.resource},
			"scopeSpans": []map[string]any{{"scope": map[string]any{"name": "openmrs-standin"}, "spans": batch}},
		}}})
		if err != nil {
			continue
		}
		response, err := t.client.Post(t.endpoint, "application/json", bytes.NewReader(body))
		if err != nil {
			log.Printf("exporting %d spans: %v", len(batch), err)
			continue
		}
		_ = response.Body.Close()
	}
}
