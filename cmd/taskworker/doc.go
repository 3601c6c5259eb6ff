// Command taskworker is the one binary of a TaskWorker network: the node
// pool, the worker daemon, a whole local network (`up`), and the client
// commands. Each subcommand lives in its own file and is listed in the
// commands table in main.go; doMain runs a command line in-process (the
// tests call it) and only main exits. The generated reference of every
// command is docs/cli (`taskworker gen-docs docs/cli`).
//
// Client commands find the pool and a token in --pool/--token, else
// TASKWORKER_POOL/TASKWORKER_TOKEN, else the env file of the running `up`
// ($TASKWORKER_HOME/env).
//
// # Caveats
//
//   - `call` parses flags only before the function name: every word after
//     it is an argument (so `call add -1 5` works, and `call add 1 --timeout
//     5s` passes "--timeout" to the function).
//   - Name checks (function names, worker ids, users) are the pool's: the
//     CLI sends what it is given and shows the pool's answer.
//   - The CLI checks a Starlark script before deploying it, to name the file
//     in errors; the pool checks it again, without the file's name.
package main
