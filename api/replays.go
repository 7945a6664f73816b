package api

import (
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/tributary-iot/tributary/simulator"
	"github.com/tributary-iot/tributary/simulator/replay"
	"github.com/tributary-iot/tributary/simulator/scenario"
)

// Replays runs replay jobs. *replay.Manager satisfies it.
type Replays interface {
	Start(ctx context.Context, req replay.Request) (replay.Job, error)
	Get(ctx context.Context, id string) (replay.Job, error)
	List(ctx context.Context) ([]replay.Job, error)
	Pause(ctx context.Context, id string) (replay.Job, error)
	Resume(ctx context.Context, id string) (replay.Job, error)
	Cancel(ctx context.Context, id string) (replay.Job, error)
	// Delete removes a job (cancelling it first) and, unless keepOutput, its sandbox output.
	Delete(ctx context.Context, id string, keepOutput bool) error
}

// Scenarios keeps named recordings. *scenario.Store satisfies it.
type Scenarios interface {
	Create(ctx context.Context, name, description string, sel simulator.Selection) (scenario.Info, error)
	Import(ctx context.Context, name, description string, r io.Reader, replace bool) (scenario.Info, error)
	Export(ctx context.Context, name string, w io.Writer) error
	Get(ctx context.Context, name string) (scenario.Info, error)
	List(ctx context.Context) ([]scenario.Info, error)
	Delete(ctx context.Context, name string) error
}

// MaxScenarioImport caps the body of a scenario import (after gzip compression, if any).
const MaxScenarioImport = 1 << 30

// ReplayRoutes registers /api/v1/replays and /api/v1/scenarios; pass it in Deps.Extra.
func ReplayRoutes(rs Replays, sc Scenarios, log *slog.Logger) func(*Router) {
	h := &replayHandlers{rs: rs, sc: sc, log: log}
	return func(r *Router) {
		h.srv = r.s
		r.Handle("POST /api/v1/replays", h.start)
		r.Handle("GET /api/v1/replays", h.list)
		r.Handle("GET /api/v1/replays/{id}", h.owned(h.get))
		r.Handle("POST /api/v1/replays/{id}/pause", h.owned(h.control(rs.Pause)))
		r.Handle("POST /api/v1/replays/{id}/resume", h.owned(h.control(rs.Resume)))
		r.Handle("POST /api/v1/replays/{id}/cancel", h.owned(h.control(rs.Cancel)))
		r.Handle("DELETE /api/v1/replays/{id}", h.owned(h.delete))

		r.Handle("POST /api/v1/scenarios", h.createScenario)
		r.Handle("GET /api/v1/scenarios", h.listScenarios)
		r.Handle("GET /api/v1/scenarios/{name}", h.getScenario)
		r.Handle("DELETE /api/v1/scenarios/{name}", h.deleteScenario)
		r.Handle("GET /api/v1/scenarios/{name}/export", h.exportScenario)
		r.Handle("POST /api/v1/scenarios/{name}/import", h.importScenario)
	}
}

type replayHandlers struct {
	rs  Replays
	sc  Scenarios
	log *slog.Logger
	srv *Server // tenants
}

// simError answers err with the status its sentinel calls for.
func simError(w http.ResponseWriter, log *slog.Logger, err error) {
	// The status says what the sentinel says: leave its prefix out of the message.
	msg := err.Error()
	for _, s := range []error{simulator.ErrInvalid, simulator.ErrExists, simulator.ErrState} {
		msg = strings.TrimPrefix(msg, s.Error()+": ")
	}
	switch {
	case errors.Is(err, simulator.ErrInvalid):
		writeError(w, http.StatusBadRequest, msg)
	case errors.Is(err, simulator.ErrEmpty):
		writeError(w, http.StatusUnprocessableEntity, err.Error())
	case errors.Is(err, simulator.ErrNotFound):
		writeError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, simulator.ErrExists), errors.Is(err, simulator.ErrState):
		writeError(w, http.StatusConflict, msg)
	case errors.Is(err, context.Canceled):
		writeError(w, http.StatusServiceUnavailable, err.Error())
	default:
		if log != nil {
			log.Error("simulator request failed", "err", err)
		}
		writeError(w, http.StatusInternalServerError, err.Error())
	}
}

// selectionBody is a selection as the API takes it: times as RFC 3339, or as a negative
// duration relative to now ("-1h").
type selectionBody struct {
	From     string             `json:"from"`
	To       string             `json:"to"`
	Devices  []string           `json:"devices"`
	Topics   []string           `json:"topics"`
	Scenario string             `json:"scenario"`
	MaxSkew  simulator.Duration `json:"max_skew"`
}

func (b selectionBody) selection(now time.Time) (simulator.Selection, error) {
	sel := simulator.Selection{Devices: b.Devices, Topics: b.Topics, Scenario: b.Scenario, MaxSkew: b.MaxSkew}
	var err error
	if sel.From, err = parseTime("from", b.From, now); err != nil {
		return sel, err
	}
	if sel.To, err = parseTime("to", b.To, now); err != nil {
		return sel, err
	}
	return sel, nil
}

func parseTime(field, s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if strings.HasPrefix(s, "-") {
		d, err := time.ParseDuration(s)
		if err == nil {
			return now.Add(d), nil
		}
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: %s: %q is neither an RFC 3339 time nor a negative duration like \"-1h\"", simulator.ErrInvalid, field, s)
	}
	return t, nil
}

type replayBody struct {
	selectionBody
	Speed  replay.Speed  `json:"speed"`
	Target replay.Target `json:"target"`
}

func (h *replayHandlers) start(w http.ResponseWriter, r *http.Request) {
	var body replayBody
	if err := decodeJSON(r, &body); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	sel, err := body.selection(time.Now())
	if err != nil {
		simError(w, h.log, err)
		return
	}
	req := replay.Request{Selection: sel, Speed: body.Speed, Target: body.Target}
	if !h.srv.replayTenant(w, r, &req) {
		return
	}
	job, err := h.rs.Start(r.Context(), req)
	if err != nil {
		simError(w, h.log, err)
		return
	}
	w.Header().Set("Location", "/api/v1/replays/"+job.ID)
	writeJSON(w, http.StatusCreated, job)
}

func (h *replayHandlers) list(w http.ResponseWriter, r *http.Request) {
	jobs, err := h.rs.List(r.Context())
	if err != nil {
		simError(w, h.log, err)
		return
	}
	out := jobs[:0:0]
	for _, j := range jobs {
		if visible(r, j.Request.Tenant) {
			out = append(out, j)
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"replays": out})
}

func (h *replayHandlers) get(w http.ResponseWriter, r *http.Request) {
	job, err := h.rs.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		simError(w, h.log, err)
		return
	}
	writeJSON(w, http.StatusOK, job)
}

func (h *replayHandlers) control(op func(context.Context, string) (replay.Job, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		job, err := op(r.Context(), r.PathValue("id"))
		if err != nil {
			simError(w, h.log, err)
			return
		}
		writeJSON(w, http.StatusOK, job)
	}
}

func (h *replayHandlers) delete(w http.ResponseWriter, r *http.Request) {
	keep := r.URL.Query().Get("keep_output")
	if err := h.rs.Delete(r.Context(), r.PathValue("id"), keep == "1" || keep == "true"); err != nil {
		simError(w, h.log, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

type scenarioBody struct {
	selectionBody
	Name        string `json:"name"`
	Description string `json:"description"`
	// Replay copies the selection of that replay job.
	Replay string `json:"replay"`
}

func (h *replayHandlers) createScenario(w http.ResponseWriter, r *http.Request) {
	var body scenarioBody
	if err := decodeJSON(r, &body); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	sel, err := body.selection(time.Now())
	if err != nil {
		simError(w, h.log, err)
		return
	}
	if body.Replay != "" {
		if body.From != "" || body.To != "" || len(body.Devices) > 0 || len(body.Topics) > 0 || body.Scenario != "" {
			writeError(w, http.StatusBadRequest, "replay: cannot be combined with from, to, devices, topics or scenario")
			return
		}
		job, err := h.rs.Get(r.Context(), body.Replay)
		if err != nil {
			simError(w, h.log, fmt.Errorf("replay: %w", err))
			return
		}
		sel = job.Request.Selection
		if sel.Scenario == "" && sel.To.IsZero() {
			sel.To = job.Source.To // the range as it was when the replay started
		}
	}
	info, err := h.sc.Create(r.Context(), body.Name, body.Description, sel)
	if err != nil {
		simError(w, h.log, err)
		return
	}
	w.Header().Set("Location", "/api/v1/scenarios/"+info.Name)
	writeJSON(w, http.StatusCreated, info)
}

func (h *replayHandlers) listScenarios(w http.ResponseWriter, r *http.Request) {
	list, err := h.sc.List(r.Context())
	if err != nil {
		simError(w, h.log, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"scenarios": list})
}

func (h *replayHandlers) getScenario(w http.ResponseWriter, r *http.Request) {
	info, err := h.sc.Get(r.Context(), r.PathValue("name"))
	if err != nil {
		simError(w, h.log, err)
		return
	}
	writeJSON(w, http.StatusOK, info)
}

func (h *replayHandlers) deleteScenario(w http.ResponseWriter, r *http.Request) {
	if err := h.sc.Delete(r.Context(), r.PathValue("name")); err != nil {
		simError(w, h.log, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// exportScenario streams the scenario as NDJSON; ?gzip=1 sends a .ndjson.gz file, and a client
// that accepts gzip gets the NDJSON with Content-Encoding: gzip.
func (h *replayHandlers) exportScenario(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if _, err := h.sc.Get(r.Context(), name); err != nil {
		simError(w, h.log, err)
		return
	}
	q := r.URL.Query().Get("gzip")
	file := q == "1" || q == "true"
	encoded := !file && acceptsGzip(r)
	var out io.Writer = w
	switch {
	case file:
		w.Header().Set("Content-Type", "application/gzip")
		w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="%s.ndjson.gz"`, name))
	case encoded:
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.Header().Set("Content-Encoding", "gzip")
		w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="%s.ndjson"`, name))
	default:
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="%s.ndjson"`, name))
	}
	w.Header().Add("Vary", "Accept-Encoding")
	var zw *gzip.Writer
	if file || encoded {
		zw = gzip.NewWriter(w)
		out = zw
	}
	w.WriteHeader(http.StatusOK)
	if err := h.sc.Export(r.Context(), name, out); err != nil {
		// The status is sent: cut the response short so the client sees an incomplete file.
		if h.log != nil && r.Context().Err() == nil {
			h.log.Error("scenario export failed", "scenario", name, "err", err)
		}
		panic(http.ErrAbortHandler)
	}
	if zw != nil {
		_ = zw.Close()
	}
}

func acceptsGzip(r *http.Request) bool {
	for part := range strings.SplitSeq(r.Header.Get("Accept-Encoding"), ",") {
		enc, q, _ := strings.Cut(strings.TrimSpace(part), ";")
		if strings.EqualFold(strings.TrimSpace(enc), "gzip") && strings.TrimSpace(q) != "q=0" {
			return true
		}
	}
	return false
}

// importScenario stores the body (NDJSON, gzip-compressed or not) as scenario {name}.
// ?replace=1 overwrites an existing one; ?description= describes it.
func (h *replayHandlers) importScenario(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	replace := q.Get("replace") == "1" || q.Get("replace") == "true"
	body := http.MaxBytesReader(w, r.Body, MaxScenarioImport)
	info, err := h.sc.Import(r.Context(), r.PathValue("name"), q.Get("description"), body, replace)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("the file is larger than %d bytes", int64(MaxScenarioImport)))
			return
		}
		simError(w, h.log, err)
		return
	}
	w.Header().Set("Location", "/api/v1/scenarios/"+info.Name)
	writeJSON(w, http.StatusCreated, info)
}

// owned answers 404 for another tenant's replay, as for one that does not exist, before next.
func (h *replayHandlers) owned(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if principal(r).Restricted() {
			id := r.PathValue("id")
			if j, err := h.rs.Get(r.Context(), id); err == nil && !visible(r, j.Request.Tenant) {
				simError(w, h.log, fmt.Errorf("%w: replay %s", simulator.ErrNotFound, id))
				return
			}
		}
		next(w, r)
	}
}
