package quota_test

import (
	"fmt"

	"github.com/hivemind/taskworker/internal/quota"
)

func ExampleFormatBytes() {
	for _, n := range []int64{512, 1536, 10 << 30, 200 << 20} {
		fmt.Println(quota.FormatBytes(n))
	}
	// Output:
	// 512 B
	// 1.5 KiB
	// 10 GiB
	// 200 MiB
}
