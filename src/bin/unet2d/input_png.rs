//! Reading `inpaint`'s inputs: the image PNG (its mode must be the model's: L for 1 channel, RGB
//! for 3) scaled to `[-1, 1]` as diffusers' `_preprocess_image` does (`x / 255 · 2 − 1`), and the
//! mask PNG converted to grayscale and thresholded at 0.5 as `_preprocess_mask` does (white keeps a
//! pixel, black inpaints it). Unlike diffusers nothing is resized: a size the model cannot take is
//! an error, so the kept pixels come back as they went in.
//!
//! Images are never converted between grayscale and RGB: that would silently change what the model
//! sees. An alpha channel is accepted only when every pixel is opaque (a PNG saved with an unused
//! alpha channel); transparency has no meaning here, the mask says what is kept.

use std::path::Path;

use anyhow::{bail, Context};
use image::DynamicImage;

/// An input image, channel-major (`[C, H, W]`), in `[-1, 1]`.
#[derive(Debug)]
pub struct InputImage {
    pub width: usize,
    pub height: usize,
    pub data: Vec<f32>,
}

/// A mask, `[H, W]`, of 1 (keep) and 0 (inpaint).
#[derive(Debug)]
pub struct InputMask {
    pub width: usize,
    pub height: usize,
    pub data: Vec<f32>,
}

/// Reads `--image path` for a model of `channels` channels (1 or 3).
pub fn read_image(path: &Path, channels: usize) -> anyhow::Result<InputImage> {
    let flag = format!("--image {}", path.display());
    let img = decode(path).with_context(|| format!("cannot read {flag}"))?;
    let (width, height) = (img.width() as usize, img.height() as usize);
    let wanted = if channels == 1 { "a grayscale (L) PNG" } else { "an RGB PNG" };
    let mode = mode_name(&img);
    let eight_bit = matches!(
        img,
        DynamicImage::ImageLuma8(_)
            | DynamicImage::ImageLumaA8(_)
            | DynamicImage::ImageRgb8(_)
            | DynamicImage::ImageRgba8(_)
    );
    if !eight_bit {
        bail!("{flag} is {mode}; the model takes {channels}-channel images: give {wanted} with 8 bits per channel");
    }
    let has_alpha = img.color().has_alpha();
    let is_gray = !img.color().has_color();
    if is_gray != (channels == 1) {
        bail!("{flag} is {mode}; the model takes {channels}-channel images: give {wanted}");
    }
    if has_alpha {
        let opaque = match &img {
            DynamicImage::ImageLumaA8(buf) => buf.pixels().all(|p| p.0[1] == 255),
            DynamicImage::ImageRgba8(buf) => buf.pixels().all(|p| p.0[3] == 255),
            _ => true,
        };
        if !opaque {
            bail!(
                "{flag} is {mode} with transparent pixels; give {wanted} without transparency (--mask says what \
                 is kept)"
            );
        }
    }
    let interleaved: Vec<u8> = if channels == 1 { img.to_luma8().into_raw() } else { img.to_rgb8().into_raw() };
    let plane = width * height;
    let mut data = vec![0f32; plane * channels];
    for (i, px) in interleaved.chunks_exact(channels).enumerate() {
        for (c, &v) in px.iter().enumerate() {
            data[c * plane + i] = f32::from(v) / 255.0 * 2.0 - 1.0;
        }
    }
    Ok(InputImage { width, height, data })
}

/// Reads `--mask path`: any PNG, converted to grayscale with PIL's `convert("L")` weights
/// (ITU-R 601: 299/587/114, alpha ignored), `/ 255`, then 1 where `≥ 0.5`, else 0.
pub fn read_mask(path: &Path) -> anyhow::Result<InputMask> {
    let img = decode(path).with_context(|| format!("cannot read --mask {}", path.display()))?;
    let (width, height) = (img.width() as usize, img.height() as usize);
    let data = img
        .to_rgb8()
        .pixels()
        .map(|p| {
            let [r, g, b] = p.0.map(u32::from);
            // PIL's fixed-point L = R·299/1000 + G·587/1000 + B·114/1000, rounded.
            let l = (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16;
            if l as f32 / 255.0 >= 0.5 {
                1.0
            } else {
                0.0
            }
        })
        .collect();
    Ok(InputMask { width, height, data })
}

/// PNG's 8-byte signature.
const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

fn decode(path: &Path) -> anyhow::Result<DynamicImage> {
    let bytes = std::fs::read(path)?;
    if !bytes.starts_with(PNG_SIGNATURE) {
        bail!("not a PNG file (only PNG is read)");
    }
    Ok(image::load_from_memory_with_format(&bytes, image::ImageFormat::Png)?)
}

/// The image's mode in words, for messages.
fn mode_name(img: &DynamicImage) -> String {
    let color = img.color();
    let kind = match (color.has_color(), color.has_alpha()) {
        (false, false) => "grayscale (L)",
        (false, true) => "grayscale with alpha (LA)",
        (true, false) => "RGB",
        (true, true) => "RGBA",
    };
    let bits = color.bits_per_pixel() / u16::from(color.channel_count());
    format!("{kind}, {bits}-bit")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_png(name: &str, img: DynamicImage) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("unet2d-input-png-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        img.save(&path).unwrap();
        path
    }

    #[test]
    fn gray_images_scale_to_minus_one_one() {
        let img = image::GrayImage::from_raw(2, 1, vec![0, 255]).unwrap();
        let path = write_png("g.png", DynamicImage::ImageLuma8(img));
        let read = read_image(&path, 1).unwrap();
        assert_eq!((read.width, read.height), (2, 1));
        assert_eq!(read.data, [-1.0, 1.0]);
        let err = read_image(&path, 3).unwrap_err().to_string();
        assert!(err.contains("grayscale (L), 8-bit") && err.contains("RGB PNG"), "{err}");
    }

    #[test]
    fn rgb_images_are_channel_major_and_alpha_must_be_opaque() {
        let img = image::RgbaImage::from_raw(2, 1, vec![255, 0, 0, 255, 0, 255, 0, 255]).unwrap();
        let path = write_png("rgba.png", DynamicImage::ImageRgba8(img));
        assert_eq!(read_image(&path, 3).unwrap().data, [1.0, -1.0, -1.0, 1.0, -1.0, -1.0]);
        let img = image::RgbaImage::from_raw(1, 1, vec![255, 0, 0, 10]).unwrap();
        let path = write_png("clear.png", DynamicImage::ImageRgba8(img));
        assert!(read_image(&path, 3).unwrap_err().to_string().contains("transparent"));
        let img = image::ImageBuffer::<image::Luma<u16>, _>::from_raw(1, 1, vec![1000u16]).unwrap();
        let path = write_png("deep.png", DynamicImage::ImageLuma16(img));
        assert!(read_image(&path, 1).unwrap_err().to_string().contains("16-bit"));
    }

    #[test]
    fn masks_threshold_at_one_half_like_diffusers() {
        let img = image::RgbImage::from_raw(4, 1, vec![0, 0, 0, 127, 127, 127, 128, 128, 128, 255, 0, 0]).unwrap();
        let path = write_png("m.png", DynamicImage::ImageRgb8(img));
        // Pure red is L = 76 in PIL: inpainted.
        assert_eq!(read_mask(&path).unwrap().data, [0.0, 0.0, 1.0, 0.0]);
    }
}
