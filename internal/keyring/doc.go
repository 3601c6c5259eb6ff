// Package keyring is TaskWorker's one key hierarchy. Master keys, held only
// by pool processes in a key file, wrap data keys; every file version and
// every secret gets a data key of its own, and its wrapped form is stored
// next to what it encrypts (a manifest, a secret's record in etcd). What
// workers store and what etcd holds is therefore ciphertext, and a master
// key that leaks nothing has leaked nothing.
//
// There are only a few types:
//
//   - [Keyring]: the master keys of a key file, one of them current. It
//     wraps data keys under the current master key, unwraps them under
//     whichever master key wrapped them, and rewraps old ones after
//     [Keyring.Rotate], without touching what the data keys encrypt.
//   - [DataKey]: 32 random bytes, the key of one file version or secret.
//   - [Sealer]: AES-256-GCM under a data key, with the nonce derived from a
//     block's index, so that the same data key never encrypts two blocks
//     with one nonce, and a block moved to another index does not open.
//
// Wrapping binds a data key to a context string (say, the file id and
// version it belongs to) as additional authenticated data: a wrapped key
// copied onto another file's manifest does not unwrap there.
//
// # Caveats
//
//   - Each data key must seal each block index at most once: a file
//     version is written once, and repair rebuilds shards of ciphertext
//     without sealing again. Rewriting a block under the same data key would
//     reuse a nonce; write a new version (a new data key) instead.
//   - Pool replicas must hold the same key file: the operator copies it to
//     each replica, and rotates on one replica then copies again. A replica
//     missing the master key that wrapped a data key cannot unwrap it and
//     says which key and which file it needs.
//   - The key file is the root of the hierarchy: it is written owner-only
//     (0600) and refused if anyone else may read it. Losing it loses every
//     file and secret; back it up apart from etcd's snapshots.
package keyring
