//! Interactive SVG flame graphs, rendered from the folded stacks.

use std::io::{self, BufWriter, Write};

use hearth_profile::Report;
use inferno::flamegraph::{self, Options};

use crate::folded::folded_lines;
use crate::{summary, ExportError};

/// Title shown at the top of every flame graph.
pub const TITLE: &str = "Hearth CPU profile";

/// Writes an SVG flame graph of `report`: one tower per process, callers
/// below callees, frame widths proportional to sample counts.
///
/// A report without samples still yields a well-formed SVG that says so,
/// since the renderer refuses empty input.
pub fn write_flamegraph_svg(report: &Report, w: impl Write) -> Result<(), ExportError> {
    let mut w = BufWriter::new(w);
    let lines = folded_lines(report);
    if lines.is_empty() {
        write_empty_svg(report, &mut w)?;
    } else {
        let mut options = Options::default();
        options.title = TITLE.to_string();
        options.subtitle = Some(summary(report));
        options.count_name = "samples".to_string();
        // Colors derived from names keep the output reproducible.
        options.hash = true;
        flamegraph::from_lines(&mut options, lines.iter().map(String::as_str), &mut w)
            .map_err(ExportError::Flamegraph)?;
    }
    w.flush()?;
    Ok(())
}

/// A small SVG carrying the title and a "no samples" message.
fn write_empty_svg(report: &Report, w: &mut impl Write) -> io::Result<()> {
    // Only the fixed title and numbers go into the markup: nothing to escape.
    write!(
        w,
        concat!(
            "<?xml version=\"1.0\" standalone=\"no\"?>\n",
            "<svg version=\"1.1\" width=\"1200\" height=\"100\" viewBox=\"0 0 1200 100\" ",
            "xmlns=\"http://www.w3.org/2000/svg\">\n",
            "<rect x=\"0\" y=\"0\" width=\"100%\" height=\"100%\" fill=\"#eeeeee\"/>\n",
            "<text x=\"600\" y=\"30\" text-anchor=\"middle\" font-family=\"Verdana\" ",
            "font-size=\"17\">{title}</text>\n",
            "<text x=\"600\" y=\"65\" text-anchor=\"middle\" font-family=\"Verdana\" ",
            "font-size=\"12\">No samples were recorded ({summary}).</text>\n",
            "</svg>\n",
        ),
        title = TITLE,
        summary = summary(report),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata;

    fn render(report: &Report) -> String {
        let mut out = Vec::new();
        write_flamegraph_svg(report, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn assert_svg_shape(svg: &str) {
        let head = svg.trim_start();
        assert!(
            head.starts_with("<?xml") || head.starts_with("<svg"),
            "{head:.80}"
        );
        let opened = svg.matches("<svg").count();
        assert!(opened >= 1);
        assert_eq!(opened, svg.matches("</svg>").count(), "balanced <svg> tags");
        assert!(svg.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn svg_contains_processes_and_functions() {
        let svg = render(&testdata::two_processes());
        assert_svg_shape(&svg);
        assert!(svg.contains(TITLE));
        for name in [
            "app",
            "db",
            "__libc_start_main",
            "main",
            "work",
            "hash",
            "do_syscall_64",
            "recurse",
            "weird:name with newline",
        ] {
            assert!(
                svg.contains(&format!("<title>{name} (")),
                "missing frame {name}"
            );
        }
        assert!(svg.contains("samples"));
        assert_eq!(svg.matches("<g").count(), svg.matches("</g>").count());
    }

    #[test]
    fn svg_is_deterministic() {
        let report = testdata::two_processes();
        assert_eq!(render(&report), render(&report));
    }

    #[test]
    fn empty_report_yields_a_message_svg() {
        let svg = render(&Report::default());
        assert_svg_shape(&svg);
        assert!(svg.contains("No samples were recorded"));
        assert!(svg.contains(TITLE));

        let mut zero = testdata::two_processes();
        for s in &mut zero.samples {
            s.count = 0;
        }
        let svg = render(&zero);
        assert_svg_shape(&svg);
        assert!(svg.contains("No samples were recorded"));
        assert!(svg.contains("7 records lost"));
    }
}
