//! F(2×2, 3×3): 2×2 output tiles from 4×4 input patches, 16 transformed points. Every transform
//! coefficient is 0, ±1 or ±½: the input and output transforms are a few additions per value. Any
//! image size: edge tiles of odd sizes store only their pixels that exist, and a vector's 16 tiles may
//! span several small images.

// Inside `Simd::vectorize` the transforms avoid closures (see `microkernel`): a `match` instead of
// `Option::map`, index loops instead of iterator adapters over the small arrays.
#![allow(clippy::manual_map, clippy::needless_range_loop)]

use std::ops::Range;

use super::super::microkernel::finish;
use super::super::padding::{repad, PlaneLayout};
use super::weights::POINTS;
use super::{drive, Filters, Problem, Strides, Transform};
use crate::kernels::simd::Simd;
use crate::kernels::SendPtr;

/// Runs the convolution into `out` (`batch · c_out · h · w` floats, all written).
///
/// # Safety
/// The CPU supports `S`'s level; `out` is the whole output.
pub(super) unsafe fn run<S: Simd>(p: &Problem, out: SendPtr) {
    let (c_in, c_out) = (p.weights.c_in, p.weights.c_out);
    let tiling = Tiling::new(p.call.h, p.call.w);
    let owned_input;
    let data = if p.call.prepadded && p.call.h.is_multiple_of(2) && p.call.w.is_multiple_of(2) {
        p.call.x
    } else {
        owned_input = pad_input(p, &tiling);
        &owned_input[..]
    };
    let input = Padded { data, h: tiling.padded_h, w: tiling.padded_w, channels: c_in };
    let plan = Plan { p, tiling, input };
    let u = p.weights.packed();
    let filters = Filters { data: &u, c_in, c_out, points: POINTS };
    // SAFETY: per the caller; the filters are the layer's F(2×2) `U`.
    unsafe { drive::<S, _>(&plan, &filters, out) }
}

/// One call's tiling over its padded input.
struct Plan<'a> {
    p: &'a Problem<'a>,
    tiling: Tiling,
    input: Padded<'a>,
}

impl Transform for Plan<'_> {
    const POINTS: usize = POINTS;
    const GEMM_OP: &'static str = "conv2d.winograd_gemm.f2";
    type Vector = TileVector;

    fn tiles(&self) -> usize {
        self.p.call.batch * self.tiling.tiles_per_image
    }

    fn vector(&self, v: usize) -> TileVector {
        self.tiling.vector(v, self.p.call.batch, self.p.weights.c_in, self.p.weights.c_out)
    }

    fn is_empty(vector: &TileVector) -> bool {
        vector.masks == [0; 4]
    }

    #[inline(always)]
    unsafe fn transform_input<S: Simd>(&self, vector: &TileVector, ci: usize, dst: *mut f32, point_stride: usize) {
        let input = &self.input;
        // Lane offsets stay inside the padded input (`check_lane_offsets`).
        let src = input.data[(vector.image * input.channels + ci) * input.h * input.w..].as_ptr();
        transform_input::<S>(vector, self.tiling.half_rows, src, input.w, dst, point_stride);
    }

    #[inline(always)]
    unsafe fn transform_output<S: Simd>(
        &self,
        vector: &TileVector,
        channels: Range<usize>,
        m: &[f32],
        strides: &Strides,
        out: SendPtr,
    ) {
        transform_output::<S>(self.p, &self.tiling, vector, channels, m, strides, out);
    }
}

/// 16 tiles, one per lane, numbered across the whole batch: a vector runs on into the next image when
/// an image has fewer tiles. Offsets are relative to lane 0's image.
#[derive(Clone, Copy)]
struct TileVector {
    /// Lane 0's image.
    image: usize,
    /// Offset of each lane's 4×4 patch (its top-left element) from channel `ci` of `image`'s padded
    /// input, for any `ci`.
    input: [i32; 16],
    /// Offset of each lane's top-left output pixel from channel `co` of `image`'s output.
    output: [i32; 16],
    /// Each lane's `(image − self.image) · C_out`, to index a per-image bias.
    bias: [i32; 16],
    /// All lanes in `self.image`.
    one_image: bool,
    /// Lanes whose output pixel (dy, dx) exists, at index `2·dy + dx` (edge tiles of odd sizes, and
    /// lanes past the last tile, store less).
    masks: [u16; 4],
}

impl TileVector {
    /// Lanes past the last tile: read tile 0's patch, store nothing.
    const EMPTY: Self =
        Self { image: 0, input: [0; 16], output: [0; 16], bias: [0; 16], one_image: true, masks: [0; 4] };
}

/// The tile grid of one call.
struct Tiling {
    h: usize,
    w: usize,
    tiles_w: usize,
    tiles_per_image: usize,
    /// The zero-padded input every patch lies in: `2·tiles + 2` on each side.
    padded_h: usize,
    padded_w: usize,
    /// Both sizes are even and tile rows are whole multiples of 8 tiles: each half-vector of 8 lanes is
    /// 8 consecutive tiles of one row, read as 16 + 2 consecutive floats per patch row and stored as 16
    /// consecutive pixels per output row.
    half_rows: bool,
}

impl Tiling {
    fn new(h: usize, w: usize) -> Self {
        let (tiles_h, tiles_w) = (h.div_ceil(2), w.div_ceil(2));
        let half_rows = h.is_multiple_of(2) && w.is_multiple_of(2) && tiles_w.is_multiple_of(8);
        Self {
            h,
            w,
            tiles_w,
            tiles_per_image: tiles_h * tiles_w,
            padded_h: 2 * tiles_h + 2,
            padded_w: 2 * tiles_w + 2,
            half_rows,
        }
    }

    /// Vector `v` of the batch's tiles.
    fn vector(&self, v: usize, batch: usize, c_in: usize, c_out: usize) -> TileVector {
        let first = v * 16;
        // Vectors past the last tile (padding to whole pairs) point at the last image and store nothing.
        let image = (first / self.tiles_per_image).min(batch - 1);
        let mut vector = TileVector { image, ..TileVector::EMPTY };
        let (input_image, output_image) = (c_in * self.padded_h * self.padded_w, c_out * self.h * self.w);
        for lane in 0..16.min((batch * self.tiles_per_image).saturating_sub(first)) {
            let (lane_image, tile) = ((first + lane) / self.tiles_per_image, (first + lane) % self.tiles_per_image);
            let (ty, tx) = (tile / self.tiles_w, tile % self.tiles_w);
            let images = lane_image - image;
            // At most one image on when images have 16 tiles or more (and 16 tiny ones otherwise): inside
            // i32, as `check_lane_offsets` checked.
            vector.input[lane] = (images * input_image + 2 * ty * self.padded_w + 2 * tx) as i32;
            vector.output[lane] = (images * output_image + 2 * ty * self.w + 2 * tx) as i32;
            vector.bias[lane] = (images * c_out) as i32;
            vector.one_image &= images == 0;
            for (position, mask) in vector.masks.iter_mut().enumerate() {
                if 2 * ty + position / 2 < self.h && 2 * tx + position % 2 < self.w {
                    *mask |= 1 << lane;
                }
            }
        }
        vector
    }
}

/// The input with a zero border of 1, and one more zero row / column where a size is odd, so that
/// every tile's 4×4 patch lies inside it.
fn pad_input(p: &Problem, tiling: &Tiling) -> Vec<f32> {
    let (h, w) = (p.call.h, p.call.w);
    let src = PlaneLayout::bordered(h, w, usize::from(p.call.prepadded));
    let dst = PlaneLayout { rows: tiling.padded_h, columns: tiling.padded_w, border: 1 };
    repad(p.call.x, p.call.batch * p.weights.c_in, h, w, src, dst)
}

/// The zero-padded input (`[B][channels][h][w]`) the tiles' patches are read from.
struct Padded<'a> {
    data: &'a [f32],
    h: usize,
    w: usize,
    channels: usize,
}

/// `V = Bᵀ d B` for one channel of 16 tiles, with `Bᵀ = [[1, 0, −1, 0], [0, 1, 1, 0], [0, −1, 1, 0],
/// [0, 1, 0, −1]]`: point `ξ = 4i + j` goes to `dst + ξ · point_stride`.
#[inline(always)]
unsafe fn transform_input<S: Simd>(
    vector: &TileVector,
    half_rows: bool,
    src: *const f32,
    row_stride: usize,
    dst: *mut f32,
    point_stride: usize,
) {
    let mut d = [[S::zero(); 4]; 4];
    if half_rows {
        // Each half's 8 patches start 2 floats apart in one row: 16 floats hold their columns 0 and 1,
        // the 16 from 2 further on their columns 2 and 3.
        let (low, high) = (src.offset(vector.input[0] as isize), src.offset(vector.input[8] as isize));
        for (i, row) in d.iter_mut().enumerate() {
            let (low, high) = (low.add(i * row_stride), high.add(i * row_stride));
            (row[0], row[1]) = S::even_odd(S::load(low), S::load(high));
            (row[2], row[3]) = S::even_odd(S::load(low.add(2)), S::load(high.add(2)));
        }
    } else {
        for (i, row) in d.iter_mut().enumerate() {
            for (j, value) in row.iter_mut().enumerate() {
                *value = S::gather(src.add(i * row_stride + j), &vector.input);
            }
        }
    }
    // Bᵀ d: combine the rows, column by column ...
    let mut columns = [[S::zero(); 4]; 4];
    for (j, column) in columns.iter_mut().enumerate() {
        *column = combine_input::<S>([d[0][j], d[1][j], d[2][j], d[3][j]]);
    }
    // ... then (Bᵀ d) B: combine the columns, row by row.
    for i in 0..4 {
        let row = combine_input::<S>([columns[0][i], columns[1][i], columns[2][i], columns[3][i]]);
        for (j, &value) in row.iter().enumerate() {
            S::store(dst.add((4 * i + j) * point_stride), value);
        }
    }
}

/// `Bᵀ x` for one column (or row) of four.
#[inline(always)]
unsafe fn combine_input<S: Simd>(x: [S::V; 4]) -> [S::V; 4] {
    [S::sub(x[0], x[2]), S::add(x[1], x[2]), S::sub(x[2], x[1]), S::sub(x[1], x[3])]
}

/// `Y = Aᵀ M A` with `Aᵀ = [[1, 1, 1, 0], [0, 1, −1, −1]]` for 16 tiles and the given output channels,
/// then the epilogue, stored to the tiles' pixels. `m` starts at the vector's first column of point 0,
/// channel 0.
#[inline(always)]
unsafe fn transform_output<S: Simd>(
    p: &Problem,
    tiling: &Tiling,
    vector: &TileVector,
    channels: std::ops::Range<usize>,
    m: &[f32],
    strides: &Strides,
    out: SendPtr,
) {
    let (c_out, w) = (p.weights.c_out, p.call.w);
    let plane = p.call.h * w;
    let half_offsets = [vector.output[0] as usize, vector.output[8] as usize];
    let image_bias = if p.call.per_image_bias { vector.image * c_out } else { 0 };
    for co in channels {
        let m = m[co * strides.product_row..].as_ptr();
        let mut point = [S::zero(); 16];
        for (xi, value) in point.iter_mut().enumerate() {
            *value = S::load(m.add(xi * strides.product_point));
        }
        // Aᵀ over the rows (r0, r1 for each column j), then A over the columns.
        let mut rows = [[S::zero(); 4]; 2];
        for j in 0..4 {
            rows[0][j] = S::add(S::add(point[j], point[4 + j]), point[8 + j]);
            rows[1][j] = S::sub(S::sub(point[4 + j], point[8 + j]), point[12 + j]);
        }
        let bias_ptr = p.call.bias.as_ptr().add(image_bias + co);
        let bias = if vector.one_image || !p.call.per_image_bias {
            S::splat(*bias_ptr)
        } else {
            S::gather(bias_ptr, &vector.bias)
        };
        let base = out.get().add((vector.image * c_out + co) * plane);
        // Pointer arithmetic only (no intrinsic), so a closure is harmless here.
        let residual = p.call.residual.map(|r| r.as_ptr().add((vector.image * c_out + co) * plane));
        for (dy, r) in rows.iter().enumerate() {
            let pixels =
                [S::add(S::add(S::add(r[0], r[1]), r[2]), bias), S::add(S::sub(S::sub(r[1], r[2]), r[3]), bias)];
            if tiling.half_rows {
                // Each half's 8 tiles give 16 consecutive pixels of output row 2·ty + dy.
                let halves = S::interleave(pixels[0], pixels[1]);
                for (half, (&offset, value)) in half_offsets.iter().zip([halves.0, halves.1]).enumerate() {
                    if vector.masks[0] >> (8 * half) & 0xff == 0 {
                        // Past the last tile.
                        continue;
                    }
                    let offset = offset + dy * w;
                    let residual = match residual {
                        Some(residual) => Some(S::load(residual.add(offset))),
                        None => None,
                    };
                    S::store(base.add(offset), finish::<S>(value, residual, p.call.output_scale));
                }
                continue;
            }
            for (dx, &value) in pixels.iter().enumerate() {
                let mask = vector.masks[2 * dy + dx];
                let offset = dy * w + dx;
                let residual = match residual {
                    Some(residual) => Some(S::gather_masked(residual.add(offset), &vector.output, mask)),
                    None => None,
                };
                let value = finish::<S>(value, residual, p.call.output_scale);
                S::scatter_masked(base.add(offset), &vector.output, mask, value);
            }
        }
    }
}
