package payload_test

import (
	"errors"
	"fmt"
	"sort"

	"github.com/tributary-iot/tributary/payload"
)

func ExampleDecodeTelemetry() {
	body := []byte(`{"temperature":21.5,"env":{"rh":40},"door":false,"ts":1700000000000}`)
	ms, err := payload.DecodeTelemetry(payload.JSON, body)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, m := range ms {
		names := make([]string, 0, len(m.Fields))
		for name := range m.Fields {
			names = append(names, name)
		}
		sort.Strings(names)
		fmt.Println(m.Time)
		for _, name := range names {
			fmt.Printf("%s=%v (%T)\n", name, m.Fields[name], m.Fields[name])
		}
	}
	// Output:
	// 2023-11-14 22:13:20 +0000 UTC
	// door=false (bool)
	// env.rh=40 (float64)
	// temperature=21.5 (float64)
}

func ExampleDecodeTelemetry_senML() {
	body := []byte(`[{"bn":"dev1:","bt":1700000000,"n":"temp","u":"Cel","v":21.5},
		{"n":"temp","t":60,"v":21.7}]`)
	ms, _ := payload.DecodeTelemetry(payload.SenMLJSON, body)
	for _, m := range ms {
		fmt.Println(m.Time.Unix(), m.Fields)
	}
	// Output:
	// 1700000000 map[dev1:temp:21.5]
	// 1700000060 map[dev1:temp:21.7]
}

func ExampleDecodeTelemetry_error() {
	_, err := payload.DecodeTelemetry(payload.JSON, []byte(`{"temps":[21.5,21.7]}`))
	fmt.Println(err)
	fmt.Println(errors.Is(err, payload.ErrInvalid))
	// Output:
	// field "temps": arrays are not supported
	// true
}

func ExampleDecodeObject() {
	state, _ := payload.DecodeObject("", []byte(`{"led":"on","interval":60,"old":null}`))
	fmt.Println(state["led"], state["interval"], state["old"])
	// Output: on 60 <nil>
}

func ExampleContentTypeFromCoAP() {
	ct, _ := payload.ContentTypeFromCoAP(112)
	cf, _ := payload.CoAPFormat("application/json; charset=utf-8")
	fmt.Println(ct, cf)
	// Output: application/senml+cbor 50
}
