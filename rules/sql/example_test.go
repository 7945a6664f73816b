package sql_test

import (
	"fmt"

	"github.com/tributary-iot/tributary/rules/sql"
)

func ExampleCompile() {
	rule, err := sql.Compile("hot_rooms", `
		select device, avg(temperature) avg_t, count(*) as n
		from 'devices/+/telemetry'
		where type = 'thermostat' and temperature > -50
		group by device, tumbling(60s)
		having avg_t > 28`)
	if err != nil {
		panic(err)
	}
	fmt.Println(rule.Source.Topic)
	fmt.Println(rule.Plan.Window)
	fmt.Println(rule.Query)

	_, err = sql.Compile("hot_rooms", `SELECT device, avg(temperature) AS avg_t
FROM 'devices/+/telemetry'
GROUP BY device, TUMBLING(1m FROM`)
	fmt.Println(err)
	_, err = sql.Compile("hot_rooms", `SELECT device, avg(temperature) AS avg_t FROM 'devices/+/telemetry' GROUP BY TUMBLING(1m)`)
	fmt.Println(err)
	// Output:
	// devices/+/telemetry
	// TUMBLING(1m)
	// SELECT device, avg(temperature) AS avg_t, count(*) AS n FROM 'devices/+/telemetry' WHERE type = 'thermostat' AND temperature > -50 GROUP BY device, TUMBLING(1m) HAVING avg_t > 28
	// line 3, col 30: expected ')' after window size, found 'FROM'
	// line 1, col 8: column device must be in GROUP BY or inside an aggregate function, like avg(device)
}
