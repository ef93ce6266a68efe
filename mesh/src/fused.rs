//! The decode GEMV's block kernel for the host's vector unit (AVX and F16C,
//! detected at run time), as one pass per storage block with no call per PE
//! or per transfer: every PE's partial sums for the block's whole vectors of
//! [`LANES`] rows (`[pe][row]`, kept near L1), then the line's reduction
//! transfers, each a fused round-to-wire, add, round-to-accumulator over the
//! rows, then the root's sums into the output.
//!
//! It performs exactly the operations of the blocked path
//! (`gemv::gemv_block_blocked`), in the same order for every row: each PE's
//! multiply-then-add chain from zero over its tile column, each transfer
//! rounding the sender's line to the wire format and the receiver's sum to the
//! accumulation format. Rows past the last whole vector run the same steps one
//! row at a time in scalar code.

use half::f16;
use std::arch::x86_64::*;
use wafer_core::DType;
use wafer_kernels::format::Formats;
use wafer_sim::schedule::Schedule;

/// Output rows per vector.
pub const LANES: usize = 8;

/// Whether this CPU and these formats take the fused kernel (f32 or f16 on
/// the wire and in the running sums; bf16 takes the blocked path).
pub fn supports(f: Formats) -> bool {
    let ok = |d: DType| matches!(d, DType::F32 | DType::F16);
    ok(f.wire)
        && ok(f.acc)
        && std::is_x86_feature_detected!("avx")
        && std::is_x86_feature_detected!("f16c")
}

/// `x` rounded to f16 and back, lane by lane (round to nearest even).
#[inline]
#[target_feature(enable = "avx,f16c")]
unsafe fn round16(x: __m256) -> __m256 {
    _mm256_cvtph_ps(_mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x))
}

/// The partial sums of PEs `0..nin` for the block's first `nv * LANES` rows,
/// `T` inputs per PE, into `pp` as `[pe][row]` (`stride` values per PE).
#[inline]
#[target_feature(enable = "avx,f16c")]
unsafe fn partials<const T: usize>(
    wp: *const u16,
    x: &[f32],
    nin: usize,
    bo: usize,
    nv: usize,
    pp: *mut f32,
    stride: usize,
) {
    for p in 0..nin {
        let mut xs = [_mm256_setzero_ps(); T];
        for (c, xc) in xs.iter_mut().enumerate() {
            // SAFETY (caller): p * T + c < nin * T <= x.len().
            *xc = _mm256_set1_ps(*x.get_unchecked(p * T + c));
        }
        let w0 = wp.add(p * T * bo);
        for v in 0..nv {
            let mut acc = _mm256_setzero_ps();
            for (c, xc) in xs.iter().enumerate() {
                // SAFETY (caller): (p * T + c) * bo + v * LANES + LANES <= block length.
                let wv =
                    _mm256_cvtph_ps(_mm_loadu_si128(w0.add(c * bo + v * LANES) as *const __m128i));
                acc = _mm256_add_ps(acc, _mm256_mul_ps(wv, *xc));
            }
            _mm256_storeu_ps(pp.add(p * stride + v * LANES), acc);
        }
    }
}

/// As [`partials`] for any number of inputs per PE.
#[inline]
#[target_feature(enable = "avx,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn partials_any(
    wp: *const u16,
    x: &[f32],
    nin: usize,
    ti: usize,
    bo: usize,
    nv: usize,
    pp: *mut f32,
    stride: usize,
) {
    for p in 0..nin {
        let w0 = wp.add(p * ti * bo);
        for v in 0..nv {
            let mut acc = _mm256_setzero_ps();
            for c in 0..ti {
                let wv =
                    _mm256_cvtph_ps(_mm_loadu_si128(w0.add(c * bo + v * LANES) as *const __m128i));
                let xc = _mm256_set1_ps(*x.get_unchecked(p * ti + c));
                acc = _mm256_add_ps(acc, _mm256_mul_ps(wv, xc));
            }
            _mm256_storeu_ps(pp.add(p * stride + v * LANES), acc);
        }
    }
}

/// One storage block (`[in line][tile col][row]`, `nin * ti` columns of `bo`
/// rows) times `x_pad`, reduced along the line by `schedule`, into `y` (its
/// first `y.len() <= bo` rows). `parts` holds `lines_needed(nin) * LANES` values.
///
/// # Safety
/// The CPU supports AVX and F16C, and `f` is one [`supports`] accepts.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx,f16c")]
pub unsafe fn block(
    block: &[f16],
    x_pad: &[f32],
    nin: usize,
    ti: usize,
    schedule: &Schedule,
    f: Formats,
    parts: &mut [f32],
    y: &mut [f32],
) {
    let bo = block.len() / (nin * ti);
    let n = y.len();
    let nv = n / LANES;
    let stride = nv * LANES;
    let lines = schedule.lines_needed(nin);
    assert!(n <= bo && x_pad.len() >= nin * ti && lines >= nin);
    assert!(parts.len() >= lines * stride.max(1));
    let live = |t: &&wafer_sim::schedule::Transfer| (t.first as usize) < nin;
    let (rw, ra) = (f.wire == DType::F16, f.acc == DType::F16);
    let root = schedule.root() as usize;
    if nv > 0 {
        let wp = block.as_ptr() as *const u16;
        let pp = parts.as_mut_ptr();
        match ti {
            1 => partials::<1>(wp, x_pad, nin, bo, nv, pp, stride),
            2 => partials::<2>(wp, x_pad, nin, bo, nv, pp, stride),
            3 => partials::<3>(wp, x_pad, nin, bo, nv, pp, stride),
            4 => partials::<4>(wp, x_pad, nin, bo, nv, pp, stride),
            5 => partials::<5>(wp, x_pad, nin, bo, nv, pp, stride),
            6 => partials::<6>(wp, x_pad, nin, bo, nv, pp, stride),
            7 => partials::<7>(wp, x_pad, nin, bo, nv, pp, stride),
            8 => partials::<8>(wp, x_pad, nin, bo, nv, pp, stride),
            _ => partials_any(wp, x_pad, nin, ti, bo, nv, pp, stride),
        }
        parts[nin * stride..lines * stride].fill(0.0);
        for t in schedule.transfers().iter().filter(live) {
            let (from, to) = (t.from as usize, t.to as usize);
            assert!(from < lines && to < lines && from != to);
            let (sp, dp) = (pp.add(from * stride), pp.add(to * stride));
            for v in 0..nv {
                let o = v * LANES;
                let mut s = _mm256_loadu_ps(sp.add(o));
                if rw {
                    s = round16(s);
                    _mm256_storeu_ps(sp.add(o), s);
                }
                let mut d = _mm256_add_ps(_mm256_loadu_ps(dp.add(o)), s);
                if ra {
                    d = round16(d);
                }
                _mm256_storeu_ps(dp.add(o), d);
            }
        }
        let rp = pp.add(root * stride);
        for v in 0..nv {
            let mut r = _mm256_loadu_ps(rp.add(v * LANES));
            if rw {
                r = round16(r);
            }
            _mm256_storeu_ps(y.as_mut_ptr().add(v * LANES), r);
        }
    }
    // The rows past the last whole vector, one at a time.
    let round = |d: bool, x: f32| if d { f16::from_f32(x).to_f32() } else { x };
    for (row, yr) in y.iter_mut().enumerate().skip(stride) {
        for (p, part) in parts[..nin].iter_mut().enumerate() {
            let mut acc = 0.0f32;
            for c in 0..ti {
                let col = p * ti + c;
                acc += block[col * bo + row].to_f32() * x_pad[col];
            }
            *part = acc;
        }
        parts[nin..lines].fill(0.0);
        for t in schedule.transfers().iter().filter(live) {
            let (from, to) = (t.from as usize, t.to as usize);
            let s = round(rw, parts[from]);
            parts[from] = s;
            parts[to] = round(ra, parts[to] + s);
        }
        *yr = round(rw, parts[root]);
    }
}
