//! From the sampler's tensor to PNG files: diffusers' `to_images` → `to_uint8` quantisation,
//! nearest-neighbour upscaling, the grid, and grayscale (L8) or RGB (RGB8) encoding.

use std::path::Path;

use anyhow::{bail, Context};
use candle_core::{Device, Tensor};
use image::codecs::png::PngEncoder;
use image::{ExtendedColorType, ImageEncoder};

use super::files::write_file;

/// Smallest side, in pixels, a grid tile is scaled up to by default.
pub const MIN_TILE: usize = 64;

/// A batch of 8-bit images, NHWC, on the CPU.
pub struct Images {
    pub count: usize,
    pub height: usize,
    pub width: usize,
    /// 1 (grayscale) or 3 (RGB).
    pub channels: usize,
    data: Vec<u8>,
}

/// An encoded-ready image: `width × height` pixels of `channels` bytes.
pub struct Picture {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub data: Vec<u8>,
}

/// The channel counts a PNG can be written from, checked before sampling.
pub fn check_channels(channels: usize) -> anyhow::Result<()> {
    if channels == 1 || channels == 3 {
        return Ok(());
    }
    bail!(
        "the model makes {channels}-channel samples; only 1-channel (grayscale) and 3-channel \
         (RGB) samples can be written as PNG"
    )
}

impl Images {
    /// Float NHWC images in `[0, 1]` (`pipeline::to_images_from`'s), quantised as diffusers does.
    pub fn from_images(images: &Tensor) -> anyhow::Result<Self> {
        let (count, height, width, channels) = images.dims4()?;
        check_channels(channels)?;
        let bytes = candle_unet2d::pipeline::to_uint8(images)?;
        let data = bytes.to_device(&Device::Cpu)?.flatten_all()?.to_vec1::<u8>()?;
        Ok(Self { count, height, width, channels, data })
    }

    /// Image `index`, upscaled `scale` times.
    pub fn single(&self, index: usize, scale: usize) -> anyhow::Result<Picture> {
        self.grid_of(&[index], 1, scale)
    }

    /// All images in a grid of `columns` columns (rows filled left to right, top to bottom; the
    /// tail of the last row stays black), each upscaled `scale` times.
    pub fn grid(&self, columns: usize, scale: usize) -> anyhow::Result<Picture> {
        let all: Vec<usize> = (0..self.count).collect();
        self.grid_of(&all, columns, scale)
    }

    fn grid_of(&self, indices: &[usize], columns: usize, scale: usize) -> anyhow::Result<Picture> {
        let columns = columns.clamp(1, indices.len().max(1));
        let rows = indices.len().div_ceil(columns);
        let (tile_h, tile_w) = (self.height * scale, self.width * scale);
        let too_big = || anyhow::anyhow!("the image would be too large to write");
        let width = columns.checked_mul(tile_w).ok_or_else(too_big)?;
        let height = rows.checked_mul(tile_h).ok_or_else(too_big)?;
        if u32::try_from(width).is_err() || u32::try_from(height).is_err() {
            return Err(too_big());
        }
        let c = self.channels;
        let len = width.checked_mul(height).and_then(|n| n.checked_mul(c)).ok_or_else(too_big)?;
        let mut data = Vec::new();
        data.try_reserve_exact(len).map_err(|_| anyhow::anyhow!("cannot allocate the {len}-byte image"))?;
        data.resize(len, 0u8);
        let image_len = self.height * self.width * c;
        for (slot, &index) in indices.iter().enumerate() {
            let src = &self.data[index * image_len..(index + 1) * image_len];
            let (x0, y0) = ((slot % columns) * tile_w, (slot / columns) * tile_h);
            for y in 0..tile_h {
                let src_row = &src[(y / scale) * self.width * c..][..self.width * c];
                let dst_start = ((y0 + y) * width + x0) * c;
                let dst_row = &mut data[dst_start..dst_start + tile_w * c];
                for (x, px) in dst_row.chunks_exact_mut(c).enumerate() {
                    px.copy_from_slice(&src_row[(x / scale) * c..][..c]);
                }
            }
        }
        Ok(Picture { width, height, channels: c, data })
    }
}

impl Picture {
    /// Writes the picture as a PNG file: encoded in memory, then written atomically with every
    /// error checked (see `files.rs`).
    pub fn save_png(&self, path: &Path) -> anyhow::Result<()> {
        let color = match self.channels {
            1 => ExtendedColorType::L8,
            _ => ExtendedColorType::Rgb8,
        };
        // The sizes were checked to fit u32 when the picture was built.
        let (w, h) = (self.width as u32, self.height as u32);
        let mut encoded = Vec::new();
        PngEncoder::new(&mut encoded)
            .write_image(&self.data, w, h, color)
            .with_context(|| format!("cannot encode {} as PNG", path.display()))?;
        write_file(path, &encoded).with_context(|| format!("cannot write {}", path.display()))
    }
}

/// Columns of the grid: one row for up to 10 images, else ⌈√n⌉ columns.
pub fn grid_columns(n: usize) -> usize {
    if n <= 10 {
        return n.max(1);
    }
    let mut c = n.isqrt();
    if c * c < n {
        c += 1;
    }
    c
}

/// The default grid scale: the smallest factor that makes the smaller side at least
/// [`MIN_TILE`] pixels (1 for images that are already that large).
pub fn default_grid_scale(height: usize, width: usize) -> usize {
    let side = height.min(width).max(1);
    MIN_TILE.div_ceil(side).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn images(count: usize, h: usize, w: usize, c: usize) -> Images {
        let data = (0..count * h * w * c).map(|i| (i % 251) as u8).collect();
        Images { count, height: h, width: w, channels: c, data }
    }

    #[test]
    fn columns() {
        assert_eq!(grid_columns(1), 1);
        assert_eq!(grid_columns(10), 10);
        assert_eq!(grid_columns(11), 4);
        assert_eq!(grid_columns(16), 4);
        assert_eq!(grid_columns(17), 5);
        assert_eq!(grid_columns(100), 10);
    }

    #[test]
    fn scales() {
        assert_eq!(default_grid_scale(16, 16), 4);
        assert_eq!(default_grid_scale(28, 28), 3);
        assert_eq!(default_grid_scale(32, 64), 2);
        assert_eq!(default_grid_scale(64, 64), 1);
        assert_eq!(default_grid_scale(256, 256), 1);
    }

    #[test]
    fn grid_places_tiles_in_batch_order_with_nearest_neighbour() {
        let imgs = images(5, 2, 3, 3);
        let grid = imgs.grid(2, 2).unwrap();
        assert_eq!((grid.width, grid.height), (12, 12));
        for i in 0..5 {
            let one = imgs.single(i, 1).unwrap();
            let (x0, y0) = ((i % 2) * 6, (i / 2) * 4);
            for y in 0..4 {
                for x in 0..6 {
                    let g = &grid.data[((y0 + y) * 12 + x0 + x) * 3..][..3];
                    let s = &one.data[((y / 2) * 3 + x / 2) * 3..][..3];
                    assert_eq!(g, s, "image {i} at ({x}, {y})");
                }
            }
        }
        // The empty slot stays black.
        assert!(grid.data[(8 * 12 + 6) * 3..(9 * 12) * 3].iter().all(|&b| b == 0));
    }

    #[test]
    fn other_channel_counts_are_refused() {
        assert!(check_channels(1).is_ok());
        assert!(check_channels(3).is_ok());
        assert!(check_channels(4).is_err());
        assert!(check_channels(2).is_err());
    }
}
