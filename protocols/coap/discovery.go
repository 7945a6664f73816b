package coap

import (
	"strings"
)

// link is one entry of /.well-known/core (RFC 6690).
type link struct {
	href string // with "{id}" where the device ID goes
	rt   string // resource type
	ifd  string // interface description (CoRE interfaces: core.s sensor, core.p parameter, core.a actuator)
	ct   string // content-formats, space-separated
	obs  bool   // observable
	desc string // title
}

// links is the device layout of SPEC.md. "{name}" stays a placeholder: event and command names
// are open-ended.
var links = []link{
	{"/devices/{id}/telemetry", "tributary.telemetry", "core.s", "50 60 110 112", true, "measurements: POST"},
	{"/devices/{id}/events/{name}", "tributary.event", "core.s", "0 42 50 60", true, "events: POST"},
	{"/devices/{id}/state/reported", "tributary.state.reported", "core.s", "50 60", true, "reported state: POST or PUT"},
	{"/devices/{id}/state/desired", "tributary.state.desired", "core.p", "50 60", true, "desired state: GET, observe"},
	{"/devices/{id}/commands/{name}", "tributary.command", "core.a", "0 42 50 60", true, "commands: observe"},
	{"/devices/{id}/commands/{name}/result", "tributary.command.result", "core.s", "0 42 50 60", false, "command results: POST"},
}

// linkFilter is one discovery query parameter: attr is "rt", "if", "ct" or "href"; a value
// ending in "*" matches by prefix (RFC 6690 §4.1).
type linkFilter struct {
	attr, value string
}

func (f linkFilter) match(l link, href string) bool {
	var have string
	switch f.attr {
	case "rt":
		have = l.rt
	case "if":
		have = l.ifd
	case "ct":
		have = l.ct
	case "href":
		return matchValue(f.value, href)
	default:
		return true
	}
	for v := range strings.FieldsSeq(have) {
		if matchValue(f.value, v) {
			return true
		}
	}
	return false
}

func matchValue(pattern, v string) bool {
	if p, ok := strings.CutSuffix(pattern, "*"); ok {
		return strings.HasPrefix(v, p)
	}
	return pattern == v
}

var braces = strings.NewReplacer("{", "%7B", "}", "%7D")

// linkFormat renders the links for device (or the "{id}" placeholder when device is "") that
// match every filter, in application/link-format. Braces in hrefs are percent-encoded, as a
// URI requires.
func linkFormat(device string, filters []linkFilter, extra ...link) string {
	var b strings.Builder
	for _, l := range append(links[:len(links):len(links)], extra...) {
		href := l.href
		if device != "" {
			href = strings.Replace(href, "{id}", device, 1)
		}
		href = braces.Replace(href)
		ok := true
		for _, f := range filters {
			if !f.match(l, href) {
				ok = false
				break
			}
		}
		if !ok {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString("<" + href + `>;rt="` + l.rt + `"`)
		if l.ifd != "" {
			b.WriteString(`;if="` + l.ifd + `"`)
		}
		b.WriteString(`;ct="` + l.ct + `"`)
		if l.obs {
			b.WriteString(";obs")
		}
		b.WriteString(`;title="` + l.desc + `"`)
	}
	return b.String()
}
