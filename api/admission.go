package api

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tributary-iot/tributary/protocols/admission"
)

// Admission is admission control as the HTTP API uses it; *admission.Controller satisfies it.
type Admission interface {
	// AllowAPI admits one request by key; false comes with how long to wait.
	AllowAPI(key string) (retryAfter time.Duration, ok bool)
	// Auth is the failed-authentication throttle.
	Auth() *admission.Guard
}

// Limit wraps the API handler with admission control for /api/ requests (the dashboard,
// /healthz, /readyz and /metrics are left alone):
//
//   - a source address that presented wrong credentials too often gets 429 with Retry-After,
//     its credentials unchecked, until its block ends;
//   - each API key (or, for requests without one, each source address) is held to the API
//     rate: past it, 429 with Retry-After.
//
// Every 401 answered to a request that carried a credential counts as a failed
// authentication of its source address.
func Limit(h http.Handler, a Admission) http.Handler {
	if a == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/api/") {
			h.ServeHTTP(w, r)
			return
		}
		if retry, blocked := a.Auth().Blocked("http", r.RemoteAddr); blocked {
			tooMany(w, retry, fmt.Sprintf("%v from %s", admission.ErrAuthThrottled, admission.Source(r.RemoteAddr)))
			return
		}
		cred := credential(r)
		key := "addr " + admission.Source(r.RemoteAddr)
		if cred != "" {
			key = admission.APIKeyBucket(cred)
		}
		if retry, ok := a.AllowAPI(key); !ok {
			admission.MetricRefused.WithLabelValues("http", admission.ReasonAPIRate).Inc()
			tooMany(w, retry, "API request rate exceeded for this key")
			return
		}
		sw := &statusWriter{ResponseWriter: w}
		h.ServeHTTP(sw, r)
		if cred == "" {
			return
		}
		if sw.status == http.StatusUnauthorized {
			a.Auth().Failed("http", r.RemoteAddr)
		} else {
			a.Auth().Succeeded(r.RemoteAddr)
		}
	})
}

// credential is what the request authenticates with, if anything.
func credential(r *http.Request) string {
	if c, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		return c
	}
	return r.URL.Query().Get("access_token")
}

func tooMany(w http.ResponseWriter, retry time.Duration, msg string) {
	secs := admission.RetryAfterSeconds(retry)
	w.Header().Set("Retry-After", strconv.FormatUint(uint64(secs), 10))
	writeError(w, http.StatusTooManyRequests, fmt.Sprintf("%s; retry in %ds", msg, secs))
}

// statusWriter records the status of the answer. It keeps the writer's Flush (server-sent
// events) and Hijack (WebSocket) working.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

func (s *statusWriter) Flush() { _ = http.NewResponseController(s.ResponseWriter).Flush() }

func (s *statusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return http.NewResponseController(s.ResponseWriter).Hijack()
}

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }
