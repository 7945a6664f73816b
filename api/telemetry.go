package api

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/tributary-iot/tributary/tsdb"
)

// TelemetryQuerier answers time-series queries: tsdb's InfluxDB or stream-backed querier.
type TelemetryQuerier interface {
	Query(ctx context.Context, q tsdb.Query) ([]tsdb.Point, error)
	Latest(ctx context.Context, device string) (map[string]tsdb.Point, error)
}

type telemetryAnswer struct {
	Device string       `json:"device"`
	Field  string       `json:"field"`
	From   time.Time    `json:"from"`
	To     time.Time    `json:"to"`
	Every  string       `json:"every,omitempty"`
	Agg    string       `json:"agg,omitempty"`
	Points []tsdb.Point `json:"points"`
}

type latestAnswer struct {
	Device string                `json:"device"`
	Fields map[string]tsdb.Point `json:"fields"`
}

// TelemetryRoutes serves GET /api/v1/devices/{id}/telemetry and .../telemetry/latest.
func TelemetryRoutes(q TelemetryQuerier, devs DeviceStore, log *slog.Logger) func(*Router) {
	return func(r *Router) {
		known := func(w http.ResponseWriter, id string) bool {
			if _, err := devs.Get(id); err != nil {
				r.s.deviceError(w, err)
				return false
			}
			return true
		}
		r.Handle("GET /api/v1/devices/{id}/telemetry", func(w http.ResponseWriter, req *http.Request) {
			id := req.PathValue("id")
			if !known(w, id) {
				return
			}
			query, err := tsdb.ParseQuery(id, req.URL.Query(), time.Now())
			if err != nil {
				telemetryError(w, log, err)
				return
			}
			points, err := q.Query(req.Context(), query)
			if err != nil {
				telemetryError(w, log, err)
				return
			}
			ans := telemetryAnswer{Device: id, Field: query.Field, From: query.From, To: query.To, Agg: query.Agg, Points: points}
			if query.Every > 0 {
				ans.Every = query.Every.String()
			}
			if ans.Points == nil {
				ans.Points = []tsdb.Point{}
			}
			writeJSON(w, http.StatusOK, ans)
		})
		r.Handle("GET /api/v1/devices/{id}/telemetry/latest", func(w http.ResponseWriter, req *http.Request) {
			id := req.PathValue("id")
			if !known(w, id) {
				return
			}
			fields, err := q.Latest(req.Context(), id)
			if err != nil {
				telemetryError(w, log, err)
				return
			}
			if fields == nil {
				fields = map[string]tsdb.Point{}
			}
			writeJSON(w, http.StatusOK, latestAnswer{Device: id, Fields: fields})
		})
	}
}

func telemetryError(w http.ResponseWriter, log *slog.Logger, err error) {
	switch {
	case errors.Is(err, tsdb.ErrBadQuery), errors.Is(err, tsdb.ErrFieldType), errors.Is(err, tsdb.ErrTooManyPoints):
		writeError(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, tsdb.ErrUnavailable):
		writeError(w, http.StatusServiceUnavailable, err.Error())
	default:
		log.Error("telemetry query", "err", err)
		writeError(w, http.StatusInternalServerError, err.Error())
	}
}
