package names

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// ErrInvalid is wrapped by every error of this package.
var ErrInvalid = errors.New("invalid name")

// invalidError says which name broke which rule; it is ErrInvalid.
type invalidError struct{ msg string }

func (e *invalidError) Error() string { return e.msg }
func (e *invalidError) Unwrap() error { return ErrInvalid }

// rule is one kind of name: its first byte, the bytes after it, and how long
// it may be.
type rule struct {
	what       string
	first      func(byte) bool
	rest       func(byte) bool
	minLen     int
	maxLen     int
	allowedMsg string
}

func (r *rule) check(s string) error {
	ok := len(s) >= r.minLen && len(s) <= r.maxLen
	for i := 0; ok && i < len(s); i++ {
		if i == 0 {
			ok = r.first(s[i])
		} else {
			ok = r.rest(s[i])
		}
	}
	if ok {
		return nil
	}
	return &invalidError{fmt.Sprintf("%s %q: %s", r.what, Truncate(s, 64), r.allowedMsg)}
}

func letter(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }
func digit(c byte) bool  { return '0' <= c && c <= '9' }
func hexLower(c byte) bool {
	return digit(c) || 'a' <= c && c <= 'f'
}
func base32Lower(c byte) bool { return 'a' <= c && c <= 'z' || '2' <= c && c <= '7' }
func alnum(c byte) bool       { return letter(c) || digit(c) }

var (
	workerRule = rule{
		what: "worker id", first: alnum, minLen: 1, maxLen: 128,
		rest:       func(c byte) bool { return alnum(c) || c == '_' || c == '.' || c == '-' },
		allowedMsg: "use 1 to 128 letters, digits, '_', '.' or '-', starting with a letter or digit",
	}
	functionRule = rule{
		what: "function name", minLen: 1, maxLen: 200,
		first:      func(c byte) bool { return letter(c) || c == '_' },
		rest:       func(c byte) bool { return alnum(c) || c == '_' || c == '.' || c == ':' || c == '-' },
		allowedMsg: "use 1 to 200 letters, digits, '_', '.', ':' or '-', starting with a letter or '_'",
	}
	userRule = rule{
		what: "user", first: alnum, minLen: 1, maxLen: 128,
		rest:       func(c byte) bool { return alnum(c) || c == '_' || c == '.' || c == '@' || c == '-' },
		allowedMsg: "use 1 to 128 letters, digits, '_', '.', '@' or '-', starting with a letter or digit",
	}
	secretRule = rule{
		what: "secret name", minLen: 1, maxLen: 128,
		first:      func(c byte) bool { return letter(c) || c == '_' },
		rest:       func(c byte) bool { return alnum(c) || c == '_' || c == '.' || c == '-' },
		allowedMsg: "use 1 to 128 letters, digits, '_', '.' or '-', starting with a letter or '_'",
	}
	fileRule = rule{
		what: "file id", first: base32Lower, rest: base32Lower, minLen: 26, maxLen: 26,
		allowedMsg: "a file id is 26 characters a-z and 2-7, as Push returned it",
	}
	sha256Rule = rule{
		what: "SHA-256", first: hexLower, rest: hexLower, minLen: 64, maxLen: 64,
		allowedMsg: "want 64 lowercase hex digits",
	}
)

// WorkerID checks a worker's ID: 1 to 128 letters, digits, '_', '.' or
// '-', starting with a letter or digit.
func WorkerID(id string) error { return workerRule.check(id) }

// Function checks a function's name: 1 to 200 letters, digits, '_', '.',
// ':' or '-', starting with a letter or '_'. Native and deployed functions
// share the rule.
func Function(name string) error { return functionRule.check(name) }

// QualifiedFunction splits a function's name as callers write it: NAME, a
// function of the caller's own namespace or a native one, or OWNER/NAME,
// the function NAME that user OWNER deployed. owner is "" for NAME. Each
// part is checked by its own rule ([Function], [User]); one '/' at most.
func QualifiedFunction(s string) (owner, name string, err error) {
	owner, name, qualified := strings.Cut(s, "/")
	if !qualified {
		return "", s, Function(s)
	}
	if err := User(owner); err != nil {
		return "", "", fmt.Errorf("%w (in %q, OWNER/NAME)", err, Truncate(s, 64))
	}
	if err := Function(name); err != nil {
		return "", "", fmt.Errorf("%w (in %q, OWNER/NAME)", err, Truncate(s, 64))
	}
	return owner, name, nil
}

// User checks a user's name: 1 to 128 letters, digits, '_', '.', '@' or
// '-', starting with a letter or digit.
func User(name string) error { return userRule.check(name) }

// Secret checks a secret's name: 1 to 128 letters, digits, '_', '.' or
// '-', starting with a letter or '_' (so EXTERNAL_API_KEY and
// external-api.key both fit, and a name never holds '/', ':', '{' or '}').
func Secret(name string) error { return secretRule.check(name) }

// FileID checks a file ID as the FileService makes them: 26 characters of
// lowercase base32 (a-z, 2-7).
func FileID(id string) error { return fileRule.check(id) }

// SHA256 checks a SHA-256 in lowercase hex, as modules are named.
func SHA256(s string) error { return sha256Rule.check(s) }

// Truncate cuts s to at most n bytes, without splitting a UTF-8 character,
// and marks the cut with "...": for quoting input that may be huge in an
// error message.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}
