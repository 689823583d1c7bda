package main

// The clinical REST calls of a typical session, as far as the load kit (hack/loadtest.sh)
// drives them: search patients by name, create a patient, start a visit, record an
// observation. Each one authenticates with HTTP Basic and reads or writes MariaDB, as OpenMRS'
// REST web services do; the JSON carries the fields the kit reads (`uuid`, `results`), not
// OpenMRS' whole representation.

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"
)

var clinicalSchema = []string{
	`CREATE TABLE IF NOT EXISTS patient (
		patient_id INT AUTO_INCREMENT PRIMARY KEY,
		uuid CHAR(36) NOT NULL UNIQUE,
		given_name VARCHAR(50) NOT NULL,
		family_name VARCHAR(50) NOT NULL,
		INDEX (family_name)
	) DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci`,
	`CREATE TABLE IF NOT EXISTS visit (
		visit_id INT AUTO_INCREMENT PRIMARY KEY,
		uuid CHAR(36) NOT NULL UNIQUE,
		patient_id INT NOT NULL,
		visit_type VARCHAR(50) NOT NULL,
		date_started DATETIME NOT NULL
	) DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci`,
	`CREATE TABLE IF NOT EXISTS obs (
		obs_id INT AUTO_INCREMENT PRIMARY KEY,
		uuid CHAR(36) NOT NULL UNIQUE,
		person_id INT NOT NULL,
		concept VARCHAR(100) NOT NULL,
		value_text VARCHAR(255) NOT NULL,
		obs_datetime DATETIME NOT NULL
	) DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci`,
}

func uuid() string {
	h := randomHex(16)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// user authenticates the request's HTTP Basic credentials; false has answered already.
func (s *server) user(ctx context.Context, w http.ResponseWriter, r *http.Request) bool {
	name, password, ok := r.BasicAuth()
	if !ok {
		http.Error(w, `{"error":"authentication required"}`, http.StatusUnauthorized)
		return false
	}
	var hash, salt string
	err := s.db.QueryRowContext(ctx, `SELECT password, salt FROM users WHERE username = ?`, name).Scan(&hash, &salt)
	switch {
	case err == nil && hashPassword(password, salt) == hash:
		return true
	case err != nil && !errors.Is(err, sql.ErrNoRows):
		http.Error(w, `{"error":"database unavailable"}`, http.StatusServiceUnavailable)
	default:
		http.Error(w, `{"error":"invalid credentials"}`, http.StatusUnauthorized)
	}
	return false
}

func reply(w http.ResponseWriter, status int, body any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

func unavailable(w http.ResponseWriter) {
	http.Error(w, `{"error":"database unavailable"}`, http.StatusServiceUnavailable)
}

func (s *server) clinical(mux *http.ServeMux) {
	const base = "/openmrs/ws/rest/v1/"
	with := func(handler func(ctx context.Context, w http.ResponseWriter, r *http.Request)) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
			defer cancel()
			if s.user(ctx, w, r) {
				handler(ctx, w, r)
			}
		}
	}
	mux.HandleFunc("GET "+base+"patient", with(func(ctx context.Context, w http.ResponseWriter, r *http.Request) {
		q := strings.TrimSpace(r.URL.Query().Get("q"))
		if q == "" {
			reply(w, http.StatusBadRequest, map[string]string{"error": "q is required"})
			return
		}
		rows, err := s.db.QueryContext(ctx,
			`SELECT uuid, given_name, family_name FROM patient WHERE family_name LIKE CONCAT(?, '%') ORDER BY patient_id LIMIT 50`, q)
		if err != nil {
			unavailable(w)
			return
		}
		defer rows.Close()
		results := []map[string]string{}
		for rows.Next() {
			var id, given, family string
			if rows.Scan(&id, &given, &family) == nil {
				results = append(results, map[string]string{"uuid": id, "display": given + " " + family})
			}
		}
		reply(w, http.StatusOK, map[string]any{"results": results})
	}))
	mux.HandleFunc("POST "+base+"patient", with(func(ctx context.Context, w http.ResponseWriter, r *http.Request) {
		var body struct {
			Person struct {
				Names []struct {
					GivenName  string `json:"givenName"`
					FamilyName string `json:"familyName"`
				} `json:"names"`
			} `json:"person"`
		}
		if json.NewDecoder(r.Body).Decode(&body) != nil || len(body.Person.Names) == 0 ||
			body.Person.Names[0].FamilyName == "" {
			reply(w, http.StatusBadRequest, map[string]string{"error": "person.names[0].familyName is required"})
			return
		}
		name, id := body.Person.Names[0], uuid()
		if _, err := s.db.ExecContext(ctx, `INSERT INTO patient (uuid, given_name, family_name) VALUES (?, ?, ?)`,
			id, name.GivenName, name.FamilyName); err != nil {
			unavailable(w)
			return
		}
		reply(w, http.StatusCreated, map[string]string{"uuid": id, "display": name.GivenName + " " + name.FamilyName})
	}))
	// A visit or an observation of an existing patient.
	record := func(insert string, fields func(body map[string]any) (patient string, values []any, ok bool)) http.HandlerFunc {
		return with(func(ctx context.Context, w http.ResponseWriter, r *http.Request) {
			var body map[string]any
			if json.NewDecoder(r.Body).Decode(&body) != nil {
				reply(w, http.StatusBadRequest, map[string]string{"error": "a JSON object is required"})
				return
			}
			patient, values, ok := fields(body)
			if !ok {
				reply(w, http.StatusBadRequest, map[string]string{"error": "missing fields"})
				return
			}
			var patientID int
			err := s.db.QueryRowContext(ctx, `SELECT patient_id FROM patient WHERE uuid = ?`, patient).Scan(&patientID)
			if errors.Is(err, sql.ErrNoRows) {
				reply(w, http.StatusBadRequest, map[string]string{"error": "no such patient"})
				return
			} else if err != nil {
				unavailable(w)
				return
			}
			id := uuid()
			if _, err := s.db.ExecContext(ctx, insert, append([]any{id, patientID}, values...)...); err != nil {
				unavailable(w)
				return
			}
			reply(w, http.StatusCreated, map[string]string{"uuid": id})
		})
	}
	text := func(body map[string]any, key string) string {
		value, _ := body[key].(string)
		return value
	}
	mux.HandleFunc("POST "+base+"visit", record(
		`INSERT INTO visit (uuid, patient_id, visit_type, date_started) VALUES (?, ?, ?, NOW())`,
		func(body map[string]any) (string, []any, bool) {
			return text(body, "patient"), []any{text(body, "visitType")}, text(body, "patient") != "" && text(body, "visitType") != ""
		}))
	mux.HandleFunc("POST "+base+"obs", record(
		`INSERT INTO obs (uuid, person_id, concept, value_text, obs_datetime) VALUES (?, ?, ?, ?, NOW())`,
		func(body map[string]any) (string, []any, bool) {
			value, _ := json.Marshal(body["value"])
			return text(body, "person"), []any{text(body, "concept"), string(value)}, text(body, "person") != "" && text(body, "concept") != ""
		}))
}
