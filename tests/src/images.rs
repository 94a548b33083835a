//! Image bytes for upload tests.
//!
//! The base files are real 16x16 images (see `tests/fixtures/README.md`).
//! Variants are made by adding a PNG `tEXt` chunk: decoders skip it, so the
//! result is still a valid PNG, but its bytes (and so its content-addressed
//! key) differ, and its length can be made exact for size-limit tests.

/// A valid PNG (1,020 bytes).
pub const PNG: &[u8] = include_bytes!("../fixtures/image.png");
/// A valid baseline JPEG with a JFIF header (543 bytes).
pub const JPEG: &[u8] = include_bytes!("../fixtures/image.jpg");
/// A valid GIF89a (405 bytes).
pub const GIF: &[u8] = include_bytes!("../fixtures/image.gif");
/// A valid WebP (432 bytes).
pub const WEBP: &[u8] = include_bytes!("../fixtures/image.webp");
/// A valid BMP: a real image, but of a type the backend refuses.
pub const BMP: &[u8] = include_bytes!("../fixtures/image.bmp");

/// Bytes that are no image at all.
pub const NOT_AN_IMAGE: &[u8] = b"%PDF-1.4\nthis is not an image, it only wants to be stored\n";

/// Every accepted type: (bytes, MIME type, the extension the key ends in).
pub const ALL: &[(&[u8], &str, &str)] = &[
    (PNG, "image/png", "png"),
    (JPEG, "image/jpeg", "jpg"),
    (GIF, "image/gif", "gif"),
    (WEBP, "image/webp", "webp"),
];

/// Bytes a `tEXt` chunk adds beyond its text: length, type, CRC, keyword+NUL.
const TEXT_CHUNK_OVERHEAD: usize = 4 + 4 + 4 + b"Comment\0".len();

/// A valid PNG that differs from every other `unique_png` with another
/// `seed` (and from [`PNG`]).
pub fn unique_png(seed: &str) -> Vec<u8> {
    with_text_chunk(PNG, seed.as_bytes())
}

/// A valid PNG of exactly `len` bytes, `len >= PNG.len() + 20`.
pub fn png_of_size(len: usize) -> Vec<u8> {
    let min = PNG.len() + TEXT_CHUNK_OVERHEAD;
    assert!(
        len >= min,
        "png_of_size({len}): the smallest is {min} bytes"
    );
    // Printable, varied filler: a text chunk must be Latin-1 text.
    let text: Vec<u8> = (0..len - min).map(|i| b'a' + (i % 26) as u8).collect();
    let png = with_text_chunk(PNG, &text);
    debug_assert_eq!(png.len(), len);
    png
}

/// `png` with a `tEXt` chunk (keyword `Comment`) inserted before `IEND`.
fn with_text_chunk(png: &[u8], text: &[u8]) -> Vec<u8> {
    const IEND_LEN: usize = 12;
    assert!(
        png.len() > 8 + IEND_LEN && &png[png.len() - 8..png.len() - 4] == b"IEND",
        "not a PNG ending in IEND"
    );
    let mut data = b"Comment\0".to_vec();
    data.extend_from_slice(text);
    let mut out = Vec::with_capacity(png.len() + 12 + data.len());
    out.extend_from_slice(&png[..png.len() - IEND_LEN]);
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let mut typed = b"tEXt".to_vec();
    typed.extend_from_slice(&data);
    out.extend_from_slice(&typed);
    out.extend_from_slice(&crc32(&typed).to_be_bytes());
    out.extend_from_slice(&png[png.len() - IEND_LEN..]);
    out
}

/// CRC-32 (IEEE, reflected), as PNG chunks use. Bitwise: these are test
/// images of a few kilobytes, speed does not matter.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Walks the chunks of a PNG, checking each CRC; returns the chunk types.
    fn chunks(png: &[u8]) -> Vec<String> {
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let mut types = Vec::new();
        let mut i = 8;
        while i < png.len() {
            let len = u32::from_be_bytes(png[i..i + 4].try_into().unwrap()) as usize;
            let typed = &png[i + 4..i + 8 + len];
            let crc = u32::from_be_bytes(png[i + 8 + len..i + 12 + len].try_into().unwrap());
            assert_eq!(crc32(typed), crc, "bad CRC in chunk at {i}");
            types.push(String::from_utf8_lossy(&typed[..4]).into_owned());
            i += 12 + len;
        }
        assert_eq!(i, png.len());
        types
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn fixtures_have_their_magic() {
        assert!(PNG.starts_with(b"\x89PNG\r\n\x1a\n"));
        assert!(JPEG.starts_with(&[0xFF, 0xD8, 0xFF]));
        assert!(GIF.starts_with(b"GIF89a"));
        assert!(WEBP.starts_with(b"RIFF") && &WEBP[8..12] == b"WEBP");
        assert!(BMP.starts_with(b"BM"));
        assert_eq!(chunks(PNG).last().map(String::as_str), Some("IEND"));
    }

    #[test]
    fn variants_are_valid_distinct_and_exact() {
        let a = unique_png("a");
        let b = unique_png("b");
        assert_ne!(a, b);
        assert_ne!(a, PNG);
        let types = chunks(&a);
        assert_eq!(types[types.len() - 2..], ["tEXt", "IEND"]);
        for len in [PNG.len() + 20, 4096, 100_000] {
            let p = png_of_size(len);
            assert_eq!(p.len(), len);
            chunks(&p);
        }
    }
}
