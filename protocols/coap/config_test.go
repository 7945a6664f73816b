package coap

import (
	"context"
	"strings"
	"testing"

	"github.com/tributary-iot/tributary/protocols"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		cfg  Config
		want string // in the error; "" for valid
	}{
		{Config{Addr: ":5683"}, ""},
		{Config{Addr: ":5683", DTLSAddr: ":5684", NotifyQueue: 8}, ""},
		{Config{}, "coap_addr"},
		{Config{Addr: "5683"}, "coap_addr"},
		{Config{Addr: ":5683", DTLSAddr: "nope"}, "coaps_addr"},
		{Config{Addr: ":5683", InactivityTimeout: -1}, "coap_inactivity_timeout"},
		{Config{Addr: ":5683", InactivityTimeout: 10}, "coap_inactivity_timeout"},
		{Config{Addr: ":5683", MaxObservers: -1}, "coap_max_observers"},
		{Config{Addr: ":5683", MaxObserversPerPeer: -1}, "coap_max_observers_per_peer"},
		{Config{Addr: ":5683", NotifyQueue: -1}, "coap_notify_queue"},
		{Config{Addr: ":5683", NotifyTimeout: -1}, "coap_notify_timeout"},
		{Config{Addr: ":5683", RequestQueue: -1}, "coap_request_queue"},
		{Config{Addr: ":5683", StoreTimeout: -1}, "coap_store_timeout"},
	}
	for _, tt := range tests {
		err := tt.cfg.Validate()
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%+v: got %v, want valid", tt.cfg, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%+v: got %v, want an error naming %s", tt.cfg, err, tt.want)
		}
	}
}

// plainAuth has no PSKs.
type plainAuth struct{}

func (plainAuth) AuthenticateDevice(context.Context, string, string) error { return nil }
func (plainAuth) AuthenticateApp(context.Context, string) error            { return nil }

var _ protocols.Authenticator = plainAuth{}

func TestNewNeedsPSKsForDTLS(t *testing.T) {
	_, err := New(Config{Addr: ":0", DTLSAddr: ":0"}, noIngest{}, plainAuth{}, nilSubscriber{}, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "coaps_addr") {
		t.Errorf("got %v, want an error about coaps_addr needing PSKs", err)
	}
	if _, err := New(Config{Addr: ":0"}, noIngest{}, plainAuth{}, nilSubscriber{}, nil, nil); err != nil {
		t.Errorf("without DTLS: got %v, want nil", err)
	}
	if _, err := New(Config{Addr: ":0"}, nil, plainAuth{}, nilSubscriber{}, nil, nil); err == nil {
		t.Error("without an ingester: got nil, want an error")
	}
}
