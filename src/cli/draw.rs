//! The placement picture (`wafer place --png`): for each wafer, the regions coloured
//! by the layers they hold, and beside it a heat map of how full each PE's SRAM is,
//! with a title, a colour key and units a student can read.
//!
//! Text is rasterised by `ab_glyph` from the Hack font shipped inside the
//! `epaint_default_fonts` crate, so no system font is needed at run time.

use ab_glyph::{Font, FontRef, PxScale, ScaleFont};
use anyhow::{Context, Result};
use image::{Rgb, RgbImage};
use std::path::Path;
use wafer_lower::placement::{Item, Placement};

const WHITE: Rgb<u8> = Rgb([255, 255, 255]);
const BLACK: Rgb<u8> = Rgb([20, 20, 20]);
const IDLE: Rgb<u8> = Rgb([225, 225, 225]);
const EMBED: Rgb<u8> = Rgb([90, 90, 90]);
const HEAD: Rgb<u8> = Rgb([160, 40, 140]);
const OVER: Rgb<u8> = Rgb([220, 0, 0]);
const BORDER: Rgb<u8> = Rgb([255, 255, 255]);

/// Draws `p` to a PNG at `path`.
pub fn draw_placement(p: &Placement, title: &str, path: &Path) -> Result<()> {
    let img = render(p, title)?;
    img.save(path)
        .with_context(|| format!("cannot write PNG {}", path.display()))
}

/// Renders the picture in memory.
pub fn render(p: &Placement, title: &str) -> Result<RgbImage> {
    let font = FontRef::try_from_slice(epaint_default_fonts::HACK_REGULAR)
        .context("the bundled Hack font does not load")?;
    let (fw, fh) = (p.fabric.width as f64, p.fabric.height as f64);
    // Panels about 420 px tall for one wafer, smaller when there are many.
    let panel_h = match p.wafers {
        1 => 480.0,
        2..=4 => 360.0,
        _ => 240.0,
    };
    let scale = panel_h / fh;
    let (pw, ph) = ((fw * scale).round() as u32, (fh * scale).round() as u32);
    let per_line = p.wafers.min(4);
    let lines = p.wafers.div_ceil(per_line);
    let gap = 16u32;
    let cell_w = 2 * pw + 3 * gap;
    let cell_h = ph + 28;
    let top = 70u32;
    let legend_h = 120u32;
    let width = (per_line * cell_w + gap).max(900);
    let height = top + lines * (cell_h + gap) + legend_h;
    let mut img = RgbImage::from_pixel(width, height, WHITE);

    text(&mut img, &font, 20.0, gap as i32, 8, title, BLACK);
    text(
        &mut img,
        &font,
        14.0,
        gap as i32,
        36,
        &format!(
            "each wafer: {} x {} PEs; left: regions by layer, right: SRAM used per PE ({} bytes each); fits: {}",
            p.fabric.width,
            p.fabric.height,
            p.sizes.sram,
            if p.fits() { "yes" } else { "NO" }
        ),
        BLACK,
    );

    let layers = p
        .regions
        .iter()
        .flat_map(|r| r.items.iter())
        .filter(|i| matches!(i, Item::Layer(_)))
        .count()
        .max(1);
    for wafer in 0..p.wafers {
        let cx = gap + (wafer % per_line) * cell_w;
        let cy = top + (wafer / per_line) * (cell_h + gap);
        text(
            &mut img,
            &font,
            14.0,
            cx as i32,
            cy as i32,
            &format!("wafer {wafer}: regions"),
            BLACK,
        );
        text(
            &mut img,
            &font,
            14.0,
            (cx + pw + gap) as i32,
            cy as i32,
            &format!("wafer {wafer}: SRAM fill"),
            BLACK,
        );
        let (ax, ay) = (cx, cy + 22);
        let (bx, by) = (cx + pw + gap, cy + 22);
        fill_rect(&mut img, ax, ay, pw, ph, IDLE);
        fill_rect(&mut img, bx, by, pw, ph, IDLE);
        for (ri, r) in p
            .regions
            .iter()
            .enumerate()
            .filter(|(_, r)| r.wafer == wafer)
        {
            let x0 = (r.region.origin.x as f64 * scale).round() as u32;
            let y0 = (r.region.origin.y as f64 * scale).round() as u32;
            let x1 = ((r.region.origin.x + r.region.width()) as f64 * scale).round() as u32;
            let y1 = ((r.region.origin.y + r.region.height()) as f64 * scale).round() as u32;
            let colour = region_colour(&r.items, layers);
            fill_rect(&mut img, ax + x0, ay + y0, x1 - x0, y1 - y0, colour);
            outline(&mut img, ax + x0, ay + y0, x1 - x0, y1 - y0, BORDER);
            // Heat map: sample the PE under each pixel's centre.
            for py in y0..y1 {
                for px in x0..x1 {
                    let pe_x = (((px as f64 + 0.5) / scale) as u32)
                        .clamp(r.region.origin.x, r.region.origin.x + r.region.width() - 1);
                    let pe_y = (((py as f64 + 0.5) / scale) as u32)
                        .clamp(r.region.origin.y, r.region.origin.y + r.region.height() - 1);
                    let b = r.footprint.at(
                        &p.sizes,
                        p.context_tokens,
                        (pe_x - r.region.origin.x) as u64,
                        (pe_y - r.region.origin.y) as u64,
                    );
                    let frac = b.total() as f64 / p.sizes.sram as f64;
                    img.put_pixel(bx + px, by + py, heat(frac));
                }
            }
            outline(&mut img, bx + x0, by + y0, x1 - x0, y1 - y0, BORDER);
            let label = short_label(&r.items, ri);
            let w = text_width(&font, 11.0, &label);
            if (w as u32) + 4 < x1 - x0 && y1 - y0 > 14 {
                text(
                    &mut img,
                    &font,
                    11.0,
                    (ax + x0 + 2) as i32,
                    (ay + y0 + 2) as i32,
                    &label,
                    contrast(colour),
                );
            }
        }
    }

    // Legend: region colours.
    let ly = height - legend_h + 8;
    let lx = gap;
    text(
        &mut img,
        &font,
        14.0,
        lx as i32,
        ly as i32,
        "Regions (left panels):",
        BLACK,
    );
    let mut x = lx;
    let sy = ly + 24;
    for (colour, label) in [(EMBED, "embedding"), (HEAD, "LM head"), (IDLE, "idle PEs")] {
        fill_rect(&mut img, x, sy, 16, 16, colour);
        outline(&mut img, x, sy, 16, 16, BLACK);
        text(
            &mut img,
            &font,
            13.0,
            (x + 22) as i32,
            sy as i32,
            label,
            BLACK,
        );
        x += 40 + text_width(&font, 13.0, label) as u32;
    }
    let bar_w = 260u32;
    for i in 0..bar_w {
        let c = layer_colour(i as f64 / (bar_w - 1) as f64);
        fill_rect(&mut img, x + i, sy, 1, 16, c);
    }
    text(
        &mut img,
        &font,
        13.0,
        x as i32,
        (sy + 20) as i32,
        "layer 0",
        BLACK,
    );
    let last = format!("layer {}", layers - 1);
    let lw = text_width(&font, 13.0, &last) as u32;
    text(
        &mut img,
        &font,
        13.0,
        (x + bar_w - lw) as i32,
        (sy + 20) as i32,
        &last,
        BLACK,
    );
    text(
        &mut img,
        &font,
        13.0,
        (x + bar_w + 10) as i32,
        sy as i32,
        "(colour = first layer in the region)",
        BLACK,
    );

    // Legend: heat map scale.
    let hy = sy + 48;
    text(
        &mut img,
        &font,
        14.0,
        lx as i32,
        hy as i32,
        "SRAM used per PE (right panels), KB:",
        BLACK,
    );
    let hx = lx + text_width(&font, 14.0, "SRAM used per PE (right panels), KB:") as u32 + 12;
    let bar_w = 320u32;
    for i in 0..bar_w {
        fill_rect(
            &mut img,
            hx + i,
            hy,
            1,
            16,
            heat(i as f64 / (bar_w - 1) as f64),
        );
    }
    outline(&mut img, hx, hy, bar_w, 16, BLACK);
    let kb = p.sizes.sram as f64 / 1024.0;
    for k in 0..=4 {
        let label = format!("{:.0}", kb * k as f64 / 4.0);
        let tx = hx + bar_w * k / 4;
        let tw = text_width(&font, 12.0, &label) as u32;
        text(
            &mut img,
            &font,
            12.0,
            tx.saturating_sub(tw / 2) as i32,
            (hy + 18) as i32,
            &label,
            BLACK,
        );
    }
    let ox = hx + bar_w + 24;
    fill_rect(&mut img, ox, hy, 16, 16, OVER);
    text(
        &mut img,
        &font,
        13.0,
        (ox + 22) as i32,
        hy as i32,
        "over capacity",
        BLACK,
    );
    let ix = ox + 40 + text_width(&font, 13.0, "over capacity") as u32;
    fill_rect(&mut img, ix, hy, 16, 16, IDLE);
    outline(&mut img, ix, hy, 16, 16, BLACK);
    text(
        &mut img,
        &font,
        13.0,
        (ix + 22) as i32,
        hy as i32,
        "idle PE",
        BLACK,
    );
    Ok(img)
}

fn short_label(items: &[Item], index: usize) -> String {
    let layers: Vec<usize> = items
        .iter()
        .filter_map(|i| match i {
            Item::Layer(l) => Some(*l),
            _ => None,
        })
        .collect();
    let mut parts = Vec::new();
    if items.contains(&Item::Embedding) {
        parts.push("emb".to_string());
    }
    match (layers.first(), layers.last()) {
        (Some(a), Some(b)) if a == b => parts.push(format!("L{a}")),
        (Some(a), Some(b)) => parts.push(format!("L{a}-{b}")),
        _ => {}
    }
    if items.contains(&Item::LmHead) {
        parts.push("head".to_string());
    }
    if parts.is_empty() {
        format!("#{index}")
    } else {
        parts.join(" ")
    }
}

fn region_colour(items: &[Item], layers: usize) -> Rgb<u8> {
    match items.iter().find_map(|i| match i {
        Item::Layer(l) => Some(*l),
        _ => None,
    }) {
        Some(l) => layer_colour(l as f64 / (layers.max(2) - 1) as f64),
        None if items.contains(&Item::Embedding) => EMBED,
        None => HEAD,
    }
}

/// Linear interpolation through colour stops at evenly spaced positions.
fn ramp(stops: &[[f64; 3]], t: f64) -> Rgb<u8> {
    let t = t.clamp(0.0, 1.0) * (stops.len() - 1) as f64;
    let i = (t.floor() as usize).min(stops.len() - 2);
    let f = t - i as f64;
    let c = |k: usize| (stops[i][k] + (stops[i + 1][k] - stops[i][k]) * f).round() as u8;
    Rgb([c(0), c(1), c(2)])
}

/// Layer colours: blue -> teal -> yellow -> orange, distinct from the heat map.
fn layer_colour(t: f64) -> Rgb<u8> {
    ramp(
        &[
            [49.0, 54.0, 149.0],
            [69.0, 117.0, 180.0],
            [116.0, 196.0, 118.0],
            [254.0, 224.0, 144.0],
            [244.0, 109.0, 67.0],
        ],
        t,
    )
}

/// SRAM fill, 0..1 of capacity, on a viridis-like scale; red above capacity.
fn heat(frac: f64) -> Rgb<u8> {
    if frac > 1.0 {
        return OVER;
    }
    ramp(
        &[
            [68.0, 1.0, 84.0],
            [59.0, 82.0, 139.0],
            [33.0, 145.0, 140.0],
            [94.0, 201.0, 98.0],
            [253.0, 231.0, 37.0],
        ],
        frac,
    )
}

fn contrast(c: Rgb<u8>) -> Rgb<u8> {
    let l = 0.299 * c[0] as f64 + 0.587 * c[1] as f64 + 0.114 * c[2] as f64;
    if l > 140.0 {
        BLACK
    } else {
        WHITE
    }
}

pub(crate) fn fill_rect(img: &mut RgbImage, x: u32, y: u32, w: u32, h: u32, c: Rgb<u8>) {
    for yy in y..(y + h).min(img.height()) {
        for xx in x..(x + w).min(img.width()) {
            img.put_pixel(xx, yy, c);
        }
    }
}

fn outline(img: &mut RgbImage, x: u32, y: u32, w: u32, h: u32, c: Rgb<u8>) {
    if w == 0 || h == 0 {
        return;
    }
    fill_rect(img, x, y, w, 1, c);
    fill_rect(img, x, y + h - 1, w, 1, c);
    fill_rect(img, x, y, 1, h, c);
    fill_rect(img, x + w - 1, y, 1, h, c);
}

pub(crate) fn text_width(font: &FontRef, size: f32, s: &str) -> f32 {
    let sf = font.as_scaled(PxScale::from(size));
    s.chars().map(|ch| sf.h_advance(sf.glyph_id(ch))).sum()
}

/// Draws `s` with its top-left corner at `(x, y)`, blending glyph coverage.
pub(crate) fn text(
    img: &mut RgbImage,
    font: &FontRef,
    size: f32,
    x: i32,
    y: i32,
    s: &str,
    colour: Rgb<u8>,
) {
    let scale = PxScale::from(size);
    let sf = font.as_scaled(scale);
    let mut caret = x as f32;
    let baseline = y as f32 + sf.ascent();
    for ch in s.chars() {
        let id = sf.glyph_id(ch);
        let glyph = id.with_scale_and_position(scale, ab_glyph::point(caret, baseline));
        caret += sf.h_advance(id);
        if let Some(outlined) = font.outline_glyph(glyph) {
            let bounds = outlined.px_bounds();
            outlined.draw(|gx, gy, cov| {
                let px = bounds.min.x as i32 + gx as i32;
                let py = bounds.min.y as i32 + gy as i32;
                if px < 0 || py < 0 || px as u32 >= img.width() || py as u32 >= img.height() {
                    return;
                }
                let bg = *img.get_pixel(px as u32, py as u32);
                let mix =
                    |k: usize| (bg[k] as f32 * (1.0 - cov) + colour[k] as f32 * cov).round() as u8;
                img.put_pixel(px as u32, py as u32, Rgb([mix(0), mix(1), mix(2)]));
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wafer_core::WaferSpec;
    use wafer_lower::placement::{place, PlaceOptions, Strategy};

    #[test]
    fn picture_has_text_regions_and_a_heat_map_matching_the_budget() {
        let spec = WaferSpec::preset("wse3").unwrap();
        let model = wafer_models::presets::lookup("smollm2-135m").unwrap();
        let opts = PlaceOptions {
            context_tokens: 8192,
            region: None,
            wafers: Some(1),
            strategy: Strategy::Packed,
        };
        let p = place(&model, &spec, &opts).unwrap();
        let img = render(&p, "smollm2-135m test").unwrap();
        assert!(img.width() >= 900 && img.height() > 480);
        // The title is drawn: dark pixels in its band.
        let dark = (0..300)
            .flat_map(|x| (8..30).map(move |y| (x, y)))
            .filter(|&(x, y)| img.get_pixel(x, y)[0] < 100)
            .count();
        assert!(dark > 50, "title text missing ({dark} dark pixels)");
        // The heat panel's pixel over PE (0, 0) of region 0 has that PE's colour.
        let scale = 480.0 / p.fabric.height as f64;
        let pw = (p.fabric.width as f64 * scale).round() as u32;
        let (bx, by) = (16 + pw + 16, 70 + 22);
        let r = &p.regions[0];
        let b = r.footprint.at(&p.sizes, p.context_tokens, 0, 0);
        let expected = heat(b.total() as f64 / p.sizes.sram as f64);
        // One pixel in from the corner, past the region outline; region 0 starts
        // at the fabric's corner, so panel coordinates are PE coordinates.
        let (px, py) = (1u32, 1u32);
        assert_eq!(r.region.origin, wafer_core::PeCoord::new(0, 0));
        let pe_x = ((px as f64 + 0.5) / scale) as u64;
        let pe_y = ((py as f64 + 0.5) / scale) as u64;
        let here = r.footprint.at(&p.sizes, p.context_tokens, pe_x, pe_y);
        let got = *img.get_pixel(bx + px, by + py);
        assert_eq!(got, heat(here.total() as f64 / p.sizes.sram as f64));
        assert_ne!(expected, IDLE);
    }
}
