package api

import (
	"fmt"
	"slices"
	"strings"

	"github.com/tributary-iot/tributary/auth"
)

// tenancy says how a route keeps tenants apart.
type tenancy int

const (
	// tenantFree: the route reads or writes nothing a tenant owns (browser tokens, device
	// types as read).
	tenantFree tenancy = iota
	// tenantDevice: the {id} path value is a device; to a key confined to another tenant the
	// device does not exist (404, the same answer as for an unknown ID).
	tenantDevice
	// tenantHandler: the handler filters lists and checks each object's tenant itself.
	tenantHandler
	// tenantGlobal: the route acts on the whole hub (provisioning keys, discovery, scenarios,
	// tenants); keys confined to one tenant are refused with 403.
	tenantGlobal
)

func (t tenancy) String() string {
	return [...]string{"none", "device in path (404 across tenants)", "filtered/checked by the handler", "hub-wide (403 for tenant keys)"}[t]
}

// access is what a route requires.
type access struct {
	scope  auth.Scope
	tenant tenancy
}

// routeAccess maps every authenticated route to the scope it needs and how it keeps tenants
// apart. Registering a route that is missing here panics at startup (see Router.Handle), and
// TestEveryRouteHasAScope walks the registered routes, so no route can slip in unguarded.
var routeAccess = map[string]access{
	// Devices.
	"POST /api/v1/devices":                      {auth.ScopeDevicesWrite, tenantHandler},
	"GET /api/v1/devices":                       {auth.ScopeDevicesRead, tenantHandler},
	"GET /api/v1/devices/{id}":                  {auth.ScopeDevicesRead, tenantDevice},
	"PATCH /api/v1/devices/{id}":                {auth.ScopeDevicesWrite, tenantDevice},
	"DELETE /api/v1/devices/{id}":               {auth.ScopeDevicesWrite, tenantDevice},
	"POST /api/v1/devices/{id}/token":           {auth.ScopeDevicesWrite, tenantDevice},
	"POST /api/v1/devices:bulk":                 {auth.ScopeDevicesWrite, tenantHandler},
	"GET /api/v1/devices/{id}/state":            {auth.ScopeDevicesRead, tenantDevice},
	"PUT /api/v1/devices/{id}/state/desired":    {auth.ScopeDevicesWrite, tenantDevice},
	"PATCH /api/v1/devices/{id}/state/desired":  {auth.ScopeDevicesWrite, tenantDevice},
	"POST /api/v1/devices/{id}/commands/{name}": {auth.ScopeDevicesWrite, tenantDevice},
	"GET /api/v1/devices/{id}/commands":         {auth.ScopeDevicesRead, tenantDevice},
	"GET /api/v1/devices/{id}/commands/{cmd}":   {auth.ScopeDevicesRead, tenantDevice},
	"POST /api/v1/devices/{id}/ping":            {auth.ScopeDevicesWrite, tenantDevice},
	"GET /api/v1/device-types":                  {auth.ScopeDevicesRead, tenantFree},
	"GET /api/v1/device-types/{type}":           {auth.ScopeDevicesRead, tenantFree},
	"PUT /api/v1/device-types/{type}":           {auth.ScopeAdmin, tenantGlobal},
	"DELETE /api/v1/device-types/{type}":        {auth.ScopeAdmin, tenantGlobal},
	"POST /api/v1/provisioning-keys":            {auth.ScopeAdmin, tenantGlobal},
	"GET /api/v1/provisioning-keys":             {auth.ScopeAdmin, tenantGlobal},
	"GET /api/v1/provisioning-keys/{key}":       {auth.ScopeAdmin, tenantGlobal},
	"DELETE /api/v1/provisioning-keys/{key}":    {auth.ScopeAdmin, tenantGlobal},
	"GET /api/v1/discovery":                     {auth.ScopeDevicesRead, tenantGlobal},
	"POST /api/v1/discovery/{key}/adopt":        {auth.ScopeDevicesWrite, tenantGlobal},
	"POST /api/v1/discovery/scan":               {auth.ScopeDevicesWrite, tenantGlobal},
	"GET /api/v1/rd":                            {auth.ScopeDevicesRead, tenantGlobal},

	// Messages and telemetry.
	"GET /api/v1/devices/{id}/messages":         {auth.ScopeStreamsRead, tenantDevice},
	"GET /api/v1/devices/{id}/telemetry":        {auth.ScopeStreamsRead, tenantDevice},
	"GET /api/v1/devices/{id}/telemetry/latest": {auth.ScopeStreamsRead, tenantDevice},
	"GET /api/v1/deadletters":                   {auth.ScopeStreamsRead, tenantHandler},
	"GET /api/v1/stream":                        {auth.ScopeStreamsRead, tenantHandler},
	"GET /api/v1/ws":                            {auth.ScopeStreamsRead, tenantHandler},
	"POST /api/v1/tokens":                       {auth.ScopeAny, tenantFree},

	// Rules.
	"POST /api/v1/rules":                  {auth.ScopeRulesWrite, tenantHandler},
	"GET /api/v1/rules":                   {auth.ScopeRulesRead, tenantHandler},
	"GET /api/v1/rules/{name}":            {auth.ScopeRulesRead, tenantHandler},
	"PUT /api/v1/rules/{name}":            {auth.ScopeRulesWrite, tenantHandler},
	"DELETE /api/v1/rules/{name}":         {auth.ScopeRulesWrite, tenantHandler},
	"GET /api/v1/rules/{name}/stats":      {auth.ScopeRulesRead, tenantHandler},
	"GET /api/v1/rules/{name}/results":    {auth.ScopeRulesRead, tenantHandler},
	"POST /api/v1/canaries":               {auth.ScopeRulesWrite, tenantHandler},
	"GET /api/v1/canaries":                {auth.ScopeRulesRead, tenantHandler},
	"GET /api/v1/canaries/{name}":         {auth.ScopeRulesRead, tenantHandler},
	"PUT /api/v1/canaries/{name}":         {auth.ScopeRulesWrite, tenantHandler},
	"DELETE /api/v1/canaries/{name}":      {auth.ScopeRulesWrite, tenantHandler},
	"GET /api/v1/canaries/{name}/results": {auth.ScopeRulesRead, tenantHandler},
	"POST /api/v1/backtests":              {auth.ScopeRulesRead, tenantHandler},

	// Replays, scenarios, simulations.
	"POST /api/v1/replays":                 {auth.ScopeSimWrite, tenantHandler},
	"GET /api/v1/replays":                  {auth.ScopeSimRead, tenantHandler},
	"GET /api/v1/replays/{id}":             {auth.ScopeSimRead, tenantHandler},
	"POST /api/v1/replays/{id}/pause":      {auth.ScopeSimWrite, tenantHandler},
	"POST /api/v1/replays/{id}/resume":     {auth.ScopeSimWrite, tenantHandler},
	"POST /api/v1/replays/{id}/cancel":     {auth.ScopeSimWrite, tenantHandler},
	"DELETE /api/v1/replays/{id}":          {auth.ScopeSimWrite, tenantHandler},
	"POST /api/v1/scenarios":               {auth.ScopeSimWrite, tenantGlobal},
	"GET /api/v1/scenarios":                {auth.ScopeSimRead, tenantGlobal},
	"GET /api/v1/scenarios/{name}":         {auth.ScopeSimRead, tenantGlobal},
	"DELETE /api/v1/scenarios/{name}":      {auth.ScopeSimWrite, tenantGlobal},
	"GET /api/v1/scenarios/{name}/export":  {auth.ScopeSimRead, tenantGlobal},
	"POST /api/v1/scenarios/{name}/import": {auth.ScopeSimWrite, tenantGlobal},
	"POST /api/v1/simulations":             {auth.ScopeSimWrite, tenantGlobal},
	"GET /api/v1/simulations":              {auth.ScopeSimRead, tenantGlobal},
	"GET /api/v1/simulations/{id}":         {auth.ScopeSimRead, tenantGlobal},
	"GET /api/v1/simulations/{id}/truth":   {auth.ScopeSimRead, tenantGlobal},
	"POST /api/v1/simulations/{id}/stop":   {auth.ScopeSimWrite, tenantGlobal},
	"DELETE /api/v1/simulations/{id}":      {auth.ScopeSimWrite, tenantGlobal},

	// Security.
	"POST /api/v1/keys":             {auth.ScopeAdmin, tenantHandler},
	"GET /api/v1/keys":              {auth.ScopeAdmin, tenantHandler},
	"GET /api/v1/keys/{id}":         {auth.ScopeAdmin, tenantHandler},
	"DELETE /api/v1/keys/{id}":      {auth.ScopeAdmin, tenantHandler},
	"POST /api/v1/tenants":          {auth.ScopeAdmin, tenantGlobal},
	"GET /api/v1/tenants":           {auth.ScopeAdmin, tenantHandler},
	"GET /api/v1/tenants/{name}":    {auth.ScopeAdmin, tenantHandler},
	"PUT /api/v1/tenants/{name}":    {auth.ScopeAdmin, tenantGlobal},
	"DELETE /api/v1/tenants/{name}": {auth.ScopeAdmin, tenantGlobal},
	"GET /api/v1/audit":             {auth.ScopeAdmin, tenantHandler},
}

// RouteScope is one row of the route table (README "API keys and scopes").
type RouteScope struct {
	Route   string
	Scope   auth.Scope
	Tenancy string
}

// RouteTable lists every authenticated route with its scope, ordered by path then method.
func RouteTable() []RouteScope {
	out := make([]RouteScope, 0, len(routeAccess))
	for p, a := range routeAccess {
		out = append(out, RouteScope{Route: p, Scope: a.scope, Tenancy: a.tenant.String()})
	}
	slices.SortFunc(out, func(a, b RouteScope) int {
		ma, pa, _ := strings.Cut(a.Route, " ")
		mb, pb, _ := strings.Cut(b.Route, " ")
		if c := strings.Compare(pa, pb); c != 0 {
			return c
		}
		return strings.Compare(ma, mb)
	})
	return out
}

// accessFor returns the access of pattern, panicking when the route has none: a route added
// without a scope must not start.
func accessFor(pattern string) access {
	a, ok := routeAccess[pattern]
	if !ok {
		panic(fmt.Sprintf("api: route %q has no scope: add it to routeAccess in api/scopes.go", pattern))
	}
	return a
}
