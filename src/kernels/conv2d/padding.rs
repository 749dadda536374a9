//! The one padding routine of the convolution kernels: the direct kernel reads an input with a zero
//! border of the convolution's padding, the Winograd kernel one padded up to whole 2×2 tiles, and
//! either may be handed an input that a group norm already wrote with a border.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use crate::kernels::zero_fill;

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

/// The `h × w` images of `planes` planes laid out as `src`, copied into planes laid out as `dst` (which
/// must hold them) with zeros everywhere else. Each element is written once: zero-filling the whole
/// buffer first was a second pass over it.
pub(super) fn repad(x: &[f32], planes: usize, h: usize, w: usize, src: PlaneLayout, dst: PlaneLayout) -> Vec<f32> {
    debug_assert!(dst.border + h <= dst.rows && dst.border + w <= dst.columns);
    let fill = |padded: &mut [MaybeUninit<f32>]| {
        if dst.len() == 0 {
            return;
        }
        if h * w == 0 {
            zero_fill(padded);
            return;
        }
        padded.par_chunks_mut(dst.len()).zip(x.par_chunks(src.len())).for_each(|(to, from)| {
            let (top, rest) = to.split_at_mut(dst.border * dst.columns);
            let (body, bottom) = rest.split_at_mut(h * dst.columns);
            zero_fill(top);
            zero_fill(bottom);
            for (y, out_row) in body.chunks_exact_mut(dst.columns).enumerate() {
                let row = &from[(y + src.border) * src.columns + src.border..][..w];
                let (left, rest) = out_row.split_at_mut(dst.border);
                let (middle, right) = rest.split_at_mut(w);
                zero_fill(left);
                zero_fill(right);
                // SAFETY: `middle` and `row` are both `w` floats, in different buffers.
                unsafe { std::ptr::copy_nonoverlapping(row.as_ptr(), middle.as_mut_ptr().cast::<f32>(), w) };
            }
        });
    };
    // SAFETY: each plane writes its rows above, below and in the image whole (zeros, or the image row
    // between zeros); the planes cover the buffer, as `x`'s planes pair with them one for one; with
    // no pixels everything is zeroed.
    unsafe { crate::memory::filled_by(planes * dst.len(), fill) }
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
