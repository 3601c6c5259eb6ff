package function

import (
	"reflect"
	"testing"
)

// FuzzScalarPath checks that the scalar fast path binds exactly what the
// general path does, and fails (so that the general path answers) where it
// would fail: for every input, the arguments bound with the fast path on and
// off are equal, and so are the errors.
func FuzzScalarPath(f *testing.F) {
	for _, seed := range []string{
		`[1, "a", true, 2, 3, -4]`, `[1,"a",false,2.5,3,-4]`, `[ 9223372036854775807 , "", true, 1e3, 255, -128 ]`,
		`[1, "a\"b", true, 2, 3, 4]`, `[1, "é", true, 2, 3, 4]`, `[01, "a", true, 2, 3, 4]`, `[-0, "a", true, -0, 0, -0]`,
		`[1, "a", true, 2, 256, 4]`, `[1, "a", true, 2, 3, -129]`, `[1, "a", null, 2, 3, 4]`, `[1, "a", true, 2, 3]`,
		`[1, "a", true, 2, 3, 4, 5]`, `[1, "a", true, 2, 3, 4,]`, `[1 2]`, `["1", "a", true, 2, 3, 4]`, `[1, a, true, 2, 3, 4]`,
		`[1, "a", True, 2, 3, 4]`, `[1, "a", true, 2, 3, 4] x`, `[1, "a\u0041", true, 2, 3, 4]`, `[1.0, "a", true, 2, 3, 4]`,
		`[-, "a", true, 2, 3, 4]`, `[1, "a`, `[`, `[]`, `[1, "a", true, 18446744073709551616, 3, 4]`, "[1, \"a\x01\", true, 2, 3, 4]",
	} {
		f.Add(seed)
	}
	fn, err := Bind("scalars", func(a int, s string, b bool, x float64, u uint8, i int8) string { return "" })
	if err != nil {
		f.Fatal(err)
	}
	if !fn.scalars {
		f.Fatal("a function of scalars does not take the fast path")
	}
	f.Fuzz(func(t *testing.T, input string) {
		fast, fastErr := fn.decode([]byte(input))
		general := *fn
		general.scalars = false
		slow, slowErr := general.decode([]byte(input))
		if (fastErr == nil) != (slowErr == nil) || fastErr != nil && fastErr.Error() != slowErr.Error() {
			t.Fatalf("%q: errors differ: fast path %v, general %v", input, fastErr, slowErr)
		}
		if len(fast) != len(slow) {
			t.Fatalf("%q: %d arguments with the fast path, %d without", input, len(fast), len(slow))
		}
		for i := range fast {
			if !reflect.DeepEqual(fast[i].Interface(), slow[i].Interface()) {
				t.Fatalf("%q: argument %d is %#v with the fast path, %#v without", input, i+1, fast[i].Interface(), slow[i].Interface())
			}
		}
	})
}
