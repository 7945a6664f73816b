package rules

import (
	"testing"
	"time"
)

func TestDiffResults(t *testing.T) {
	t0 := time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)
	r := func(g string, w int, v float64) Result {
		return Result{GroupKey: g, WindowStart: t0.Add(time.Duration(w) * time.Minute), WindowEnd: t0.Add(time.Duration(w+1) * time.Minute),
			Values: map[string]any{"v": v}}
	}
	a := []Result{r("x", 0, 1), r("x", 1, 2), r("y", 0, 3), r("y", 0, 4), r("z", 0, 5)}
	b := []Result{r("x", 0, 1), r("x", 1, 9), r("y", 0, 3), r("w", 0, 6)}
	d := diffResults(a, b)
	if d.Same != 2 || len(d.Changed) != 1 || d.Changed[0].GroupKey != "x" || d.Changed[0].A["v"] != 2.0 || d.Changed[0].B["v"] != 9.0 {
		t.Errorf("same %d, changed %+v", d.Same, d.Changed)
	}
	// The second "y" window of A has no counterpart in B.
	if len(d.OnlyA) != 2 || d.OnlyA[0].Values["v"] != 4.0 || d.OnlyA[1].GroupKey != "z" {
		t.Errorf("only A %+v", d.OnlyA)
	}
	if len(d.OnlyB) != 1 || d.OnlyB[0].GroupKey != "w" {
		t.Errorf("only B %+v", d.OnlyB)
	}
	if d := diffResults(nil, nil); d.Same != 0 || d.OnlyA == nil || d.OnlyB == nil || d.Changed == nil {
		t.Errorf("empty diff %+v: lists must be empty, not null", d)
	}
}
