package guest

// Run calls the function registered under name with this call's input and
// hands its result to the host. It is the body of the exported symbol:
//
//	//go:wasmexport add
//	func add() int32 { return guest.Run("add") }
//
// Run returns 0 when the function succeeded and 1 when it failed, with the
// error message set through the Extism ABI; return that value unchanged.
func Run(name string) int32 {
	output, err := invoke(name, readInput())
	if err != nil {
		setError(err.Error())
		return 1
	}
	setOutput(output)
	return 0
}

// Level is the severity of a log line; the values are those of log/slog.
type Level int32

// The levels a guest logs at.
const (
	LevelDebug Level = -4
	LevelInfo  Level = 0
	LevelWarn  Level = 4
	LevelError Level = 8
)

// Log writes msg at level to the worker's log, attributed to this function.
// The host limits the length of a line and the number of lines per call;
// what is over the limit is dropped and counted, not an error.
func Log(level Level, msg string) {
	hostLog(level, msg)
}
