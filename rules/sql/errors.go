package sql

import (
	"errors"
	"fmt"
)

// ErrInvalidRuleName is returned by Compile for a rule name that cannot be
// used in topics and subjects.
var ErrInvalidRuleName = errors.New("invalid rule name")

// ParseError is a syntax or semantic error in a query, at a position.
type ParseError struct {
	Pos  int // byte offset in the query text
	Line int // 1-based
	Col  int // 1-based, in characters
	Msg  string
}

func (e *ParseError) Error() string {
	return fmt.Sprintf("line %d, col %d: %s", e.Line, e.Col, e.Msg)
}

// errorAt builds a ParseError for byte offset pos of src.
func errorAt(src string, pos int, format string, args ...any) *ParseError {
	pos = max(0, min(pos, len(src)))
	line, col := 1, 1
	for _, r := range src[:pos] {
		if r == '\n' {
			line++
			col = 1
		} else {
			col++
		}
	}
	return &ParseError{Pos: pos, Line: line, Col: col, Msg: fmt.Sprintf(format, args...)}
}
