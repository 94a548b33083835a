//! Upload payloads: real PNG images of about a chosen size.
//!
//! The uploader validates what it stores (it detects the image type from the
//! bytes), so the bench sends genuine PNGs. Random pixels stored without
//! compression make the file size predictable: width x height x 3 bytes plus
//! a little framing, so a square of the right side hits the size within a
//! few hundred bytes. The exact byte count is reported with the results.

use rand::RngCore;

#[derive(Debug, thiserror::Error)]
#[error("encoding a {width}x{height} PNG: {message}")]
pub struct PayloadError {
    width: u32,
    height: u32,
    message: String,
}

/// A PNG of random RGB pixels whose encoded size is close to (and not above
/// by more than ~1 %) `target_bytes`.
pub fn png_of_size(target_bytes: usize) -> Result<Vec<u8>, PayloadError> {
    // Each row costs 3 bytes per pixel plus its filter byte.
    let width: u32 = 256;
    let row = width as usize * 3 + 1;
    let height = (target_bytes / row).max(1) as u32;
    let mut pixels = vec![0u8; width as usize * height as usize * 3];
    rand::rng().fill_bytes(&mut pixels);
    let mut out = Vec::with_capacity(target_bytes + 1024);
    let err = |e: png::EncodingError| PayloadError {
        width,
        height,
        message: e.to_string(),
    };
    {
        let mut encoder = png::Encoder::new(&mut out, width, height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.set_compression(png::Compression::NoCompression);
        let mut writer = encoder.write_header().map_err(err)?;
        writer.write_image_data(&pixels).map_err(err)?;
        writer.finish().map_err(err)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_close_and_the_bytes_are_png() {
        for target in [64 * 1024, 1024 * 1024] {
            let png = png_of_size(target).expect("encodes");
            assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "PNG signature");
            let diff = png.len().abs_diff(target);
            assert!(
                diff * 100 <= target,
                "{} bytes for a target of {target}",
                png.len()
            );
            let decoder = png::Decoder::new(std::io::Cursor::new(&png));
            let reader = decoder.read_info().expect("decodes");
            assert_eq!(reader.info().width, 256);
        }
    }
}
