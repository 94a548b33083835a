//! What an upload's bytes are, decided from the bytes themselves.
//!
//! Clients' file names and declared types are hints at best, so the stored
//! object's type (and its key's extension) comes from magic-number detection
//! by the `infer` crate. A declared `content_type` is still checked: if it
//! contradicts the bytes the client is confused about what it sent, and
//! storing it anyway would hide that.

/// An accepted image format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageKind {
    Jpeg,
    Png,
    Gif,
    Webp,
}

impl ImageKind {
    pub fn mime(self) -> &'static str {
        match self {
            ImageKind::Jpeg => "image/jpeg",
            ImageKind::Png => "image/png",
            ImageKind::Gif => "image/gif",
            ImageKind::Webp => "image/webp",
        }
    }

    /// The extension used in object keys.
    pub fn extension(self) -> &'static str {
        match self {
            ImageKind::Jpeg => "jpg",
            ImageKind::Png => "png",
            ImageKind::Gif => "gif",
            ImageKind::Webp => "webp",
        }
    }

    /// The content type to serve for a stored key, from its extension.
    pub fn from_extension(ext: &str) -> Option<ImageKind> {
        [
            ImageKind::Jpeg,
            ImageKind::Png,
            ImageKind::Gif,
            ImageKind::Webp,
        ]
        .into_iter()
        .find(|kind| kind.extension() == ext)
    }

    fn from_mime(mime: &str) -> Option<ImageKind> {
        match mime {
            "image/jpeg" | "image/jpg" | "image/pjpeg" => Some(ImageKind::Jpeg),
            "image/png" => Some(ImageKind::Png),
            "image/gif" => Some(ImageKind::Gif),
            "image/webp" => Some(ImageKind::Webp),
            _ => None,
        }
    }
}

/// Why bytes were not accepted as an image.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    #[error("the bytes are {detected}, not a JPEG, PNG, GIF or WebP image")]
    Unsupported { detected: String },
    #[error("the bytes are not a recognised file type (they start with {prefix}); expected JPEG, PNG, GIF or WebP")]
    Unrecognised { prefix: String },
    #[error("declared content_type {declared:?} contradicts the bytes, which are {detected}")]
    Mismatch {
        declared: String,
        detected: &'static str,
    },
}

/// Detects the image format of `data`.
pub fn detect(data: &[u8]) -> Result<ImageKind, ImageError> {
    match infer::get(data) {
        Some(found) => {
            ImageKind::from_mime(found.mime_type()).ok_or_else(|| ImageError::Unsupported {
                detected: found.mime_type().to_string(),
            })
        }
        None => Err(ImageError::Unrecognised {
            prefix: format!("0x{}", hex::encode(&data[..data.len().min(8)])),
        }),
    }
}

/// Checks a declared content type against the detected kind. The comparison
/// ignores case, parameters (`; q=1`) and common aliases (`image/jpg`). An
/// empty declaration counts as none.
pub fn check_declared(declared: Option<&str>, kind: ImageKind) -> Result<(), ImageError> {
    let Some(declared) = declared else {
        return Ok(());
    };
    let essence = declared
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if essence.is_empty() || ImageKind::from_mime(&essence) == Some(kind) {
        return Ok(());
    }
    Err(ImageError::Mismatch {
        declared: declared.to_string(),
        detected: kind.mime(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
    const JPEG: &[u8] = b"\xff\xd8\xff\xe0\0\x10JFIF\0";
    const GIF: &[u8] = b"GIF89a\x01\0\x01\0";
    const WEBP: &[u8] = b"RIFF\x24\0\0\0WEBPVP8 ";

    #[test]
    fn detection_table() {
        let pdf: &[u8] = b"%PDF-1.7\n";
        let zip: &[u8] = b"PK\x03\x04\x14\0\0\0";
        let cases: &[(&[u8], Result<ImageKind, &str>)] = &[
            (PNG, Ok(ImageKind::Png)),
            (JPEG, Ok(ImageKind::Jpeg)),
            (GIF, Ok(ImageKind::Gif)),
            (WEBP, Ok(ImageKind::Webp)),
            (pdf, Err("application/pdf")),
            (zip, Err("application/zip")),
            (b"hello world", Err("0x68656c6c6f20776f")),
            (b"\x89PN", Err("0x89504e")),
        ];
        for (bytes, expected) in cases {
            match (detect(bytes), expected) {
                (Ok(kind), Ok(want)) => assert_eq!(kind, *want),
                (Err(e), Err(needle)) => {
                    assert!(e.to_string().contains(needle), "{e} should name {needle}")
                }
                (got, want) => panic!("{bytes:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn declared_types_are_normalised() {
        let ok: &[(Option<&str>, ImageKind)] = &[
            (None, ImageKind::Png),
            (Some(""), ImageKind::Png),
            (Some("image/png"), ImageKind::Png),
            (Some("IMAGE/PNG"), ImageKind::Png),
            (Some("image/JPEG; q=1"), ImageKind::Jpeg),
            (Some(" image/jpg "), ImageKind::Jpeg),
            (Some("image/webp;charset=binary"), ImageKind::Webp),
        ];
        for (declared, kind) in ok {
            assert_eq!(check_declared(*declared, *kind), Ok(()), "{declared:?}");
        }
        let err = check_declared(Some("image/gif"), ImageKind::Png).expect_err("mismatch");
        assert!(err.to_string().contains("image/gif") && err.to_string().contains("image/png"));
        assert!(check_declared(Some("text/plain"), ImageKind::Jpeg).is_err());
    }

    #[test]
    fn extensions_round_trip() {
        for kind in [
            ImageKind::Jpeg,
            ImageKind::Png,
            ImageKind::Gif,
            ImageKind::Webp,
        ] {
            assert_eq!(ImageKind::from_extension(kind.extension()), Some(kind));
        }
        assert_eq!(ImageKind::from_extension("exe"), None);
    }
}
