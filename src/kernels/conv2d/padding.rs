//! The one padding routine of the convolution kernels: the direct kernel reads an input with a zero
//! border of the convolution's padding, the Winograd kernel one padded up to whole 2×2 tiles, and
//! either may be handed an input that a group norm already wrote with a border.

use rayon::prelude::*;

/// How an `h × w` image plane lies in a buffer: planes of `rows × columns` floats, the image's first
/// pixel at (`border`, `border`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PlaneLayout {
    pub rows: usize,
    pub columns: usize,
    pub border: usize,
}

impl PlaneLayout {
    /// An image with a border of `border` on every side.
    pub fn bordered(h: usize, w: usize, border: usize) -> Self {
        Self { rows: h + 2 * border, columns: w + 2 * border, border }
    }

    fn len(self) -> usize {
        self.rows * self.columns
    }
}

/// The `h × w` images of `planes` planes laid out as `src`, copied into zeroed planes laid out as `dst`
/// (which must hold them).
pub(super) fn repad(x: &[f32], planes: usize, h: usize, w: usize, src: PlaneLayout, dst: PlaneLayout) -> Vec<f32> {
    debug_assert!(dst.border + h <= dst.rows && dst.border + w <= dst.columns);
    let mut padded = vec![0f32; planes * dst.len()];
    if dst.len() == 0 || src.len() == 0 {
        return padded;
    }
    padded.par_chunks_mut(dst.len()).zip(x.par_chunks(src.len())).for_each(|(to, from)| {
        for y in 0..h {
            let row = &from[(y + src.border) * src.columns + src.border..][..w];
            to[(y + dst.border) * dst.columns + dst.border..][..w].copy_from_slice(row);
        }
    });
    padded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_the_image_and_zeroes_the_rest() {
        let (h, w) = (2, 3);
        // Two planes with a border of 1 (4 × 5), into planes of 5 × 6 with the image at (1, 1).
        let src = PlaneLayout::bordered(h, w, 1);
        let x: Vec<f32> = (0..2 * src.rows * src.columns).map(|i| i as f32).collect();
        let dst = PlaneLayout { rows: 5, columns: 6, border: 1 };
        let out = repad(&x, 2, h, w, src, dst);
        for plane in 0..2 {
            for y in 0..dst.rows {
                for column in 0..dst.columns {
                    let value = out[plane * 30 + y * dst.columns + column];
                    let inside = (1..=h).contains(&y) && (1..=w).contains(&column);
                    let expected = if inside { x[plane * 20 + y * src.columns + column] } else { 0.0 };
                    assert_eq!(value, expected, "plane {plane} ({y}, {column})");
                }
            }
        }
    }
}
