package sketch

import (
	"encoding/binary"
	"fmt"

	"github.com/axiomhq/hyperloglog"
)

// The encoding of a Month, version 1. Integers marked uvarint are encoding/binary unsigned
// varints; names are raw bytes.
//
//	magic     4 bytes  "MMSK"
//	version   1 byte   1
//	precision 1 byte   Precision (14)
//	month     sketch
//	apps      section
//	days      section
//	minis     section  the kept mini programs
//	other     sketch   the mini programs beyond the cap; length 0 when there are none
//
//	section = count uvarint, then count entries of: name length uvarint, name, sketch;
//	          names non-empty and strictly ascending
//	sketch  = length uvarint, then a kind byte and its payload:
//	          0 exact: count uvarint (at most 1,536), then count hashes, 8 bytes big-endian each,
//	            strictly ascending
//	          1 dense: a dense sketch in github.com/axiomhq/hyperloglog's encoding (its
//	            version 2, dense: 8 header bytes, then 2^Precision registers)
//
// The hash of a device is the first 8 bytes of its key, big-endian, given to the dense sketch
// with InsertHash (not hyperloglog's own MetroHash, which Insert would apply).
//
// The encoding is canonical: a sketch is exact exactly when it has seen at most 1,536 distinct
// hashes, the exact form is sorted, the dense registers are the maximum over the hashes seen,
// and names are sorted. So equal Months encode to equal bytes, whatever the order of their
// events or merges; a rollup written twice is byte-identical.
//
// A change of precision, hash, threshold or layout needs a new version.
const (
	magic   = "MMSK"
	version = 1
)

// MarshalBinary encodes m (see the format above).
func (m *Month) MarshalBinary() ([]byte, error) {
	b := append([]byte(magic), version, Precision)
	var err error
	if b, err = appendSketch(b, m.all); err != nil {
		return nil, fmt.Errorf("encode month: %w", err)
	}
	for _, sec := range []struct {
		sks  map[string]*hll
		name string
	}{{m.apps, "app"}, {m.days, "day"}, {m.minis, "mini program"}} {
		b = binary.AppendUvarint(b, uint64(len(sec.sks)))
		for _, name := range sortedNames(sec.sks) {
			b = binary.AppendUvarint(b, uint64(len(name)))
			b = append(b, name...)
			if b, err = appendSketch(b, sec.sks[name]); err != nil {
				return nil, fmt.Errorf("encode %s %q: %w", sec.name, name, err)
			}
		}
	}
	if m.other == nil {
		return binary.AppendUvarint(b, 0), nil
	}
	if b, err = appendSketch(b, m.other); err != nil {
		return nil, fmt.Errorf("encode other mini programs: %w", err)
	}
	return b, nil
}

func appendSketch(b []byte, sk *hll) ([]byte, error) {
	enc, err := sk.appendBinary(nil)
	if err != nil {
		return nil, err
	}
	b = binary.AppendUvarint(b, uint64(len(enc)))
	return append(b, enc...), nil
}

// UnmarshalBinary replaces m by the Month encoded in data. Errors wrap ErrEncoding; m is left
// unchanged then. More than MaxMiniPrograms mini programs are folded as Add would.
func (m *Month) UnmarshalBinary(data []byte) error {
	d := decoder{b: data}
	if len(data) < len(magic)+2 || string(data[:len(magic)]) != magic {
		return fmt.Errorf("%w: not a month of sketches", ErrEncoding)
	}
	if v := data[len(magic)]; v != version {
		return fmt.Errorf("%w: version %d, want %d", ErrEncoding, v, version)
	}
	if p := data[len(magic)+1]; p != Precision {
		return fmt.Errorf("%w: precision %d, want %d", ErrEncoding, p, Precision)
	}
	d.b = data[len(magic)+2:]
	out := NewMonth()
	out.all = d.sketch("month")
	for _, sec := range []struct {
		sks  map[string]*hll
		name string
	}{{out.apps, "app"}, {out.days, "day"}, {nil, "mini program"}} {
		n := d.uvarint(sec.name + " count")
		prev := ""
		for i := uint64(0); i < n && d.err == nil; i++ {
			name := d.name(sec.name)
			sk := d.sketch(sec.name + " " + name)
			switch {
			case d.err != nil:
			case i > 0 && name <= prev:
				d.fail("%s %q after %q: names must ascend", sec.name, name, prev)
			case sec.sks == nil: // mini programs: through the cap
				out.mini(name).merge(sk)
			default:
				sec.sks[name] = sk
			}
			prev = name
		}
	}
	if b := d.bytes("other mini programs sketch"); len(b) > 0 {
		if sk := d.parse("other mini programs", b); sk != nil {
			out.other = sk
		}
	}
	if d.err == nil && len(d.b) > 0 {
		d.fail("%d bytes after the end", len(d.b))
	}
	if d.err != nil {
		return d.err
	}
	*m = *out
	return nil
}

// decoder reads the encoding; the first error sticks and turns every later read into a no-op.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", ErrEncoding, fmt.Sprintf(format, args...))
	}
}

func (d *decoder) uvarint(what string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("%s: bad uvarint", what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes(what string) []byte {
	n := d.uvarint(what + " length")
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.fail("%s: %d bytes, %d left", what, n, len(d.b))
		return nil
	}
	b := d.b[:n]
	d.b = d.b[n:]
	return b
}

func (d *decoder) name(what string) string {
	b := d.bytes(what + " name")
	if d.err == nil && len(b) == 0 {
		d.fail("empty %s name", what)
	}
	return string(b)
}

func (d *decoder) sketch(what string) *hll {
	return d.parse(what, d.bytes(what+" sketch"))
}

// parse decodes one sketch; nil after an error.
func (d *decoder) parse(what string, b []byte) *hll {
	if d.err != nil {
		return nil
	}
	if len(b) == 0 {
		d.fail("%s sketch: empty", what)
		return nil
	}
	switch kind, b := b[0], b[1:]; kind {
	case kindExact:
		n, k := binary.Uvarint(b)
		if k <= 0 || n > exactMax || uint64(len(b)-k) != 8*n {
			d.fail("%s sketch: exact sketch of %d bytes", what, len(b))
			return nil
		}
		sk := &hll{}
		for i := range int(n) {
			h := binary.BigEndian.Uint64(b[k+8*i:])
			if i > 0 && h <= binary.BigEndian.Uint64(b[k+8*i-8:]) {
				d.fail("%s sketch: hashes must ascend", what)
				return nil
			}
			sk.insert(h)
		}
		return sk
	case kindDense:
		// hyperloglog accepts any precision and sparse sketches; a Month has neither.
		if len(b) < 4 || b[1] != Precision || b[3] != 0 {
			d.fail("%s sketch: not a dense sketch of precision %d", what, Precision)
			return nil
		}
		dense := hyperloglog.NewNoSparse()
		if err := dense.UnmarshalBinary(b); err != nil {
			d.err = fmt.Errorf("%w: %s sketch: %w", ErrEncoding, what, err)
			return nil
		}
		return &hll{dense: dense}
	default:
		d.fail("%s sketch: unknown kind %d", what, kind)
		return nil
	}
}
