// Package jsonenc holds the pieces of hand-written JSON encoders that hot
// paths share (a file's manifest, a call token's claims): each writes
// exactly the bytes encoding/json would, without its reflection.
package jsonenc

import "encoding/json"

// AppendString appends s quoted as encoding/json quotes it: as it is when
// every byte is printable ASCII that JSON and encoding/json's HTML escaping
// leave alone (ids, names, hosts, hashes, base64: nearly every string of a
// manifest or a token), else through encoding/json.
func AppendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s) // a string always encodes
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// AppendStrings appends ss as encoding/json encodes a []string: null when
// it is nil, else an array of AppendString's strings.
func AppendStrings(b []byte, ss []string) []byte {
	if ss == nil {
		return append(b, "null"...)
	}
	b = append(b, '[')
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b = AppendString(b, s)
	}
	return append(b, ']')
}
