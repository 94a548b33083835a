// The contract between upload clients, probegate and the uploader backend.
//
// Compatibility rule: existing field ids and names never change; new fields
// are optional and new methods are additive.

namespace rs uploader
namespace py uploader

// Image bytes and what the client says about them.
struct UploadRequest {
  // The raw image bytes (JPEG, PNG, GIF or WebP). At most
  // `server.max_upload_bytes` of the backend (10 MiB by default).
  1: required binary data,
  // The client's name for the file; informational only (logged), never part
  // of the key, so that the same bytes always give the same URL.
  2: optional string filename,
  // A MIME type the client expects, e.g. "image/png". When given it must
  // match the type detected from the bytes, or the upload is refused.
  3: optional string content_type,
}

// Where the stored image can be fetched.
struct UploadResult {
  // public_base_url + key.
  1: required string url,
  // Content-addressed object key: key_prefix/aa/bb/<sha256>.<ext>.
  2: required string key,
  // Number of bytes stored.
  3: required i64 size,
  // The detected MIME type, e.g. "image/jpeg".
  4: optional string content_type,
  // Lower-case hex SHA-256 of the bytes.
  5: optional string sha256,
}

// Error codes carried by UploadError.code. Clients may rely on these values.
const i32 ERROR_EMPTY = 1                // data was empty
const i32 ERROR_TOO_LARGE = 2            // data is larger than max_upload_bytes
const i32 ERROR_INVALID_IMAGE = 3        // the bytes are not JPEG, PNG, GIF or WebP
const i32 ERROR_CONTENT_TYPE_MISMATCH = 4 // content_type contradicts the bytes
const i32 ERROR_STORAGE_UNAVAILABLE = 5  // the object store failed or timed out; retry later
const i32 ERROR_INTEGRITY = 6            // the store returned a digest that does not match the bytes; retry

exception UploadError {
  // One of the ERROR_* constants above.
  1: required i32 code,
  // A human-readable explanation naming the offending value.
  2: required string message,
}

service Uploader {
  // Liveness of the Thrift path; returns "pong".
  string ping(),

  // Stores the image and returns its URL. Idempotent: the same bytes always
  // give the same key and URL, so a retry is always safe.
  UploadResult upload(1: UploadRequest req) throws (1: UploadError err),

  // Fire-and-forget: the server logs the note and sends no reply. Exists so
  // that clients and proxies can exercise oneway calls.
  oneway void touch(1: string note),
}
