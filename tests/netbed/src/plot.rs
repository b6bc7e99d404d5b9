//! One picture per profile: the backup's and the foreground's rate on the
//! wire (top) and the ping RTT (bottom) over the run, drawn as SVG and
//! turned into PNG by librsvg.

use std::path::Path;

use anyhow::{Context, Result};

use crate::ProfileResult;

const W: f64 = 1200.0;
const H: f64 = 640.0;
const L: f64 = 70.0;
const R: f64 = 20.0;

pub fn write(png: &Path, r: &ProfileResult) -> Result<()> {
    let end = r.wire.last().map_or(1.0, |w| w.0 + 0.5);
    let x = |t: f64| L + (W - L - R) * t / end;
    let cap = f64::from(r.up_kbit) / 1000.0 * 1.1;
    let (top0, top1) = (40.0, 300.0);
    let (bot0, bot1) = (360.0, 600.0);
    let y_rate = |m: f64| top1 - (top1 - top0) * (m / cap).min(1.0);
    let max_ms = r.pings.iter().map(|p| p.1).fold(100.0, f64::max).min(400.0);
    let y_ms = |m: f64| bot1 - (bot1 - bot0) * (m / max_ms).min(1.0);
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="DejaVu Sans" font-size="13">
<rect width="100%" height="100%" fill="white"/>
<text x="{L}" y="24" font-size="16">{} — {} kbit/s up, 40 ms RTT: upload rate (Mbit/s) and ping RTT (ms)</text>
"#,
        r.profile, r.up_kbit
    );
    for (y0, y1) in [(top0, top1), (bot0, bot1)] {
        s += &format!(
            r##"<rect x="{L}" y="{y0}" width="{}" height="{}" fill="none" stroke="#999"/>"##,
            W - L - R,
            y1 - y0
        );
    }
    for k in 0..=4 {
        let m = cap * f64::from(k) / 4.0;
        s += &format!(
            r#"<text x="{}" y="{}" text-anchor="end">{m:.1}</text>"#,
            L - 6.0,
            y_rate(m) + 4.0
        );
        let ms = max_ms * f64::from(k) / 4.0;
        s += &format!(
            r#"<text x="{}" y="{}" text-anchor="end">{ms:.0}</text>"#,
            L - 6.0,
            y_ms(ms) + 4.0
        );
    }
    // Phase labels on two alternating rows, so close marks do not overprint.
    for (i, (t, label)) in r.marks.iter().enumerate() {
        s += &format!(
            r##"<line x1="{0}" x2="{0}" y1="{top0}" y2="{bot1}" stroke="#ccc" stroke-dasharray="4 4"/><text x="{1}" y="{2}" fill="#555">{label}</text>"##,
            x(*t),
            x(*t) + 3.0,
            top0 + 14.0 + 16.0 * (i % 2) as f64
        );
    }
    let line = |pts: Vec<(f64, f64)>, colour: &str| {
        let p: Vec<String> = pts.iter().map(|(a, b)| format!("{a:.1},{b:.1}")).collect();
        format!(
            r##"<polyline fill="none" stroke="{colour}" stroke-width="1.6" points="{}"/>"##,
            p.join(" ")
        )
    };
    s += &line(
        r.wire
            .iter()
            .map(|w| (x(w.0 + 0.25), y_rate(w.1 * 8.0 / 1e6)))
            .collect(),
        "#1f6feb",
    );
    s += &line(
        r.wire
            .iter()
            .map(|w| (x(w.0 + 0.25), y_rate(w.2 * 8.0 / 1e6)))
            .collect(),
        "#d4731b",
    );
    for (t, ms) in &r.pings {
        s += &format!(
            r##"<circle cx="{:.1}" cy="{:.1}" r="1.6" fill="#b42318"/>"##,
            x(*t),
            y_ms(*ms)
        );
    }
    s += &format!(
        r##"<text x="{}" y="{}" fill="#1f6feb">backup</text><text x="{}" y="{}" fill="#d4731b">foreground</text><text x="{}" y="{}" fill="#b42318">ping RTT</text><text x="{}" y="{}" text-anchor="middle">seconds: 0 … {end:.0}</text>"##,
        W - 260.0,
        24.0,
        W - 190.0,
        24.0,
        W - 100.0,
        bot0 + 14.0,
        (L + W - R) / 2.0,
        H - 12.0
    );
    s += "</svg>\n";
    let svg = png.with_extension("svg");
    std::fs::write(&svg, s)?;
    let st = std::process::Command::new("rsvg-convert")
        .arg("-o")
        .arg(png)
        .arg(&svg)
        .status()
        .context("cannot run rsvg-convert (librsvg2-bin, installed by `make test-deps`)")?;
    anyhow::ensure!(st.success(), "rsvg-convert {} failed", svg.display());
    let _ = std::fs::remove_file(svg);
    Ok(())
}
