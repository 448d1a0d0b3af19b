package gguf

import (
	"fmt"
	"strconv"
	"strings"
)

// ValueType is the type of a metadata value, numbered as in the GGUF
// specification (gguf_metadata_value_type).
type ValueType uint32

// The metadata value types.
const (
	TypeUint8   ValueType = 0
	TypeInt8    ValueType = 1
	TypeUint16  ValueType = 2
	TypeInt16   ValueType = 3
	TypeUint32  ValueType = 4
	TypeInt32   ValueType = 5
	TypeFloat32 ValueType = 6
	TypeBool    ValueType = 7
	TypeString  ValueType = 8
	TypeArray   ValueType = 9
	TypeUint64  ValueType = 10
	TypeInt64   ValueType = 11
	TypeFloat64 ValueType = 12
)

var valueTypeNames = [...]string{
	TypeUint8:   "uint8",
	TypeInt8:    "int8",
	TypeUint16:  "uint16",
	TypeInt16:   "int16",
	TypeUint32:  "uint32",
	TypeInt32:   "int32",
	TypeFloat32: "float32",
	TypeBool:    "bool",
	TypeString:  "string",
	TypeArray:   "array",
	TypeUint64:  "uint64",
	TypeInt64:   "int64",
	TypeFloat64: "float64",
}

// Valid reports whether t is one of the types the specification defines.
func (t ValueType) Valid() bool { return t <= TypeFloat64 }

// String returns the specification's name of t ("uint32", "array", ...),
// or "ValueType(N)" for an undefined id.
func (t ValueType) String() string {
	if t.Valid() {
		return valueTypeNames[t]
	}
	return "ValueType(" + strconv.FormatUint(uint64(t), 10) + ")"
}

// fixedSize returns the encoded size in bytes of one value of a fixed-size
// type, or 0 for strings, arrays and undefined types.
func (t ValueType) fixedSize() int {
	switch t {
	case TypeUint8, TypeInt8, TypeBool:
		return 1
	case TypeUint16, TypeInt16:
		return 2
	case TypeUint32, TypeInt32, TypeFloat32:
		return 4
	case TypeUint64, TypeInt64, TypeFloat64:
		return 8
	}
	return 0
}

// minSize returns the fewest bytes one encoded value of type t can occupy.
// The reader uses it to reject an element count that the rest of the file
// cannot hold before allocating anything for it.
func (t ValueType) minSize() int64 {
	switch t {
	case TypeString:
		return 8 // length
	case TypeArray:
		return 4 + 8 // element type, length
	}
	return int64(t.fixedSize())
}

// Value is one metadata value: a scalar, a string, or an array whose
// elements all have one type. Arrays may nest: an array of arrays holds a
// Value per element, and each inner array has its own element type.
//
// The zero Value is invalid; make values with ValueOf or read them from a
// File.
type Value struct {
	typ  ValueType
	elem ValueType // element type when typ is TypeArray
	x    any       // the Go value; see Interface
}

// Type returns the type of v.
func (v Value) Type() ValueType { return v.typ }

// ElemType returns the element type of an array value. It is meaningless
// for other values.
func (v Value) ElemType() ValueType { return v.elem }

// Len returns the number of elements of an array value, or the length in
// bytes of a string value; 0 for other values.
func (v Value) Len() int {
	switch x := v.x.(type) {
	case string:
		return len(x)
	case []uint8:
		return len(x)
	case []int8:
		return len(x)
	case []uint16:
		return len(x)
	case []int16:
		return len(x)
	case []uint32:
		return len(x)
	case []int32:
		return len(x)
	case []float32:
		return len(x)
	case []bool:
		return len(x)
	case []string:
		return len(x)
	case []uint64:
		return len(x)
	case []int64:
		return len(x)
	case []float64:
		return len(x)
	case []Value:
		return len(x)
	}
	return 0
}

// Interface returns v as a Go value: uint8, int8, uint16, int16, uint32,
// int32, float32, bool, string, uint64, int64 or float64 for scalars; a
// slice of one of those for an array of scalars or strings ([]uint8,
// []string, ...); []Value for an array of arrays. Slices are shared with v
// and must not be modified.
func (v Value) Interface() any { return v.x }

// ValueOf returns the Value that holds x, which must be one of the types
// Interface returns, or a Value (returned as is). Plain int and uint are
// rejected: GGUF files fix the width of every integer, so the caller must
// choose it (most hyperparameters are uint32). Every element of a []Value
// must itself be an array.
func ValueOf(x any) (Value, error) {
	scalar := func(t ValueType) (Value, error) { return Value{typ: t, x: x}, nil }
	array := func(t ValueType) (Value, error) { return Value{typ: TypeArray, elem: t, x: x}, nil }
	switch x := x.(type) {
	case Value:
		if !x.typ.Valid() || x.x == nil {
			return Value{}, fmt.Errorf("gguf: invalid zero Value")
		}
		return x, nil
	case uint8:
		return scalar(TypeUint8)
	case int8:
		return scalar(TypeInt8)
	case uint16:
		return scalar(TypeUint16)
	case int16:
		return scalar(TypeInt16)
	case uint32:
		return scalar(TypeUint32)
	case int32:
		return scalar(TypeInt32)
	case float32:
		return scalar(TypeFloat32)
	case bool:
		return scalar(TypeBool)
	case string:
		return scalar(TypeString)
	case uint64:
		return scalar(TypeUint64)
	case int64:
		return scalar(TypeInt64)
	case float64:
		return scalar(TypeFloat64)
	case []uint8:
		return array(TypeUint8)
	case []int8:
		return array(TypeInt8)
	case []uint16:
		return array(TypeUint16)
	case []int16:
		return array(TypeInt16)
	case []uint32:
		return array(TypeUint32)
	case []int32:
		return array(TypeInt32)
	case []float32:
		return array(TypeFloat32)
	case []bool:
		return array(TypeBool)
	case []string:
		return array(TypeString)
	case []uint64:
		return array(TypeUint64)
	case []int64:
		return array(TypeInt64)
	case []float64:
		return array(TypeFloat64)
	case []Value:
		for i, e := range x {
			if e.typ != TypeArray || e.x == nil {
				return Value{}, fmt.Errorf("gguf: array of arrays: element %d is %s, not an array", i, e.typ)
			}
		}
		return array(TypeArray)
	case int, uint:
		return Value{}, fmt.Errorf("gguf: %T has no fixed width; use a sized integer type such as uint32", x)
	}
	return Value{}, fmt.Errorf("gguf: no GGUF value type for %T", x)
}

// String formats v for people: numbers and booleans as Go prints them,
// strings quoted, arrays as their type and length followed by at most the
// first eight elements.
func (v Value) String() string {
	switch x := v.x.(type) {
	case nil:
		return "<invalid>"
	case string:
		return strconv.Quote(x)
	case []Value:
		var b strings.Builder
		fmt.Fprintf(&b, "[%d]array{", len(x))
		for i, e := range x {
			if i == 8 {
				b.WriteString(", ...")
				break
			}
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString(e.String())
		}
		b.WriteString("}")
		return b.String()
	}
	if v.typ != TypeArray {
		return fmt.Sprint(v.x)
	}
	var b strings.Builder
	n := v.Len()
	fmt.Fprintf(&b, "[%d]%s{", n, v.elem)
	for i := 0; i < n && i <= 8; i++ {
		if i == 8 {
			b.WriteString(", ...")
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		if s, ok := v.x.([]string); ok {
			b.WriteString(strconv.Quote(s[i]))
		} else {
			fmt.Fprint(&b, indexAny(v.x, i))
		}
	}
	b.WriteString("}")
	return b.String()
}

// indexAny returns element i of a slice of scalars as an any.
func indexAny(x any, i int) any {
	switch x := x.(type) {
	case []uint8:
		return x[i]
	case []int8:
		return x[i]
	case []uint16:
		return x[i]
	case []int16:
		return x[i]
	case []uint32:
		return x[i]
	case []int32:
		return x[i]
	case []float32:
		return x[i]
	case []bool:
		return x[i]
	case []uint64:
		return x[i]
	case []int64:
		return x[i]
	case []float64:
		return x[i]
	}
	return nil
}
