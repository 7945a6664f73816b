package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/tributary-iot/tributary/rules"
	"github.com/tributary-iot/tributary/simulator"
)

// Backtests runs rules over stored input in isolation. *rules.Backtester satisfies it.
type Backtests interface {
	Run(ctx context.Context, req rules.BacktestRequest) (rules.BacktestReport, error)
}

// BacktestTimeout bounds one synchronous backtest.
const BacktestTimeout = 5 * time.Minute

// BacktestRoutes registers POST /api/v1/backtests; pass it in Deps.Extra.
func BacktestRoutes(bt Backtests, log *slog.Logger) func(*Router) {
	h := &backtestHandlers{bt: bt, log: log}
	return func(r *Router) {
		h.srv = r.s
		r.Handle("POST /api/v1/backtests", h.run)
	}
}

type backtestHandlers struct {
	bt  Backtests
	srv *Server
	log *slog.Logger
}

// backtestBody is a version (rule, name, sql, lateness, idle_timeout, max_future), an optional
// second version under compare, a selection (from, to, devices, topics, max_skew or scenario)
// and the tenant whose messages to read (default: the rule's; a key confined to a tenant
// reads its own).
type backtestBody struct {
	rules.BacktestVersion
	Compare *rules.BacktestVersion `json:"compare"`
	selectionBody
	Tenant string `json:"tenant"`
}

func (h *backtestHandlers) run(w http.ResponseWriter, r *http.Request) {
	var body backtestBody
	if err := decodeJSON(r, &body); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	sel, err := body.selection(time.Now())
	if err != nil {
		h.fail(w, err)
		return
	}
	tenant, ok := h.srv.selectionTenant(w, r, sel, "a backtest")
	if !ok {
		return
	}
	if tenant == "" {
		tenant = body.Tenant
	} else if body.Tenant != "" && body.Tenant != tenant {
		writeError(w, http.StatusForbidden, fmt.Sprintf("API key is confined to tenant %s and cannot read tenant %s", tenant, body.Tenant))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), BacktestTimeout)
	defer cancel()
	rep, err := h.bt.Run(ctx, rules.BacktestRequest{Version: body.BacktestVersion, Compare: body.Compare, Selection: sel, Tenant: tenant})
	if err != nil {
		h.fail(w, err)
		return
	}
	writeJSON(w, http.StatusOK, rep)
}

// fail answers a definition error or an unknown rule as the rules API does, and a selection
// error as the replays API does, except that an empty selection is a 400 here.
func (h *backtestHandlers) fail(w http.ResponseWriter, err error) {
	msg := err.Error()
	for _, s := range []error{simulator.ErrInvalid, rules.ErrNotFound} {
		msg = strings.TrimPrefix(msg, s.Error()+": ")
	}
	switch {
	case errors.Is(err, rules.ErrInvalid), errors.Is(err, simulator.ErrInvalid), errors.Is(err, simulator.ErrEmpty):
		writeError(w, http.StatusBadRequest, msg)
	case errors.Is(err, rules.ErrNotFound), errors.Is(err, simulator.ErrNotFound):
		writeError(w, http.StatusNotFound, msg)
	case errors.Is(err, context.DeadlineExceeded):
		writeError(w, http.StatusGatewayTimeout, "the backtest took longer than "+BacktestTimeout.String()+": narrow the selection")
	case errors.Is(err, context.Canceled):
		writeError(w, http.StatusServiceUnavailable, msg)
	default:
		if h.log != nil {
			h.log.Error("backtest failed", "err", err)
		}
		writeError(w, http.StatusInternalServerError, msg)
	}
}
