//! Image payloads: PNG (8-bit, as diffusers' `numpy_to_pil` quantises) or NPY (diffusers'
//! `output_type="np"` for the image: float32, shape `(H, W, C)`), base64 in the JSON answer.

use base64::Engine;
use candle_unet2d::service::GeneratedImage;
use image::codecs::png::PngEncoder;
use image::{ExtendedColorType, ImageEncoder};

/// The payload formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Png,
    Npy,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Png => "png",
            Format::Npy => "npy",
        }
    }
}

/// The image in `format`, base64 (standard alphabet, padded).
pub fn encode(image: &GeneratedImage, format: Format) -> Result<String, String> {
    let bytes = match format {
        Format::Png => png(image)?,
        Format::Npy => npy(image),
    };
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

fn png(image: &GeneratedImage) -> Result<Vec<u8>, String> {
    let color = match image.channels {
        1 => ExtendedColorType::L8,
        3 => ExtendedColorType::Rgb8,
        c => return Err(format!("a {c}-channel image cannot be a PNG; ask for \"format\": \"npy\"")),
    };
    let (w, h) = (u32::try_from(image.width), u32::try_from(image.height));
    let (Ok(w), Ok(h)) = (w, h) else { return Err("the image is too large for PNG".into()) };
    let mut out = Vec::new();
    PngEncoder::new(&mut out).write_image(&image.bytes, w, h, color).map_err(|e| format!("cannot encode PNG: {e}"))?;
    Ok(out)
}

/// NPY format 1.0: magic, version, a little-endian u16 header length, the header dict padded with
/// spaces to a multiple of 64 bytes and ended by a newline, then the data.
fn npy(image: &GeneratedImage) -> Vec<u8> {
    let dict = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({}, {}, {}), }}",
        image.height, image.width, image.channels
    );
    let unpadded = 10 + dict.len() + 1;
    let header_len = dict.len() + 1 + (64 - unpadded % 64) % 64;
    let mut out = Vec::with_capacity(10 + header_len + image.pixels.len() * 4);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header_len as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out.resize(10 + header_len - 1, b' ');
    out.push(b'\n');
    for v in &image.pixels {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> GeneratedImage {
        GeneratedImage {
            index: 0,
            seed: 0,
            class_label: None,
            height: 2,
            width: 3,
            channels: 1,
            pixels: vec![0.0, 0.25, 0.5, 0.75, 1.0, 0.5],
            bytes: vec![0, 64, 128, 191, 255, 128],
        }
    }

    #[test]
    fn npy_header_is_aligned_and_data_follows() {
        let bytes = npy(&image());
        let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + header_len) % 64, 0);
        assert_eq!(bytes[10 + header_len - 1], b'\n');
        assert!(String::from_utf8_lossy(&bytes[10..10 + header_len]).contains("'shape': (2, 3, 1)"));
        assert_eq!(bytes.len(), 10 + header_len + 6 * 4);
        assert_eq!(&bytes[10 + header_len + 4..10 + header_len + 8], &0.25f32.to_le_bytes());
    }

    #[test]
    fn png_round_trips_and_odd_channels_are_refused() {
        let encoded = png(&image()).unwrap();
        let decoded = image::load_from_memory(&encoded).unwrap().to_luma8();
        assert_eq!(decoded.as_raw(), &image().bytes);
        let mut two = image();
        two.channels = 2;
        assert!(png(&two).unwrap_err().contains("npy"));
    }
}
