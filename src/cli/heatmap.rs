//! The heat map of a traced fabric run (`wafer trace --png`): one cell per PE
//! of the region in two panels — left, the utilisation of the PE's busiest
//! outgoing link (busy cycles over the run's span); right, the most wavelets
//! any of its router buffers or queues held at once — each with a colour bar
//! and its numbers, under a title naming the program.
//!
//! The data are the trace's aggregates ([`wafer_sim::fabric::trace::Heat`]),
//! which cover every PE whatever the timeline's sampling. Text and colours
//! come from the placement picture's helpers (`draw.rs`).

use super::draw::{fill_rect, heat, outline, text, text_width, BLACK, WHITE};
use ab_glyph::FontRef;
use anyhow::{Context, Result};
use image::RgbImage;
use wafer_sim::fabric::trace::Heat;

/// The longer side of a panel, in pixels.
pub const PANEL: u32 = 480;
/// Margin and space between panels.
pub const GAP: u32 = 24;
/// The title band above the panels.
pub const TOP: u32 = 76;
/// A panel's caption above it.
pub const CAPTION: u32 = 22;
/// Under a panel: its colour bar and numbers, and the line explaining them.
pub const LEGEND: u32 = 92;

/// A panel's size for a `width x height` region: the longer side
/// [`PANEL`] pixels, a PE at least one pixel.
pub fn panel_size(width: u32, height: u32) -> (u32, u32) {
    let scale = PANEL as f64 / width.max(height) as f64;
    let side = |n: u32| ((n as f64 * scale).round() as u32).max(1);
    (side(width), side(height))
}

/// The picture's size: two [`PANEL`]-wide slots side by side with [`GAP`]
/// around them (a narrower panel sits at its slot's left; the caption and the
/// colour bar span the slot), under the title, above the legends.
pub fn image_size(width: u32, height: u32) -> (u32, u32) {
    let (_, ph) = panel_size(width, height);
    (2 * PANEL + 3 * GAP, TOP + CAPTION + ph + LEGEND)
}

/// Renders the heat map; `title` names the program, `subtitle` its figures.
pub fn render(h: &Heat, title: &str, subtitle: &str) -> Result<RgbImage> {
    let font = FontRef::try_from_slice(epaint_default_fonts::HACK_REGULAR)
        .context("the bundled Hack font does not load")?;
    let n = h.width as usize * h.height as usize;
    if h.width == 0 || h.height == 0 || h.link_utilisation.len() != n || h.queue_peak.len() != n {
        anyhow::bail!(
            "heat map data of {} and {} values for a {}x{} region",
            h.link_utilisation.len(),
            h.queue_peak.len(),
            h.width,
            h.height
        );
    }
    let (pw, ph) = panel_size(h.width, h.height);
    let (iw, ih) = image_size(h.width, h.height);
    let mut img = RgbImage::from_pixel(iw, ih, WHITE);
    text(&mut img, &font, 20.0, GAP as i32, 8, title, BLACK);
    text(&mut img, &font, 14.0, GAP as i32, 38, subtitle, BLACK);

    let util_max = h.link_utilisation.iter().copied().fold(0.0, f64::max);
    let queue_max = h.queue_peak.iter().copied().max().unwrap_or(0);
    let util: Vec<f64> = h.link_utilisation.clone();
    let queue: Vec<f64> = h.queue_peak.iter().map(|&q| q as f64).collect();
    let panels = [
        (
            "link utilisation",
            &util,
            util_max,
            format!(
                "busiest of N/S/E/W: busy cycles / {} cycles; scale 0 to max",
                h.span
            ),
        ),
        (
            "peak queue occupancy (wavelets)",
            &queue,
            queue_max as f64,
            "most held by any of the PE's buffers and queues; scale 0 to max".to_string(),
        ),
    ];
    for (i, (caption, values, max, note)) in panels.into_iter().enumerate() {
        let bar = PANEL;
        let x0 = GAP + i as u32 * (PANEL + GAP);
        let y0 = TOP + CAPTION;
        text(&mut img, &font, 14.0, x0 as i32, TOP as i32, caption, BLACK);
        draw_panel(&mut img, h, values, max, x0, y0, pw, ph);
        outline(&mut img, x0, y0, pw, ph, BLACK);
        let ly = y0 + ph + 10;
        for k in 0..bar {
            fill_rect(
                &mut img,
                x0 + k,
                ly,
                1,
                16,
                heat(k as f64 / (bar - 1) as f64),
            );
        }
        outline(&mut img, x0, ly, bar, 16, BLACK);
        for t in 0..=4u32 {
            let v = max * t as f64 / 4.0;
            let label = if i == 0 {
                format!("{:.1}%", 100.0 * v)
            } else if v.fract() == 0.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.2}")
            };
            let tw = text_width(&font, 12.0, &label) as u32;
            // The end labels stay under the bar; the others centre on their tick.
            let tx = match t {
                0 => x0,
                4 => (x0 + bar).saturating_sub(tw),
                _ => (x0 + bar * t / 4).saturating_sub(tw / 2),
            };
            text(
                &mut img,
                &font,
                12.0,
                tx as i32,
                (ly + 20) as i32,
                &label,
                BLACK,
            );
        }
        text(
            &mut img,
            &font,
            12.0,
            x0 as i32,
            (ly + 40) as i32,
            &note,
            BLACK,
        );
    }
    Ok(img)
}

/// One panel: each pixel shows the PE under its centre, coloured by its value
/// over `max` (the bottom of the scale when every value is 0); cells of 8
/// pixels or more are separated by white lines.
#[allow(clippy::too_many_arguments)]
fn draw_panel(
    img: &mut RgbImage,
    h: &Heat,
    values: &[f64],
    max: f64,
    x0: u32,
    y0: u32,
    pw: u32,
    ph: u32,
) {
    let (sx, sy) = (pw as f64 / h.width as f64, ph as f64 / h.height as f64);
    let cell = |p: u32, s: f64, n: u32| (((p as f64 + 0.5) / s) as u32).min(n - 1);
    // The last pixel of a cell, when cells are large enough to show lines.
    let edge = |p: u32, s: f64, n: u32| s >= 8.0 && cell(p, s, n) != cell(p + 1, s, n);
    for py in 0..ph {
        let y = cell(py, sy, h.height);
        for px in 0..pw {
            let x = cell(px, sx, h.width);
            if edge(px, sx, h.width) || edge(py, sy, h.height) {
                img.put_pixel(x0 + px, y0 + py, WHITE);
                continue;
            }
            let v = values[y as usize * h.width as usize + x as usize];
            let frac = if max > 0.0 { v / max } else { 0.0 };
            img.put_pixel(x0 + px, y0 + py, heat(frac));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heat_of(w: u32, h: u32) -> Heat {
        let n = (w * h) as usize;
        // PE (x, y): utilisation x / (w - 1) / 2 (the east column is the
        // busiest at 50%), peak queue y.
        Heat {
            width: w,
            height: h,
            link_utilisation: (0..n)
                .map(|i| (i as u32 % w) as f64 / (w - 1) as f64 / 2.0)
                .collect(),
            queue_peak: (0..n).map(|i| i as u32 / w).collect(),
            span: 100,
        }
    }

    #[test]
    fn a_16_by_16_region_has_30_pixel_cells_and_its_colours() {
        let hm = heat_of(16, 16);
        let img = render(&hm, "gemv on 16x16", "test").unwrap();
        // Panels 480 x 480 (16 PEs of 30 px), two side by side with 24 px
        // around them: 2 x 480 + 3 x 24 = 1032 wide; 76 + 22 + 480 + 92 tall.
        assert_eq!(img.dimensions(), (1032, 670));
        let (x0, y0) = (24u32, 98u32);
        // Utilisation panel: the west column is 0 (bottom colour), the east
        // column the maximum (top colour); the centre of PE (5, 0) is 5/15
        // of the way.
        assert_eq!(*img.get_pixel(x0 + 15, y0 + 15), heat(0.0));
        assert_eq!(*img.get_pixel(x0 + 15 * 30 + 15, y0 + 200), heat(1.0));
        assert_eq!(*img.get_pixel(x0 + 5 * 30 + 15, y0 + 15), heat(5.0 / 15.0));
        // Queue panel: PE (·, y) holds y of at most 15.
        let qx = x0 + 480 + 24;
        assert_eq!(*img.get_pixel(qx + 100, y0 + 15), heat(0.0));
        assert_eq!(*img.get_pixel(qx + 100, y0 + 3 * 30 + 15), heat(3.0 / 15.0));
        assert_eq!(*img.get_pixel(qx + 100, y0 + 15 * 30 + 15), heat(1.0));
        // The title is drawn: dark pixels in its band.
        let dark = (0..300)
            .flat_map(|x| (8..30).map(move |y| (x, y)))
            .filter(|&(x, y)| img.get_pixel(x, y)[0] < 100)
            .count();
        assert!(dark > 50, "title missing ({dark} dark pixels)");
    }

    #[test]
    fn a_long_region_keeps_its_aspect_and_a_wide_one_one_pixel_per_pe_at_least() {
        assert_eq!(panel_size(1, 4), (120, 480));
        assert_eq!(image_size(1, 4), (1032, 76 + 22 + 480 + 92));
        assert_eq!(panel_size(960, 1), (480, 1));
        let hm = heat_of(960, 1);
        assert_eq!(
            render(&hm, "t", "s").unwrap().dimensions(),
            (1032, 76 + 22 + 1 + 92)
        );
    }

    #[test]
    fn data_of_the_wrong_size_is_an_error() {
        let mut hm = heat_of(4, 4);
        hm.queue_peak.pop();
        let err = render(&hm, "t", "s").unwrap_err().to_string();
        assert!(err.contains("15 values for a 4x4 region"), "{err}");
    }
}
