package main

import (
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"google.golang.org/protobuf/encoding/prototext"
)

func TestQuotaFlagsChangeOnlyWhatIsGiven(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string // prototext of the change, or the error
	}{
		{[]string{"--storage", "10GiB", "--modules", "200MiB", "--calls", "64", "--tasks", "1000"},
			"storage_bytes:10737418240 module_bytes:209715200 calls:64 tasks:1000"},
		{[]string{"--calls", "0"}, "calls:0"},
		{[]string{"--keep-versions", "3", "--keep-for", "720h"}, "keep_versions:3 keep_for_ms:2592000000"},
		{nil, ""},
		{[]string{"--storage", "lots"}, `--storage: "lots" is not a size`},
		{[]string{"--calls", "-1"}, "calls quota -1 is negative"},
		{[]string{"--keep-for", "a month"}, `--keep-for "a month"`},
	} {
		fs := pflag.NewFlagSet("set", pflag.ContinueOnError)
		var qf quotaFlags
		qf.register(fs)
		if err := fs.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		q, err := qf.build(fs)
		got := ""
		if err != nil {
			got = err.Error()
		} else {
			got = strings.Join(strings.Fields(prototext.MarshalOptions{}.Format(q)), " ")
		}
		if !strings.HasPrefix(got, tc.want) || (tc.want == "" && got != "") {
			t.Errorf("%v: got %q, want %q", tc.args, got, tc.want)
		}
	}
}
