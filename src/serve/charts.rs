//! Inline SVG bar charts for the status page (pure: numbers in, markup
//! out). No script and no external asset: the page must open anywhere, on
//! a VM without internet. Every text is escaped; the charts scale to their
//! container (`viewBox`, width 100 %), so the page fits a 1280-px window.
//!
//! One run that dwarfs the rest (the cold run's 51,000 changes beside
//! runs of 3 to 5) would flatten them to nothing: the scale is capped
//! instead, and a bar over the cap is drawn full height, cut by a white
//! break and labelled with its value (its tooltip too).

use super::html::escape;

/// One stacked series: its name (legend, tooltips), colour and a value per bar.
pub struct Series<'a> {
    pub name: &'a str,
    pub color: &'a str,
    pub values: Vec<f64>,
}

const WIDTH: f64 = 400.0;
const HEIGHT: f64 = 150.0;
const LEFT: f64 = 44.0;
const BOTTOM: f64 = 18.0;
const TOP: f64 = 8.0;

/// A bar is an outlier when it is more than this many times the next tallest.
const OUTLIER_RATIO: f64 = 5.0;

/// The value the plot's top stands for: the tallest bar, or, when one or
/// two bars dwarf the rest, a quarter above the tallest of the rest (so
/// that one reaches 80 % of the plot); and whether that caps any bar.
fn scale_top(totals: &[f64]) -> (f64, bool) {
    let mut sorted: Vec<f64> = totals.iter().copied().filter(|v| *v > 0.0).collect();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let Some(&max) = sorted.first() else {
        return (0.0, false);
    };
    // At most two outliers (the cold run, and a reload after it).
    for outliers in 1..=2.min(sorted.len().saturating_sub(1)) {
        let rest = sorted[outliers];
        if sorted[outliers - 1] > rest * OUTLIER_RATIO {
            return (rest * 1.25, true);
        }
    }
    (max, false)
}

/// A readable axis number (`1.2k`, `0.35`).
fn short(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v >= 1000.0 {
        format!("{:.1}k", v / 1000.0)
    } else if v >= 10.0 || v == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// A bar per position (oldest left), the series stacked; `labels` name the
/// positions (tooltips). An empty chart says so instead of drawing nothing.
pub fn bar_chart(
    id: &str,
    title: &str,
    unit: &str,
    series: &[Series<'_>],
    labels: &[String],
) -> String {
    let bars = labels.len();
    let mut svg = format!(
        "<figure class=\"chart\"><figcaption>{}</figcaption>\
         <svg id=\"{}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" width=\"100%\" role=\"img\" aria-label=\"{}\">",
        escape(title),
        escape(id),
        escape(title)
    );
    let totals: Vec<f64> = (0..bars)
        .map(|i| {
            series
                .iter()
                .map(|s| s.values.get(i).copied().unwrap_or(0.0).max(0.0))
                .sum()
        })
        .collect();
    let (max, capped) = scale_top(&totals);
    if capped {
        // Said where there is room: the axis label is right-aligned in a
        // narrow margin.
        svg = svg.replacen(
            "</figcaption>",
            " <small class=\"cut-note\">(tallest bar cut)</small></figcaption>",
            1,
        );
    }
    let plot_h = HEIGHT - BOTTOM - TOP;
    // Axis and its top value.
    svg.push_str(&format!(
        "<line x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{}\" class=\"axis\"/>\
         <line x1=\"{LEFT}\" y1=\"{y}\" x2=\"{WIDTH}\" y2=\"{y}\" class=\"axis\"/>\
         <text x=\"{}\" y=\"{}\" class=\"tick\" text-anchor=\"end\">{}</text>\
         <text x=\"{}\" y=\"{y}\" class=\"tick\" text-anchor=\"end\">0</text>",
        HEIGHT - BOTTOM,
        LEFT - 4.0,
        TOP + 8.0,
        escape(&format!("{}{unit}", short(max))),
        LEFT - 4.0,
        y = HEIGHT - BOTTOM,
    ));
    if bars == 0 || max <= 0.0 {
        svg.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" class=\"empty\" text-anchor=\"middle\">{}</text>",
            (LEFT + WIDTH) / 2.0,
            HEIGHT / 2.0,
            if bars == 0 { "no run yet" } else { "all zero" }
        ));
    }
    let slot = (WIDTH - LEFT - 4.0) / bars.max(1) as f64;
    let bar_w = (slot * 0.7).max(1.0);
    for (i, label) in labels.iter().enumerate() {
        let x = LEFT + 2.0 + slot * i as f64 + (slot - bar_w) / 2.0;
        let mut base = HEIGHT - BOTTOM;
        let total = totals[i];
        // A bar over the cap fills the plot, its parts in proportion.
        let over = max > 0.0 && total > max;
        let per_unit = if over { plot_h / total } else { plot_h / max };
        for s in series {
            let v = s.values.get(i).copied().unwrap_or(0.0).max(0.0);
            if v <= 0.0 || max <= 0.0 {
                continue;
            }
            let h = v * per_unit;
            base -= h;
            svg.push_str(&format!(
                "<rect x=\"{x:.1}\" y=\"{base:.1}\" width=\"{bar_w:.1}\" height=\"{h:.1}\" fill=\"{}\">\
                 <title>{}: {} {}{}</title></rect>",
                escape(s.color),
                escape(label),
                escape(s.name),
                escape(&short(v)),
                escape(unit)
            ));
        }
        if over {
            let cut = TOP + plot_h * 0.2;
            svg.push_str(&format!(
                "<rect x=\"{:.1}\" y=\"{cut:.1}\" width=\"{:.1}\" height=\"3\" fill=\"#fff\" class=\"cut\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\" class=\"tick cut-label\" text-anchor=\"middle\">{}</text>",
                x - 1.0,
                bar_w + 2.0,
                x + bar_w / 2.0,
                cut - 2.0,
                escape(&short(total))
            ));
        }
    }
    svg.push_str("</svg>");
    if series.len() > 1 {
        svg.push_str("<div class=\"legend\">");
        for s in series {
            svg.push_str(&format!(
                "<span><i style=\"background:{}\"></i>{}</span>",
                escape(s.color),
                escape(s.name)
            ));
        }
        svg.push_str("</div>");
    }
    svg.push_str("</figure>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_stack_scale_to_the_largest_and_escape_text() {
        let labels: Vec<String> = ["r1", "r<2>"].iter().map(|s| s.to_string()).collect();
        let svg = bar_chart(
            "chart-x",
            "Changes & co",
            "",
            &[
                Series {
                    name: "a",
                    color: "#111",
                    values: vec![1.0, 3.0],
                },
                Series {
                    name: "b\"",
                    color: "#222",
                    values: vec![1.0, 1.0],
                },
            ],
            &labels,
        );
        assert!(svg.contains("id=\"chart-x\""));
        assert!(svg.contains("Changes &amp; co") && !svg.contains("Changes & co"));
        assert!(svg.contains("r&lt;2&gt;: a 3"), "{svg}");
        assert_eq!(svg.matches("<rect").count(), 4);
        // The tallest bar (4) fills the plot: 3 of 4 and 1 of 4.
        let plot = HEIGHT - BOTTOM - TOP;
        assert!(
            svg.contains(&format!("height=\"{:.1}\"", plot * 0.75)),
            "{svg}"
        );
        assert!(svg.contains("b&quot;"), "legend escaped");
    }

    #[test]
    fn a_bar_that_dwarfs_the_rest_is_cut_and_the_rest_stay_readable() {
        assert_eq!(scale_top(&[51_000.0, 3.0, 5.0, 4.0]), (6.25, true));
        assert_eq!(scale_top(&[51_000.0, 40_000.0, 3.0, 5.0]), (6.25, true));
        assert_eq!(scale_top(&[10.0, 3.0, 5.0]), (10.0, false));
        assert_eq!(scale_top(&[7.0]), (7.0, false));
        assert_eq!(scale_top(&[0.0, 0.0]), (0.0, false));
        let labels: Vec<String> = (0..4).map(|i| format!("r{i}")).collect();
        let svg = bar_chart(
            "c",
            "t",
            "",
            &[Series {
                name: "a",
                color: "#111",
                values: vec![51_000.0, 3.0, 5.0, 4.0],
            }],
            &labels,
        );
        let plot = HEIGHT - BOTTOM - TOP;
        // The cold run fills the plot, cut and labelled with its value...
        assert!(svg.contains(&format!("height=\"{plot:.1}\"")), "{svg}");
        assert!(
            svg.contains("class=\"cut\"") && svg.contains(">51k</text>"),
            "{svg}"
        );
        assert!(
            svg.contains(">6.25</text>") && svg.contains("(tallest bar cut)"),
            "{svg}"
        );
        // ... and the tallest of the rest stands at 80 % of it.
        assert!(
            svg.contains(&format!("height=\"{:.1}\"", plot * 0.8)),
            "{svg}"
        );
    }

    #[test]
    fn no_runs_and_all_zero_say_so() {
        assert!(bar_chart("c", "t", "", &[], &[]).contains("no run yet"));
        let zero = bar_chart(
            "c",
            "t",
            " s",
            &[Series {
                name: "a",
                color: "#111",
                values: vec![0.0],
            }],
            &["r1".into()],
        );
        assert!(zero.contains("all zero") && !zero.contains("<rect"));
    }
}
