package tsdb

import (
	"cmp"
	"fmt"
	"slices"
	"time"
)

// value is one stored value of a field: its time, the stream sequence of its message (later
// messages overwrite earlier ones at the same time, as in InfluxDB) and the value.
type value struct {
	t   int64
	seq uint64
	v   any
}

// answer computes q's result from the field's values in [q.From, q.To), in any order, with the
// semantics InfluxQuerier gets from Flux.
func answer(q Query, vals []value) ([]Point, error) {
	slices.SortFunc(vals, func(a, b value) int {
		return cmp.Or(cmp.Compare(a.t, b.t), cmp.Compare(a.seq, b.seq))
	})
	// One value per timestamp: the last written.
	out := vals[:0]
	for i, v := range vals {
		if i+1 < len(vals) && vals[i+1].t == v.t {
			continue
		}
		out = append(out, v)
	}
	vals = out
	if numericAgg(q.Agg) {
		for _, v := range vals {
			if _, ok := v.v.(float64); !ok {
				return nil, fieldTypeError(q, v.v)
			}
		}
	}
	switch {
	case q.Agg == "":
		if len(vals) > MaxPoints {
			return nil, fmt.Errorf("%w: more than %d points of field %q in range; downsample with every and agg", ErrTooManyPoints, MaxPoints, q.Field)
		}
		pts := make([]Point, len(vals))
		for i, v := range vals {
			pts[i] = Point{Time: time.Unix(0, v.t).UTC(), Value: v.v}
		}
		return pts, nil
	case q.Every == 0:
		if len(vals) == 0 {
			return nil, nil
		}
		return []Point{{Time: q.From, Value: aggregate(q.Agg, vals)}}, nil
	}
	var pts []Point
	for lo := 0; lo < len(vals); {
		start := windowStart(time.Unix(0, vals[lo].t), q.Every)
		end := start.Add(q.Every).UnixNano()
		hi := lo + 1
		for hi < len(vals) && vals[hi].t < end {
			hi++
		}
		pts = append(pts, Point{Time: start, Value: aggregate(q.Agg, vals[lo:hi])})
		lo = hi
	}
	return pts, nil
}

// aggregate applies agg to vals: time-sorted, not empty, numeric for mean, sum, min and max.
func aggregate(agg string, vals []value) any {
	switch agg {
	case AggCount:
		return int64(len(vals))
	case AggFirst:
		return vals[0].v
	case AggLast:
		return vals[len(vals)-1].v
	}
	acc := vals[0].v.(float64)
	for _, v := range vals[1:] {
		f := v.v.(float64)
		switch agg {
		case AggMean, AggSum:
			acc += f
		case AggMin:
			acc = min(acc, f)
		case AggMax:
			acc = max(acc, f)
		}
	}
	if agg == AggMean {
		acc /= float64(len(vals))
	}
	return acc
}

// isNumber reports whether v is a numeric field value (telemetry is always float64; points of
// other mappers may hold integers).
func isNumber(v any) bool {
	switch v.(type) {
	case float64, int64, uint64:
		return true
	}
	return false
}

func fieldTypeError(q Query, v any) error {
	return fmt.Errorf("%w: field %q holds %s values; %s needs numbers", ErrFieldType, q.Field, typeName(v), q.Agg)
}

func typeName(v any) string {
	switch v.(type) {
	case float64:
		return "float"
	case int64:
		return "integer"
	case uint64:
		return "unsigned"
	case bool:
		return "boolean"
	case string:
		return "string"
	}
	return fmt.Sprintf("%T", v)
}
