package shardstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// A shard file is header | payload | footer, little-endian:
//
//	header  magic "TWSHARD\x00" | version u16 | header length u16 | block u64 | shard u16 |
//	        file ID length u8 | write ID length u8 | file ID | write ID | CRC32C of the header so far u32
//	payload the shard's bytes
//	footer  payload length u64 | CRC32C of the payload u32 | magic "TWSHEND\x00" | CRC32C of the footer so far u32
//
// The header names the shard, so a file under the wrong name (a misplaced rename, a restored backup) is
// detected; the footer is written last, so a file cut short has no valid footer; the payload length must
// equal the bytes between them. A file passes only if all of that holds and the payload's CRC32C matches.
// Why CRC32C here: docs/RATIONALE.md ("Why CRC32C on disk?").
const (
	formatVersion  = 1
	headerMagic    = "TWSHARD\x00"
	footerMagic    = "TWSHEND\x00"
	fixedHeaderLen = 8 + 2 + 2 + 8 + 2 + 1 + 1
	maxHeaderLen   = fixedHeaderLen + 2*MaxIDLen + 4
	footerLen      = 8 + 4 + 8 + 4
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errFormat marks a header or footer that does not parse; callers wrap it into a CorruptError.
var errFormat = errors.New("bad shard file format")

func headerLen(k Key) int { return fixedHeaderLen + len(k.FileID) + len(k.WriteID) + 4 }

func encodeHeader(k Key) []byte {
	n := headerLen(k)
	b := make([]byte, 0, n)
	b = append(b, headerMagic...)
	b = binary.LittleEndian.AppendUint16(b, formatVersion)
	b = binary.LittleEndian.AppendUint16(b, uint16(n))
	b = binary.LittleEndian.AppendUint64(b, uint64(k.Block))
	b = binary.LittleEndian.AppendUint16(b, uint16(k.Shard))
	b = append(b, byte(len(k.FileID)), byte(len(k.WriteID)))
	b = append(b, k.FileID...)
	b = append(b, k.WriteID...)
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// decodeHeader parses the header at the start of b and returns the key it names and its length.
func decodeHeader(b []byte) (Key, int, error) {
	if len(b) < fixedHeaderLen {
		return Key{}, 0, fmt.Errorf("%w: %d bytes, too short for a header", errFormat, len(b))
	}
	if string(b[:8]) != headerMagic {
		return Key{}, 0, fmt.Errorf("%w: no header magic", errFormat)
	}
	if v := binary.LittleEndian.Uint16(b[8:]); v != formatVersion {
		return Key{}, 0, fmt.Errorf("%w: format version %d, this build reads %d", errFormat, v, formatVersion)
	}
	n := int(binary.LittleEndian.Uint16(b[10:]))
	fileLen, writeLen := int(b[22]), int(b[23])
	if n != fixedHeaderLen+fileLen+writeLen+4 || n > len(b) {
		return Key{}, 0, fmt.Errorf("%w: header length %d does not fit its fields or the %d bytes", errFormat, n, len(b))
	}
	if got, want := crc32.Checksum(b[:n-4], castagnoli), binary.LittleEndian.Uint32(b[n-4:]); got != want {
		return Key{}, 0, fmt.Errorf("%w: header checksum %08x, recorded %08x", errFormat, got, want)
	}
	block := binary.LittleEndian.Uint64(b[12:])
	k := Key{
		FileID:  string(b[fixedHeaderLen : fixedHeaderLen+fileLen]),
		WriteID: string(b[fixedHeaderLen+fileLen : n-4]),
		Block:   int64(block),
		Shard:   int(binary.LittleEndian.Uint16(b[20:])),
	}
	if err := k.Validate(); err != nil {
		return Key{}, 0, fmt.Errorf("%w: header names an invalid key: %v", errFormat, err)
	}
	return k, n, nil
}

func encodeFooter(payloadLen int64, payloadCRC uint32) []byte {
	b := make([]byte, 0, footerLen)
	b = binary.LittleEndian.AppendUint64(b, uint64(payloadLen))
	b = binary.LittleEndian.AppendUint32(b, payloadCRC)
	b = append(b, footerMagic...)
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// decodeFooter parses a footer, exactly footerLen bytes.
func decodeFooter(b []byte) (payloadLen int64, payloadCRC uint32, err error) {
	if len(b) != footerLen {
		return 0, 0, fmt.Errorf("%w: footer of %d bytes", errFormat, len(b))
	}
	if string(b[12:20]) != footerMagic {
		return 0, 0, fmt.Errorf("%w: no footer magic", errFormat)
	}
	if got, want := crc32.Checksum(b[:20], castagnoli), binary.LittleEndian.Uint32(b[20:]); got != want {
		return 0, 0, fmt.Errorf("%w: footer checksum %08x, recorded %08x", errFormat, got, want)
	}
	n := binary.LittleEndian.Uint64(b)
	if n > 1<<62 {
		return 0, 0, fmt.Errorf("%w: payload length %d", errFormat, n)
	}
	return int64(n), binary.LittleEndian.Uint32(b[8:]), nil
}
