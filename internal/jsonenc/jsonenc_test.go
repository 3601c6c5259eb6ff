package jsonenc_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/hivemind/taskworker/internal/jsonenc"
)

func ExampleAppendString() {
	b := []byte(`{"id":`)
	b = jsonenc.AppendString(b, "f_1a2b")
	b = append(b, `,"name":`...)
	b = jsonenc.AppendString(b, "a <b> \"c\"\n")
	fmt.Println(string(append(b, '}')))
	// Output: {"id":"f_1a2b","name":"a \u003cb\u003e \"c\"\n"}
}

func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "plain", `quote " and \ backslash`, "<&>", "\x00\x1f\x7f", "é ü 世界", "\xff\xfe bad utf-8", "\u2028\u2029"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := jsonenc.AppendString([]byte("x"), s); !bytes.Equal(got[1:], want) || got[0] != 'x' {
			t.Fatalf("AppendString(%q) = %s, want %s after the prefix", s, got, want)
		}
	})
}

func TestAppendStrings(t *testing.T) {
	for _, ss := range [][]string{nil, {}, {"a"}, {"a", "<b>", "\xff"}} {
		want, _ := json.Marshal(ss)
		if got := jsonenc.AppendStrings(nil, ss); !bytes.Equal(got, want) {
			t.Errorf("AppendStrings(%q) = %s, want %s", ss, got, want)
		}
	}
}
