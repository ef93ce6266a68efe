//! The frontier picture of `wafer plan --png`: decode tokens/s per user
//! (log scale) against context (log2 scale), one line per model on the wafers
//! the plan chose for it, and the target as a dashed red line. Drawn with the
//! `image` crate and the text helpers of [`super::draw`].

use super::draw::{fill_rect, text, text_width};
use ab_glyph::FontRef;
use anyhow::{bail, Context, Result};
use image::{Rgb, RgbImage};
use std::path::Path;

const WHITE: Rgb<u8> = Rgb([255, 255, 255]);
const BLACK: Rgb<u8> = Rgb([20, 20, 20]);
const GRID: Rgb<u8> = Rgb([225, 225, 225]);
const TARGET: Rgb<u8> = Rgb([220, 0, 0]);
const PALETTE: [Rgb<u8>; 14] = [
    Rgb([31, 119, 180]),
    Rgb([255, 127, 14]),
    Rgb([44, 160, 44]),
    Rgb([148, 103, 189]),
    Rgb([140, 86, 75]),
    Rgb([227, 119, 194]),
    Rgb([127, 127, 127]),
    Rgb([188, 189, 34]),
    Rgb([23, 190, 207]),
    Rgb([60, 60, 160]),
    Rgb([150, 20, 20]),
    Rgb([100, 120, 0]),
    Rgb([0, 110, 110]),
    Rgb([50, 50, 50]),
];

/// The plot area inside the picture, in pixels.
pub const WIDTH: u32 = 1180;
pub const HEIGHT: u32 = 680;
pub const LEFT: u32 = 90;
pub const RIGHT: u32 = 790;
pub const TOP: u32 = 70;
pub const BOTTOM: u32 = 610;

/// One model's line: a label and (context, tokens/s or `None` where nothing fits).
pub struct Curve {
    pub label: String,
    pub points: Vec<(usize, Option<f64>)>,
}

/// The colour of the `i`-th curve (the palette repeats after fourteen).
pub fn colour(i: usize) -> Rgb<u8> {
    PALETTE[i % PALETTE.len()]
}

/// Draws the frontier to a PNG at `path`.
pub fn draw(curves: &[Curve], target: f64, context: usize, title: &str, path: &Path) -> Result<()> {
    let img = render(curves, target, context, title)?;
    img.save_with_format(path, image::ImageFormat::Png)
        .with_context(|| format!("cannot write PNG {}", path.display()))
}

/// The axes: contexts from the smallest plotted to `context` (log2), rates over
/// whole decades holding every point and the target (log10).
struct Axes {
    x0: f64,
    x1: f64,
    y0: f64,
    y1: f64,
}

impl Axes {
    fn x(&self, context: usize) -> f64 {
        let t = ((context as f64).log2() - self.x0) / (self.x1 - self.x0).max(1e-9);
        LEFT as f64 + t * (RIGHT - LEFT) as f64
    }
    fn y(&self, rate: f64) -> f64 {
        let t = (rate.log10() - self.y0) / (self.y1 - self.y0).max(1e-9);
        BOTTOM as f64 - t * (BOTTOM - TOP) as f64
    }
}

/// Renders the picture in memory.
pub fn render(curves: &[Curve], target: f64, context: usize, title: &str) -> Result<RgbImage> {
    if !(target.is_finite() && target > 0.0) || context == 0 {
        bail!("the frontier needs a positive target and context");
    }
    let font = FontRef::try_from_slice(epaint_default_fonts::HACK_REGULAR)
        .context("the bundled Hack font does not load")?;
    let rates = curves
        .iter()
        .flat_map(|c| c.points.iter().filter_map(|p| p.1))
        .filter(|r| r.is_finite() && *r > 0.0)
        .chain([target]);
    let (lo, hi) = rates.fold((f64::MAX, f64::MIN), |(a, b), r| (a.min(r), b.max(r)));
    let min_ctx = curves
        .iter()
        .flat_map(|c| c.points.iter().map(|p| p.0))
        .filter(|&c| c > 0)
        .min()
        .unwrap_or(context)
        .min(context);
    let mut axes = Axes {
        x0: (min_ctx as f64).log2(),
        x1: (context as f64).log2(),
        y0: lo.log10().floor(),
        y1: hi.log10().ceil(),
    };
    if axes.y1 <= axes.y0 {
        axes.y1 = axes.y0 + 1.0;
    }
    if axes.x1 <= axes.x0 {
        axes.x0 = axes.x1 - 1.0;
    }
    let mut img = RgbImage::from_pixel(WIDTH, HEIGHT, WHITE);
    text(&mut img, &font, 18.0, 16, 10, title, BLACK);
    text(
        &mut img,
        &font,
        13.0,
        16,
        32,
        "each line: the best of both strategies and K = 1..4 on the wafers (and fixed region, when named) the plan chose for the model",
        BLACK,
    );
    // Grid and labels: decades of tokens/s, powers of two of context.
    let mut d = axes.y0;
    while d <= axes.y1 + 1e-9 {
        let y = axes.y(10f64.powf(d)).round() as u32;
        fill_rect(&mut img, LEFT, y, RIGHT - LEFT, 1, GRID);
        let label = format!("{}", 10f64.powf(d));
        let w = text_width(&font, 13.0, &label);
        text(
            &mut img,
            &font,
            13.0,
            LEFT as i32 - 8 - w as i32,
            y as i32 - 8,
            &label,
            BLACK,
        );
        d += 1.0;
    }
    let mut c = 1usize << (axes.x0.ceil() as u32).min(62);
    while c <= context {
        let x = axes.x(c).round() as u32;
        fill_rect(&mut img, x, TOP, 1, BOTTOM - TOP, GRID);
        let label = if c >= 1024 && c.is_multiple_of(1024) {
            format!("{}k", c / 1024)
        } else {
            c.to_string()
        };
        let w = text_width(&font, 13.0, &label);
        text(
            &mut img,
            &font,
            13.0,
            x as i32 - w as i32 / 2,
            BOTTOM as i32 + 6,
            &label,
            BLACK,
        );
        c = match c.checked_mul(2) {
            Some(n) => n,
            None => break,
        };
    }
    fill_rect(&mut img, LEFT, TOP, 1, BOTTOM - TOP + 1, BLACK);
    fill_rect(&mut img, LEFT, BOTTOM, RIGHT - LEFT + 1, 1, BLACK);
    text(
        &mut img,
        &font,
        14.0,
        LEFT as i32 + 200,
        BOTTOM as i32 + 30,
        "context (tokens, KV length per user; log scale)",
        BLACK,
    );
    text(
        &mut img,
        &font,
        14.0,
        8,
        TOP as i32 - 18,
        "decode tokens/s per user (log)",
        BLACK,
    );
    // The target: dashed.
    let ty = axes.y(target).round() as u32;
    let mut x = LEFT;
    while x < RIGHT {
        fill_rect(
            &mut img,
            x,
            ty.saturating_sub(1),
            8.min(RIGHT - x),
            2,
            TARGET,
        );
        x += 14;
    }
    // Curves, then the legend.
    for (i, curve) in curves.iter().enumerate() {
        let col = colour(i);
        let pts: Vec<Option<(f64, f64)>> = curve
            .points
            .iter()
            .map(|&(c, r)| {
                r.filter(|r| r.is_finite() && *r > 0.0)
                    .map(|r| (axes.x(c), axes.y(r)))
            })
            .collect();
        for w in pts.windows(2) {
            if let (Some(a), Some(b)) = (w[0], w[1]) {
                line(&mut img, a, b, col);
            }
        }
        for p in pts.iter().flatten() {
            let (px, py) = (p.0.round() as i64, p.1.round() as i64);
            fill_rect(
                &mut img,
                (px - 3).max(0) as u32,
                (py - 3).max(0) as u32,
                7,
                7,
                col,
            );
        }
        let ly = TOP as i32 + 20 * i as i32;
        fill_rect(&mut img, RIGHT + 20, (ly + 4) as u32, 14, 10, col);
        text(
            &mut img,
            &font,
            13.0,
            RIGHT as i32 + 40,
            ly,
            &curve.label,
            BLACK,
        );
    }
    let ly = TOP as i32 + 20 * curves.len() as i32;
    fill_rect(&mut img, RIGHT + 20, (ly + 8) as u32, 14, 2, TARGET);
    text(
        &mut img,
        &font,
        13.0,
        RIGHT as i32 + 40,
        ly,
        &format!("target {target} tokens/s"),
        BLACK,
    );
    Ok(img)
}

/// A 2-pixel line from `a` to `b`, sampled every half pixel.
fn line(img: &mut RgbImage, a: (f64, f64), b: (f64, f64), c: Rgb<u8>) {
    let steps = ((b.0 - a.0).abs().max((b.1 - a.1).abs()) * 2.0)
        .ceil()
        .max(1.0) as usize;
    for s in 0..=steps {
        let t = s as f64 / steps as f64;
        let (x, y) = (a.0 + t * (b.0 - a.0), a.1 + t * (b.1 - a.1));
        if x >= 0.0 && y >= 0.0 {
            fill_rect(img, x as u32, y as u32, 2, 2, c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_land_where_the_axes_put_them_by_hand() {
        // Contexts 1k..2k: 1k on the left edge, 2k on the right. Rates 100 and
        // 1,000 with a target of 10: decades 10..1,000, so 1,000 is the top,
        // 100 halfway down, and the target line the bottom.
        let curves = [Curve {
            label: "m".into(),
            points: vec![(1024, Some(100.0)), (2048, Some(1000.0))],
        }];
        let img = render(&curves, 10.0, 2048, "test").unwrap();
        let mid = (TOP + BOTTOM) / 2;
        assert_eq!(*img.get_pixel(LEFT + 2, mid), colour(0));
        assert_eq!(*img.get_pixel(RIGHT - 2, TOP + 2), colour(0));
        // The dashed target at the bottom axis: red just above it.
        assert_eq!(*img.get_pixel(LEFT + 20, BOTTOM - 1), TARGET);
        // The title is drawn.
        let dark = (0..200)
            .flat_map(|x| (10..30).map(move |y| (x, y)))
            .filter(|&(x, y)| img.get_pixel(x, y)[0] < 100)
            .count();
        assert!(dark > 20, "{dark}");
        assert!(render(&curves, 0.0, 2048, "t").is_err());
    }
}
