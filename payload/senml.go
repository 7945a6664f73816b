package payload

import (
	"math"
	"time"
)

// SenML labels (RFC 8428 §4.3, §6), as bit positions in senmlRecord.has.
const (
	lBN = iota
	lBT
	lBU
	lBV
	lBS
	lBVer
	lN
	lU
	lV
	lVS
	lVB
	lVD
	lS
	lT
	lUT
	numLabels
)

var labelNames = [numLabels]string{
	lBN: "bn", lBT: "bt", lBU: "bu", lBV: "bv", lBS: "bs", lBVer: "bver",
	lN: "n", lU: "u", lV: "v", lVS: "vs", lVB: "vb", lVD: "vd",
	lS: "s", lT: "t", lUT: "ut",
}

// labelKind is the type a label's value must have.
type labelKind uint8

const (
	lkNumber labelKind = iota
	lkString
	lkBool
	lkData
)

var labelKinds = [numLabels]labelKind{
	lBN: lkString, lBT: lkNumber, lBU: lkString, lBV: lkNumber,
	lBS: lkNumber, lBVer: lkNumber, lN: lkString, lU: lkString,
	lV: lkNumber, lVS: lkString, lVB: lkBool, lVD: lkData,
	lS: lkNumber, lT: lkNumber, lUT: lkNumber,
}

// labelByName returns the label of a JSON (or CBOR text) key, or -1.
func labelByName(k string) int {
	switch k {
	case "bn":
		return lBN
	case "bt":
		return lBT
	case "bu":
		return lBU
	case "bv":
		return lBV
	case "bs":
		return lBS
	case "bver":
		return lBVer
	case "n":
		return lN
	case "u":
		return lU
	case "v":
		return lV
	case "vs":
		return lVS
	case "vb":
		return lVB
	case "vd":
		return lVD
	case "s":
		return lS
	case "t":
		return lT
	case "ut":
		return lUT
	}
	return -1
}

// labelByCBOR returns the label of a CBOR integer key (RFC 8428 §6), or -1.
func labelByCBOR(k int64) int {
	switch k {
	case -1:
		return lBVer
	case -2:
		return lBN
	case -3:
		return lBT
	case -4:
		return lBU
	case -5:
		return lBV
	case -6:
		return lBS
	case 0:
		return lN
	case 1:
		return lU
	case 2:
		return lV
	case 3:
		return lVS
	case 4:
		return lVB
	case 5:
		return lS
	case 6:
		return lT
	case 7:
		return lUT
	case 8:
		return lVD
	}
	return -1
}

// senmlVersion is the SenML version this package reads (RFC 8428 §4.4).
const senmlVersion = 10

// senmlRecord is one record as read, before resolution.
type senmlRecord struct {
	has  uint32 // 1<<label for each label present
	str  [numLabels]string
	num  [numLabels]float64
	bool bool // vb
}

func (r *senmlRecord) is(label int) bool { return r.has&(1<<label) != 0 }

// set marks label as present; it fails if the record already had it.
func (r *senmlRecord) set(label, idx int) error {
	if r.is(label) {
		return errorf("senml record %d: duplicate label %q", idx, labelNames[label])
	}
	r.has |= 1 << label
	return nil
}

func unknownLabel(k string, idx int) error {
	// RFC 8428 §4.4: labels ending in "_" must be understood.
	if len(k) > 0 && k[len(k)-1] == '_' {
		return errorf("senml record %d: unsupported label %q", idx, k)
	}
	return nil
}

func labelTypeError(label, idx int) error {
	want := [...]string{
		lkNumber: "a number",
		lkString: "a string",
		lkBool:   "a boolean",
		lkData:   "base64url data",
	}[labelKinds[label]]
	return errorf("senml record %d: %q must be %s", idx, labelNames[label], want)
}

// validBase64URL reports whether s is unpadded base64url, as RFC 8428 §5
// wants for "vd" in JSON.
func validBase64URL(s string) bool {
	if len(s)%4 == 1 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// trimPadding drops base64 '=' padding, which some encoders add.
func trimPadding(s string) string {
	for len(s) > 0 && s[len(s)-1] == '=' {
		s = s[:len(s)-1]
	}
	return s
}

// relativeLimit is 2^28 seconds: resolved times below it are relative to
// now (RFC 8428 §4.5.3).
const relativeLimit = 1 << 28

// senmlResolver resolves records in order (RFC 8428 §4.6) and groups them
// into measurements by resolved time.
type senmlResolver struct {
	now    func() time.Time
	nowT   time.Time
	hasNow bool
	base   senmlRecord // current base values (str and num of lBN … lBS)
	total  int
	out    []Measurement
}

func (s *senmlResolver) clock() time.Time {
	if !s.hasNow {
		s.nowT, s.hasNow = s.now(), true
	}
	return s.nowT
}

// add resolves record idx.
func (s *senmlResolver) add(r *senmlRecord, idx int) error {
	if r.is(lBVer) && r.num[lBVer] > senmlVersion {
		return errorf("senml record %d: unsupported version %v", idx, r.num[lBVer])
	}
	for _, l := range [...]int{lBN, lBT, lBU, lBV, lBS} {
		if r.is(l) {
			s.base.str[l], s.base.num[l] = r.str[l], r.num[l]
		}
	}

	name := r.str[lN]
	if bn := s.base.str[lBN]; bn != "" {
		name = bn + name
	}
	if name == "" {
		return errorf("senml record %d: no name", idx)
	}
	if len(name) > MaxFieldName {
		return errorf("senml record %d: name %s longer than %d bytes", idx, quoteName(name), MaxFieldName)
	}
	if !validSenMLName(name) {
		return errorf("senml record %d: invalid name %s", idx, quoteName(name))
	}

	values := 0
	for _, l := range [...]int{lV, lVS, lVB, lVD} {
		if r.is(l) {
			values++
		}
	}
	if values > 1 {
		return errorf("senml record %d: more than one value", idx)
	}
	if values == 0 && !r.is(lS) {
		return errorf("senml record %d: no value", idx)
	}

	t, err := s.resolveTime(s.base.num[lBT]+r.num[lT], idx)
	if err != nil {
		return err
	}
	m := s.group(t)

	var v any
	switch {
	case r.is(lV):
		f := s.base.num[lBV] + r.num[lV]
		if !isFinite(f) {
			return errorf("senml record %d: value out of range", idx)
		}
		v = f
	case r.is(lVS):
		v = r.str[lVS]
	case r.is(lVB):
		v = r.bool
	case r.is(lVD):
		v = r.str[lVD]
	}
	if v != nil {
		if err := s.put(m, name, v, idx); err != nil {
			return err
		}
	}
	if r.is(lS) {
		sum := s.base.num[lBS] + r.num[lS]
		if !isFinite(sum) {
			return errorf("senml record %d: sum out of range", idx)
		}
		sumName := name
		if v != nil {
			sumName = name + ".sum"
			if len(sumName) > MaxFieldName {
				return errorf("senml record %d: name %s longer than %d bytes", idx, quoteName(sumName), MaxFieldName)
			}
		}
		if err := s.put(m, sumName, sum, idx); err != nil {
			return err
		}
	}
	return nil
}

func (s *senmlResolver) put(m map[string]any, name string, v any, idx int) error {
	if _, dup := m[name]; dup {
		return errorf("senml record %d: field %s given twice for the same time", idx, quoteName(name))
	}
	if s.total >= MaxFields {
		return errTooMany
	}
	s.total++
	m[name] = v
	return nil
}

// resolveTime turns base time + time into a time.Time: zero stays zero
// ("roughly now": the hub uses the time it received the message), values
// below 2^28 are relative to now, larger ones are Unix seconds.
func (s *senmlResolver) resolveTime(rt float64, idx int) (time.Time, error) {
	switch {
	case rt == 0:
		return time.Time{}, nil
	case rt >= relativeLimit:
		if t, ok := timeFromSeconds(rt); ok {
			return t, nil
		}
	case rt > -relativeLimit:
		d := time.Duration(math.Round(rt*1e6)) * time.Microsecond
		return s.clock().Add(d).UTC(), nil
	}
	return time.Time{}, errorf("senml record %d: time out of range", idx)
}

// group returns the fields of the measurement at time t, adding one if
// needed. Records of one time usually follow each other, so the search
// starts from the end.
func (s *senmlResolver) group(t time.Time) map[string]any {
	for i := len(s.out) - 1; i >= 0; i-- {
		if s.out[i].Time.Equal(t) {
			return s.out[i].Fields
		}
	}
	m := make(map[string]any, 8)
	s.out = append(s.out, Measurement{Time: t, Fields: m})
	return m
}

func (s *senmlResolver) measurements() ([]Measurement, error) {
	if len(s.out) == 0 {
		return nil, errNoFields
	}
	return s.out, nil
}

// validSenMLName checks RFC 8428 §4.5.1: the resolved name starts with a
// letter or digit and holds only letters, digits and "-:./_".
func validSenMLName(n string) bool {
	for i := 0; i < len(n); i++ {
		c := n[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case i > 0 && (c == '-' || c == ':' || c == '.' || c == '/' || c == '_'):
		default:
			return false
		}
	}
	return true
}

// decodeSenMLJSON decodes a SenML JSON pack.
func decodeSenMLJSON(body []byte, now func() time.Time) ([]Measurement, error) {
	r := newJSONReader(body)
	r.ws()
	if r.peek() != '[' {
		return nil, newError("senml: pack must be an array")
	}
	res := senmlResolver{now: now}
	more, err := r.open(1, ']')
	if err != nil {
		return nil, err
	}
	for idx := 0; more; idx++ {
		var rec senmlRecord
		if err := r.senmlRecord(&rec, idx); err != nil {
			return nil, err
		}
		if err := res.add(&rec, idx); err != nil {
			return nil, err
		}
		if more, err = r.next(']'); err != nil {
			return nil, err
		}
	}
	if err := r.end(); err != nil {
		return nil, err
	}
	return res.measurements()
}

// senmlRecord reads record idx of a SenML JSON pack.
func (r *jsonReader) senmlRecord(rec *senmlRecord, idx int) error {
	if c := r.peek(); c != '{' {
		if c == '[' || c == '"' || c == 't' || c == 'f' || c == 'n' || isNumStart(c) {
			return errorf("senml record %d: not an object", idx)
		}
		return r.syntaxErr()
	}
	more, err := r.open(2, '}')
	if err != nil {
		return err
	}
	for more {
		k, err := r.key()
		if err != nil {
			return err
		}
		l := labelByName(k)
		if l < 0 {
			if err := unknownLabel(k, idx); err != nil {
				return err
			}
			if err := r.skip(3); err != nil {
				return err
			}
		} else {
			if err := rec.set(l, idx); err != nil {
				return err
			}
			if err := r.senmlValue(rec, l, idx); err != nil {
				return err
			}
		}
		if more, err = r.next('}'); err != nil {
			return err
		}
	}
	return nil
}

// senmlValue reads the value of label l.
func (r *jsonReader) senmlValue(rec *senmlRecord, l, idx int) error {
	c := r.peek()
	switch labelKinds[l] {
	case lkNumber:
		if !isNumStart(c) {
			break
		}
		f, err := r.num()
		if err == errRange {
			return errorf("senml record %d: %q out of range", idx, labelNames[l])
		}
		rec.num[l] = f
		return err
	case lkString, lkData:
		if c != '"' {
			break
		}
		s, err := r.str()
		if err != nil {
			return err
		}
		if labelKinds[l] == lkData {
			if s = trimPadding(s); !validBase64URL(s) {
				break
			}
		}
		rec.str[l] = s
		return nil
	case lkBool:
		if c != 't' && c != 'f' {
			break
		}
		b, err := r.boolean()
		rec.bool = b
		return err
	}
	if c == 0 {
		return r.syntaxErr()
	}
	return labelTypeError(l, idx)
}
