package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync/atomic"

	"pgsse/db"
	"pgsse/listener"
	"pgsse/stream"
)

// readiness is what /readyz reports.
type readiness struct {
	migrated, draining atomic.Bool
	migrationFault     atomic.Pointer[db.Fault]
	listener           *listener.Listener
	streams            *stream.Handler
}

// fault is the first fault (not an outage) that keeps this replica from
// serving: the migrations', the log's, or the streams' database reads'.
func (r *readiness) fault() *db.Fault {
	for _, f := range []*db.Fault{r.migrationFault.Load(), r.listener.Failure(), r.streams.Failure()} {
		if f != nil && !f.Outage {
			return f
		}
	}
	return nil
}

func (r *readiness) waitingFor() []string {
	var waiting []string
	if !r.migrated.Load() {
		waiting = append(waiting, "migrations")
	}
	if r.listener.Failure() != nil {
		waiting = append(waiting, "log")
	}
	if r.streams.Failure() != nil {
		waiting = append(waiting, "streams")
	}
	if !r.listener.Connected() {
		waiting = append(waiting, "listener")
	} else if !r.listener.Receiving() {
		waiting = append(waiting, "listener_notifications")
	}
	if r.draining.Load() {
		waiting = append(waiting, "draining")
	}
	return waiting
}

func (r *readiness) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"status":"ok","version":%q}`+"\n", version)
}

func (r *readiness) readyz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	if waiting := r.waitingFor(); len(waiting) > 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		answer := map[string]any{"status": "not ready", "waiting_for": waiting}
		if f := r.fault(); f != nil {
			answer["fault"] = map[string]string{"sqlstate": f.SQLState, "hint": f.Hint}
		}
		body, _ := json.Marshal(answer)
		fmt.Fprintf(w, "%s\n", body)
		return
	}
	fmt.Fprintln(w, `{"status":"ready"}`)
}
