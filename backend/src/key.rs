//! Content-addressed object keys.
//!
//! The key is derived from the bytes alone (`<prefix>/<aa>/<bb>/<sha256>.<ext>`),
//! so the same image always lands at the same key and URL: an upload retried
//! after a timeout, or sent twice through a proxy, stores nothing new. The two
//! fan-out levels keep any one directory (or OSS listing page) small.

use sha2::{Digest, Sha256};

use crate::image::ImageKind;

/// Lower-case hex SHA-256 of an upload: the key's name and the result's
/// `sha256`. (The MD5 that OSS reports as an ETag is the store's business:
/// `storage` computes it only where it is compared.)
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// `<prefix>/<aa>/<bb>/<sha256>.<ext>`; `aa` and `bb` are the first two byte
/// pairs of the hex digest. An empty prefix gives `<aa>/<bb>/...`.
pub fn object_key(prefix: &str, sha256_hex: &str, kind: ImageKind) -> String {
    let prefix = prefix.trim_matches('/');
    let aa = sha256_hex.get(0..2).unwrap_or("00");
    let bb = sha256_hex.get(2..4).unwrap_or("00");
    let name = format!("{aa}/{bb}/{sha256_hex}.{}", kind.extension());
    if prefix.is_empty() {
        name
    } else {
        format!("{prefix}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_matches_a_known_value() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn key_layout() {
        let sha = sha256_hex(b"abc");
        assert_eq!(
            object_key("images", &sha, ImageKind::Png),
            format!("images/ba/78/{sha}.png")
        );
        assert_eq!(
            object_key("/a/b/", &sha, ImageKind::Jpeg),
            format!("a/b/ba/78/{sha}.jpg")
        );
        assert_eq!(
            object_key("", &sha, ImageKind::Webp),
            format!("ba/78/{sha}.webp")
        );
    }

    #[test]
    fn same_bytes_same_key_different_bytes_different_key() {
        let a = object_key("i", &sha256_hex(b"one"), ImageKind::Gif);
        let b = object_key("i", &sha256_hex(b"one"), ImageKind::Gif);
        let c = object_key("i", &sha256_hex(b"two"), ImageKind::Gif);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
