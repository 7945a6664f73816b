package linkformat_test

import (
	"fmt"

	"github.com/tributary-iot/tributary/devices/linkformat"
)

func ExampleParse() {
	links, err := linkformat.Parse(`</sensors/temp>;rt="temperature-c";if="sensor";obs,</led>;rt=led`)
	if err != nil {
		panic(err)
	}
	f, _ := linkformat.ParseFilter("rt=temp*")
	for _, l := range links {
		rt, _ := l.Get("rt")
		fmt.Println(l.Target, rt, f.Match(l))
	}
	fmt.Println(linkformat.Format(links[1:]))
	// Output:
	// /sensors/temp temperature-c true
	// /led led false
	// </led>;rt="led"
}
