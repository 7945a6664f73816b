package tsdb

import "errors"

var (
	// ErrBadQuery: a query parameter is missing or malformed; the wrapping error names it.
	ErrBadQuery = errors.New("bad query")
	// ErrFieldType: mean, sum, min or max was asked of a field that holds booleans or strings.
	ErrFieldType = errors.New("aggregate needs a numeric field")
	// ErrTooManyPoints: the answer (or, for the stream-backed querier, the data to read) is larger
	// than MaxPoints (MaxScan); narrow the range or downsample.
	ErrTooManyPoints = errors.New("too many points")
	// ErrUnavailable: InfluxDB could not be reached or answered that it is unavailable.
	ErrUnavailable = errors.New("time-series database unavailable")
)
