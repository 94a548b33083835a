//! Content-addressed object keys.
//!
//! The key is derived from the bytes alone (`<prefix>/<aa>/<bb>/<sha256>.<ext>`),
//! so the same image always lands at the same key and URL: an upload retried
//! after a timeout, or sent twice through a proxy, stores nothing new. The two
//! fan-out levels keep any one directory (or OSS listing page) small.

use md5::Md5;
use sha2::{Digest, Sha256};

use crate::image::ImageKind;

/// The digests of an upload, computed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digests {
    /// Lower-case hex SHA-256: the key's name and the result's `sha256`.
    pub sha256_hex: String,
    /// Lower-case hex MD5: what OSS reports as the ETag of a simple PUT.
    pub md5_hex: String,
}

impl Digests {
    pub fn of(data: &[u8]) -> Self {
        Digests {
            sha256_hex: hex::encode(Sha256::digest(data)),
            md5_hex: hex::encode(Md5::digest(data)),
        }
    }
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
    fn digests_match_known_values() {
        let d = Digests::of(b"abc");
        assert_eq!(
            d.sha256_hex,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(d.md5_hex, "900150983cd24fb0d6963f7d28e17f72");
    }

    #[test]
    fn key_layout() {
        let sha = Digests::of(b"abc").sha256_hex;
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
        let a = object_key("i", &Digests::of(b"one").sha256_hex, ImageKind::Gif);
        let b = object_key("i", &Digests::of(b"one").sha256_hex, ImageKind::Gif);
        let c = object_key("i", &Digests::of(b"two").sha256_hex, ImageKind::Gif);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
