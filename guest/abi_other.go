//go:build !wasip1

package guest

// Outside WebAssembly there is no host: the package builds, for its
// documentation and tests, but Run, Log and Secret cannot be used.

const notWasm = "guest: Run, Log and Secret work only in a module built with GOOS=wasip1 GOARCH=wasm"

func readInput() []byte                { panic(notWasm) }
func setOutput([]byte)                 { panic(notWasm) }
func setError(string)                  { panic(notWasm) }
func hostLog(Level, string)            { panic(notWasm) }
func secretGet(string) ([]byte, error) { panic(notWasm) }
