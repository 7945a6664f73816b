package rules

import "errors"

var (
	// ErrNotFound is returned for a rule that does not exist.
	ErrNotFound = errors.New("rule not found")
	// ErrExists is returned by Create for a name that is taken.
	ErrExists = errors.New("rule already exists")
	// ErrInvalid wraps every problem with a rule definition: the message names the field
	// ("lateness: ...", "outputs[1].url: ...") or, for the query, is the *sql.ParseError with
	// its line and column.
	ErrInvalid = errors.New("invalid rule")
	// ErrConflict is returned when a rule changed between reading and writing it.
	ErrConflict = errors.New("rule changed concurrently")
)

// InvalidError is a definition problem. Error() is the message alone, e.g.
// "line 1, col 42: expected ..." or "outputs[0].url: ...", so it can be shown as is.
type InvalidError struct {
	Field string // "" for the query itself
	Err   error
}

func (e *InvalidError) Error() string {
	if e.Field == "" {
		return e.Err.Error()
	}
	return e.Field + ": " + e.Err.Error()
}

// Unwrap returns both the cause and ErrInvalid, so errors.Is(err, ErrInvalid) holds and the
// *sql.ParseError stays reachable with errors.As.
func (e *InvalidError) Unwrap() []error { return []error{ErrInvalid, e.Err} }

func invalid(field string, err error) error { return &InvalidError{Field: field, Err: err} }

func invalidf(field, msg string) error { return &InvalidError{Field: field, Err: errors.New(msg)} }
