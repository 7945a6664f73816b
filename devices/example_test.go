package devices_test

import (
	"encoding/json"
	"fmt"

	"github.com/tributary-iot/tributary/devices"
)

func ExampleDelta() {
	var desired, reported map[string]any
	json.Unmarshal([]byte(`{"mode":"boost","fw":"1.1","net":{"ch":11,"rssi":-70}}`), &desired)
	json.Unmarshal([]byte(`{"mode":"eco","fw":"1.1","net":{"ch":6,"rssi":-70},"uptime":42}`), &reported)
	delta, _ := json.Marshal(devices.Delta(desired, reported))
	fmt.Println(string(delta))
	// Output: {"mode":"boost","net":{"ch":11}}
}
