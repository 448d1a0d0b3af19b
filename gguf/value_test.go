package gguf

import (
	"bytes"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
)

// getterFile is a File holding values that exercise the typed getters.
func getterFile(t *testing.T) *File {
	t.Helper()
	b := NewBuilder()
	kvs := []KV{
		{"u8", mustValue(uint8(7))},
		{"i8", mustValue(int8(-7))},
		{"u32", mustValue(uint32(4096))},
		{"i32", mustValue(int32(32))},
		{"u64big", mustValue(uint64(math.MaxUint64))},
		{"i64min", mustValue(int64(math.MinInt64))},
		{"f32", mustValue(float32(0.5))},
		{"f64", mustValue(1e-300)},
		{"b", mustValue(true)},
		{"s", mustValue("llama")},
		{"ss", mustValue([]string{"a", "b"})},
		{"f32s", mustValue([]float32{1, 2})},
		{"f64s", mustValue([]float64{1.5, -2})},
		{"i32s", mustValue([]int32{-1, 2})},
		{"u8s", mustValue([]uint8{0, 255})},
		{"u32s", mustValue([]uint32{0, math.MaxUint32})},
		{"u64s", mustValue([]uint64{1, math.MaxUint64})},
		{"i64s", mustValue([]int64{math.MinInt64, 5})},
		{"nested", mustValue([]Value{mustValue([]uint8{1})})},
	}
	for _, kv := range kvs {
		if err := b.Set(kv.Key, kv.Value); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if _, err := b.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	f, err := DecodeBytes(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestGetters(t *testing.T) {
	f := getterFile(t)
	tests := []struct {
		name string
		get  func() (any, error)
		want any
		err  error // sentinel, when the call must fail
	}{
		{"Uint u8", func() (any, error) { return f.Uint("u8") }, uint64(7), nil},
		{"Uint u32", func() (any, error) { return f.Uint("u32") }, uint64(4096), nil},
		{"Uint i32", func() (any, error) { return f.Uint("i32") }, uint64(32), nil},
		{"Uint negative", func() (any, error) { return f.Uint("i8") }, nil, ErrWrongType},
		{"Uint u64 max", func() (any, error) { return f.Uint("u64big") }, uint64(math.MaxUint64), nil},
		{"Uint string", func() (any, error) { return f.Uint("s") }, nil, ErrWrongType},
		{"Uint missing", func() (any, error) { return f.Uint("nope") }, nil, ErrNotFound},
		{"Int i8", func() (any, error) { return f.Int("i8") }, int64(-7), nil},
		{"Int i64 min", func() (any, error) { return f.Int("i64min") }, int64(math.MinInt64), nil},
		{"Int u64 too big", func() (any, error) { return f.Int("u64big") }, nil, ErrWrongType},
		{"Int float", func() (any, error) { return f.Int("f32") }, nil, ErrWrongType},
		{"Float f32", func() (any, error) { return f.Float("f32") }, 0.5, nil},
		{"Float f64", func() (any, error) { return f.Float("f64") }, 1e-300, nil},
		{"Float int", func() (any, error) { return f.Float("u32") }, nil, ErrWrongType},
		{"Bool", func() (any, error) { return f.Bool("b") }, true, nil},
		{"Bool int", func() (any, error) { return f.Bool("u8") }, nil, ErrWrongType},
		{"String", func() (any, error) { return f.String("s") }, "llama", nil},
		{"String array", func() (any, error) { return f.String("ss") }, nil, ErrWrongType},
		{"String missing", func() (any, error) { return f.String("nope") }, nil, ErrNotFound},
		{"Strings", func() (any, error) { return f.Strings("ss") }, []string{"a", "b"}, nil},
		{"Strings of floats", func() (any, error) { return f.Strings("f32s") }, nil, ErrWrongType},
		{"Strings scalar", func() (any, error) { return f.Strings("s") }, nil, ErrWrongType},
		{"Float32s", func() (any, error) { return f.Float32s("f32s") }, []float32{1, 2}, nil},
		{"Float32s of float64", func() (any, error) { return f.Float32s("f64s") }, []float32{1.5, -2}, nil},
		{"Float32s of ints", func() (any, error) { return f.Float32s("i32s") }, nil, ErrWrongType},
		{"Int32s", func() (any, error) { return f.Int32s("i32s") }, []int32{-1, 2}, nil},
		{"Int32s of uint8", func() (any, error) { return f.Int32s("u8s") }, []int32{0, 255}, nil},
		{"Int32s out of range", func() (any, error) { return f.Int32s("u32s") }, nil, ErrWrongType},
		{"Int32s of int64 min", func() (any, error) { return f.Int32s("i64s") }, nil, ErrWrongType},
		{"Int32s of strings", func() (any, error) { return f.Int32s("ss") }, nil, ErrWrongType},
		{"Int32s of nested", func() (any, error) { return f.Int32s("nested") }, nil, ErrWrongType},
		{"Ints of uint32", func() (any, error) { return f.Ints("u32s") }, []int64{0, math.MaxUint32}, nil},
		{"Ints of int64", func() (any, error) { return f.Ints("i64s") }, []int64{math.MinInt64, 5}, nil},
		{"Ints uint64 too big", func() (any, error) { return f.Ints("u64s") }, nil, ErrWrongType},
		{"Ints scalar", func() (any, error) { return f.Ints("u8") }, nil, ErrWrongType},
		{"Ints missing", func() (any, error) { return f.Ints("nope") }, nil, ErrNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.get()
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("got %v, %v; want %v", got, err, tc.err)
				}
				if !strings.HasPrefix(err.Error(), "gguf: key ") {
					t.Errorf("error %q does not name the key", err)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %#v, %v; want %#v", got, err, tc.want)
			}
		})
	}
	// Slices returned are copies: changing one leaves the File alone.
	ss, _ := f.Strings("ss")
	ss[0] = "changed"
	if again, _ := f.Strings("ss"); again[0] != "a" {
		t.Error("Strings returned the File's own slice")
	}
}

func TestValueString(t *testing.T) {
	tests := []struct {
		x    any
		want string
	}{
		{uint32(5), "5"},
		{int8(-3), "-3"},
		{float32(0.25), "0.25"},
		{true, "true"},
		{"a\"b", `"a\"b"`},
		{[]int32{1, 2}, "[2]int32{1, 2}"},
		{[]string{"x"}, `[1]string{"x"}`},
		{[]uint8{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, "[10]uint8{1, 2, 3, 4, 5, 6, 7, 8, ...}"},
		{[]Value{mustValue([]bool{true})}, "[1]array{[1]bool{true}}"},
		{[]float64{}, "[0]float64{}"},
	}
	for _, tc := range tests {
		if got := mustValue(tc.x).String(); got != tc.want {
			t.Errorf("%#v: %s, want %s", tc.x, got, tc.want)
		}
	}
	if got := (Value{}).String(); got != "<invalid>" {
		t.Errorf("zero Value: %s", got)
	}
}

func TestValueOf(t *testing.T) {
	for _, x := range []any{uint8(1), int8(1), uint16(1), int16(1), uint32(1), int32(1), float32(1), bool(true), "s",
		uint64(1), int64(1), float64(1), []uint8{}, []int8{}, []uint16{}, []int16{}, []uint32{}, []int32{},
		[]float32{}, []bool{}, []string{}, []uint64{}, []int64{}, []float64{}, []Value{}} {
		v, err := ValueOf(x)
		if err != nil {
			t.Fatalf("%T: %v", x, err)
		}
		if !reflect.DeepEqual(v.Interface(), x) || !v.Type().Valid() {
			t.Errorf("%T: got %#v of type %s", x, v.Interface(), v.Type())
		}
		if again, err := ValueOf(v); err != nil || !reflect.DeepEqual(again, v) {
			t.Errorf("ValueOf(Value) of %T: %v, %v", x, again, err)
		}
	}
	if s := ValueType(13).String(); s != "ValueType(13)" {
		t.Errorf("undefined ValueType: %s", s)
	}
	if s := TypeArray.String(); s != "array" {
		t.Errorf("TypeArray: %s", s)
	}
}
