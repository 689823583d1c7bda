// openmrs-standin stands in for the OpenMRS backend (a Tomcat web application) in the test
// images of clinic-operator. The real backend cannot be built on the test machine: its war and
// modules are in no registry that machine reaches. This program is NOT OpenMRS. It honours the
// parts of the backend's contract that the operator and the rest of the platform rely on:
//
//   - it reads the installation properties that the image's start script writes
//     (/openmrs/openmrs-server.properties: connection.url, connection.username,
//     connection.password, admin_user_password, ...), as OpenMRS does at first start;
//   - it connects to MariaDB with those credentials (and, for a jdbc:mariadb URL, with the TLS
//     and certificate checks MariaDB Connector/J's sslMode and serverSslCert ask for), creates its tables on first start (as
//     OpenMRS' installer and Liquibase do) and writes the runtime properties file into the data
//     directory, as OpenMRS does after an install; once that file exists, it connects with its
//     connection.* properties (which the start script merges OMRS_EXTRA_ variables into), as
//     OpenMRS does;
//   - it logs "Failed login attempt (login=...)" for a refused login, as OpenMRS does;
//   - it answers the trace id of the request's W3C `traceparent` in a response header, and, when
//     an OpenTelemetry Java agent jar is at JAVA_TOOL_OPTIONS' -javaagent path, exports a span
//     per request continuing that trace, as the agent does (tracing.go);
//   - it serves on :8080 under the context path /openmrs: /openmrs/health/started,
//     /openmrs/health/alive and /openmrs/ws/rest/v1/session (which needs the database, and
//     authenticates the admin user with HTTP Basic), the paths the probes and the gateway use,
//     and the clinical calls the load kit drives (clinical.go: patient search and creation,
//     visit, observation), authenticated and on MariaDB.
//
// Every response carries the header X-OpenMRS-Stand-In so that nobody mistakes it for OpenMRS.
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	neturl "net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-sql-driver/mysql"
)

const standInHeader = "X-OpenMRS-Stand-In"

type properties map[string]string

func readProperties(path string) (properties, error) {
	file, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer file.Close()
	props := properties{}
	scanner := bufio.NewScanner(file)
	for scanner.Scan() {
		line := strings.TrimSpace(scanner.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, value, found := strings.Cut(line, "=")
		if !found {
			continue
		}
		// Java properties escape ':' and '=' in values written by the start script.
		value = strings.NewReplacer(`\:`, ":", `\=`, "=", `\\`, `\`).Replace(strings.TrimSpace(value))
		props[strings.TrimSpace(key)] = value
	}
	return props, scanner.Err()
}

// dsnFromJDBC turns jdbc:mysql://host:port/db?... or jdbc:mariadb://... into a go-sql-driver
// DSN. With MariaDB Connector/J's TLS arguments (jdbc:mariadb only, as that driver reads them),
// it connects as that driver does: sslMode=disable (its default) in plaintext, trust with TLS
// and no check, verify-ca against the serverSslCert PEM file, verify-full against it and the
// host's name.
func dsnFromJDBC(url, user, password string) (string, error) {
	rest, mariadb := strings.CutPrefix(url, "jdbc:mariadb://")
	if !mariadb {
		var ok bool
		if rest, ok = strings.CutPrefix(url, "jdbc:mysql://"); !ok {
			return "", fmt.Errorf("unsupported connection.url %q (the stand-in speaks MySQL/MariaDB only)", url)
		}
	}
	hostPort, dbAndArgs, _ := strings.Cut(rest, "/")
	db, rawArgs, _ := strings.Cut(dbAndArgs, "?")
	cfg := mysql.NewConfig()
	cfg.User = user
	cfg.Passwd = password
	cfg.Net = "tcp"
	cfg.Addr = hostPort
	cfg.DBName = db
	cfg.Timeout = 5 * time.Second
	cfg.ReadTimeout = 10 * time.Second
	cfg.ParseTime = true
	if mariadb {
		args, err := neturl.ParseQuery(rawArgs)
		if err != nil {
			return "", fmt.Errorf("connection.url arguments: %v", err)
		}
		tlsConfig, err := mariadbTLS(args, hostPort)
		if err != nil {
			return "", err
		}
		if tlsConfig != nil {
			if err := mysql.RegisterTLSConfig("connector-j", tlsConfig); err != nil {
				return "", err
			}
			cfg.TLSConfig = "connector-j"
		}
	}
	return cfg.FormatDSN(), nil
}

// mariadbTLS is the TLS of MariaDB Connector/J's sslMode and serverSslCert (a PEM file path).
func mariadbTLS(args neturl.Values, hostPort string) (*tls.Config, error) {
	mode := args.Get("sslMode")
	if mode == "" || mode == "disable" {
		return nil, nil
	}
	if mode == "trust" {
		return &tls.Config{InsecureSkipVerify: true}, nil
	}
	if mode != "verify-ca" && mode != "verify-full" {
		return nil, fmt.Errorf("sslMode %q is not one of disable, trust, verify-ca, verify-full", mode)
	}
	roots := x509.NewCertPool()
	if path := args.Get("serverSslCert"); path != "" {
		pemData, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("serverSslCert: %v", err)
		}
		if !roots.AppendCertsFromPEM(pemData) {
			return nil, fmt.Errorf("serverSslCert %s holds no PEM certificate", path)
		}
	} else if system, err := x509.SystemCertPool(); err == nil {
		roots = system
	}
	host, _, err := net.SplitHostPort(hostPort)
	if err != nil {
		host = hostPort
	}
	if mode == "verify-full" {
		return &tls.Config{RootCAs: roots, ServerName: host, MinVersion: tls.VersionTLS12}, nil
	}
	// verify-ca: the chain, not the name.
	return &tls.Config{
		InsecureSkipVerify: true,
		MinVersion:         tls.VersionTLS12,
		VerifyConnection: func(state tls.ConnectionState) error {
			if len(state.PeerCertificates) == 0 {
				return errors.New("the server sent no certificate")
			}
			intermediates := x509.NewCertPool()
			for _, c := range state.PeerCertificates[1:] {
				intermediates.AddCert(c)
			}
			_, err := state.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: intermediates})
			return err
		},
	}, nil
}

func hashPassword(password, salt string) string {
	sum := sha512.Sum512([]byte(password + salt))
	return hex.EncodeToString(sum[:])
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		log.Fatalf("no randomness: %v", err)
	}
	return hex.EncodeToString(b)
}

// install creates the schema the stand-in uses, once, and the admin user, as OpenMRS' installer
// does on an empty database. An existing schema is left as it is.
func install(db *sql.DB, adminPassword string) error {
	statements := []string{
		`CREATE TABLE IF NOT EXISTS global_property (
			property VARCHAR(255) PRIMARY KEY,
			property_value TEXT
		) DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci`,
		`CREATE TABLE IF NOT EXISTS users (
			user_id INT AUTO_INCREMENT PRIMARY KEY,
			username VARCHAR(50) NOT NULL UNIQUE,
			password VARCHAR(128) NOT NULL,
			salt VARCHAR(128) NOT NULL
		) DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci`,
	}
	statements = append(statements, clinicalSchema...)
	for _, s := range statements {
		if _, err := db.Exec(s); err != nil {
			return err
		}
	}
	var count int
	if err := db.QueryRow(`SELECT COUNT(*) FROM users WHERE username = 'admin'`).Scan(&count); err != nil {
		return err
	}
	if count == 0 {
		salt := randomHex(32)
		if _, err := db.Exec(`INSERT INTO users (username, password, salt) VALUES ('admin', ?, ?)`,
			hashPassword(adminPassword, salt), salt); err != nil {
			return err
		}
		log.Printf("installed: created the schema and the admin user")
	}
	_, err := db.Exec(`INSERT INTO global_property (property, property_value) VALUES ('stand_in.started', NOW())
		ON DUPLICATE KEY UPDATE property_value = NOW()`)
	return err
}

func writeRuntimeProperties(path string, props properties) error {
	var b strings.Builder
	b.WriteString("# Written by the OpenMRS stand-in of clinic-operator's tests (not OpenMRS)\n")
	for _, key := range []string{"connection.url", "connection.username", "connection.password"} {
		fmt.Fprintf(&b, "%s=%s\n", key, props[key])
	}
	b.WriteString("module.allow_web_admin=" + props["module_web_admin"] + "\n")
	return os.WriteFile(path, []byte(b.String()), 0o640)
}

type server struct {
	db      *sql.DB
	started atomic.Bool
}

func (s *server) session(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	defer cancel()
	if err := s.db.PingContext(ctx); err != nil {
		http.Error(w, `{"error":"database unavailable"}`, http.StatusServiceUnavailable)
		return
	}
	authenticated := false
	if user, password, ok := r.BasicAuth(); ok {
		var hash, salt string
		err := s.db.QueryRowContext(ctx, `SELECT password, salt FROM users WHERE username = ?`, user).Scan(&hash, &salt)
		if err == nil && hashPassword(password, salt) == hash {
			authenticated = true
		} else if err != nil && !errors.Is(err, sql.ErrNoRows) {
			http.Error(w, `{"error":"database unavailable"}`, http.StatusServiceUnavailable)
			return
		} else {
			// OpenMRS' ContextDAO logs this line, at INFO, for every refused login; the
			// clinic's Loki alert and dashboard count it.
			log.Printf("INFO - Failed login attempt (login=%s) - Invalid username and/or password: %s", user, user)
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"sessionId":     randomHex(16),
		"authenticated": authenticated,
		"standIn":       "clinic-operator test stand-in, not OpenMRS",
	})
}

func main() {
	log.SetFlags(log.LstdFlags | log.LUTC)
	log.Printf("OpenMRS stand-in of clinic-operator's tests: this is not OpenMRS")
	home := envOr("OMRS_HOME", "/openmrs")
	props, err := readProperties(filepath.Join(home, envOr("OMRS_WEBAPP_NAME", "openmrs")+"-server.properties"))
	if err != nil {
		log.Fatalf("reading the installation properties: %v", err)
	}
	// Installed once, OpenMRS connects with its runtime properties, not the installation ones.
	runtimePath := filepath.Join(home, "data", envOr("OMRS_WEBAPP_NAME", "openmrs")+"-runtime.properties")
	connection := props
	runtime, err := readProperties(runtimePath)
	installed := err == nil
	if installed {
		connection = runtime
		log.Printf("connecting with the runtime properties of the installation")
	}
	dsn, err := dsnFromJDBC(connection["connection.url"], connection["connection.username"], connection["connection.password"])
	if err != nil {
		log.Fatal(err)
	}
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		log.Fatal(err)
	}
	db.SetMaxOpenConns(5)
	db.SetConnMaxLifetime(time.Minute)
	s := &server{db: db}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /openmrs/health/alive", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "alive")
	})
	mux.HandleFunc("GET /openmrs/health/started", func(w http.ResponseWriter, r *http.Request) {
		if !s.started.Load() {
			http.Error(w, "starting", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "started")
	})
	mux.HandleFunc("GET /openmrs/ws/rest/v1/session", s.session)
	s.clinical(mux)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "not found (OpenMRS stand-in)", http.StatusNotFound)
	})
	traced := newTracer().wrap(mux)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(standInHeader, "clinic-operator-e2e")
		// The trace id of the W3C trace context the request brought, which OpenMRS' Java agent
		// continues: a test joins it to the gateway's log and to the exported span.
		if parts := strings.Split(r.Header.Get("traceparent"), "-"); len(parts) == 4 {
			w.Header().Set(standInHeader+"-Trace-Id", parts[1])
		}
		traced.ServeHTTP(w, r)
	})
	httpServer := &http.Server{Addr: ":8080", Handler: handler, ReadHeaderTimeout: 10 * time.Second}

	go func() {
		// The database may still be starting: retry as OpenMRS' start-up does.
		for {
			err := install(db, props["admin_user_password"])
			if err == nil {
				break
			}
			log.Printf("database not ready: %v", err)
			time.Sleep(2 * time.Second)
		}
		if !installed {
			if err := writeRuntimeProperties(runtimePath, props); err != nil {
				log.Fatalf("writing the runtime properties: %v", err)
			}
		}
		s.started.Store(true)
		log.Printf("started")
	}()

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-stop
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = httpServer.Shutdown(ctx)
	}()
	if err := httpServer.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Fatal(err)
	}
}

func envOr(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}
