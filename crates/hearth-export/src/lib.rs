//! Encoders that turn a symbolized [`Report`] into files people and tools read.
//!
//! * [`pprof`]: gzip-compressed pprof protobuf (`.pb.gz`).
//! * [`folded`]: one `root;...;leaf count` line per distinct stack (`.folded`).
//! * [`flamegraph`]: an interactive SVG flame graph (`.svg`).
//! * [`top`]: a plain-text table of the hottest functions for the terminal.
//!
//! [`OutputFormat::from_path`] picks a file encoder from an output path and
//! [`write_report`] runs it.

pub mod flamegraph;
pub mod folded;
pub mod grouping;
pub mod otlp;
pub mod pprof;
pub mod top;

#[cfg(test)]
mod testdata;

use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use hearth_profile::Report;

pub use flamegraph::write_flamegraph_svg;
pub use folded::{folded_lines, parse_folded_line, write_folded};
pub use pprof::{encode_pprof, write_pprof_gz};
pub use top::{top_functions, top_table, FunctionShare};

/// Errors from the encoders.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Writing the output failed.
    #[error("failed to write the profile: {0}")]
    Io(#[from] io::Error),
    /// The output path's extension does not name a supported format.
    #[error(
        "cannot choose an output format for {path:?}: the file name must end in one of {}",
        OutputFormat::supported_extensions()
    )]
    UnsupportedExtension {
        /// The path that was given.
        path: PathBuf,
    },
    /// The flame graph renderer rejected its input or failed to write.
    #[error("failed to render the flame graph: {0}")]
    Flamegraph(#[source] io::Error),
}

/// File formats [`write_report`] can produce.
///
/// Non-exhaustive so that further formats can be added without breaking
/// callers that match on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OutputFormat {
    /// Gzip-compressed pprof protobuf, `.pb.gz`.
    Pprof,
    /// Folded stacks, `.folded`.
    Folded,
    /// SVG flame graph, `.svg`.
    Svg,
    /// OTLP profiles export request (protobuf), `.otlp`: the message the
    /// agent sends to a collector.
    Otlp,
}

impl OutputFormat {
    /// Every format, in the order they are listed to users.
    pub const ALL: [OutputFormat; 4] = [
        OutputFormat::Pprof,
        OutputFormat::Folded,
        OutputFormat::Svg,
        OutputFormat::Otlp,
    ];

    /// The file name suffix that selects this format, with its leading dot.
    pub fn extension(self) -> &'static str {
        match self {
            OutputFormat::Pprof => ".pb.gz",
            OutputFormat::Folded => ".folded",
            OutputFormat::Svg => ".svg",
            OutputFormat::Otlp => ".otlp",
        }
    }

    /// Chooses the format from the end of the path's file name
    /// (case-insensitive). The name must have something before the suffix.
    pub fn from_path(path: &Path) -> Result<Self, ExportError> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        Self::ALL
            .into_iter()
            .find(|f| name.len() > f.extension().len() && name.ends_with(f.extension()))
            .ok_or_else(|| ExportError::UnsupportedExtension {
                path: path.to_path_buf(),
            })
    }

    /// The supported suffixes as a human-readable list, for messages.
    pub fn supported_extensions() -> String {
        Self::ALL
            .iter()
            .map(|f| format!("`{}`", f.extension()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for OutputFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OutputFormat::Pprof => "pprof",
            OutputFormat::Folded => "folded",
            OutputFormat::Svg => "svg",
            OutputFormat::Otlp => "otlp",
        })
    }
}

/// Writes `report` to `w` in `format`. The writer is flushed on success.
pub fn write_report(
    report: &Report,
    format: OutputFormat,
    mut w: impl Write,
) -> Result<(), ExportError> {
    match format {
        OutputFormat::Pprof => write_pprof_gz(report, &mut w)?,
        OutputFormat::Folded => write_folded(report, &mut w)?,
        OutputFormat::Svg => write_flamegraph_svg(report, &mut w)?,
        OutputFormat::Otlp => w.write_all(&otlp::encode_otlp(report))?,
    }
    w.flush()?;
    Ok(())
}

/// One-line description of the recording, e.g.
/// `1500 samples over 15.00 s at 100 Hz, 3 records lost`.
pub(crate) fn summary(report: &Report) -> String {
    let mut s = format!(
        "{} samples over {:.2} s at {} Hz",
        report.total_samples(),
        report.duration_ns as f64 / 1e9,
        report.frequency_hz
    );
    if report.lost_samples > 0 {
        s.push_str(&format!(", {} records lost", report.lost_samples));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_mentions_lost_samples_only_when_there_are_some() {
        let mut report = testdata::two_processes();
        assert_eq!(
            summary(&report),
            "15 samples over 2.50 s at 100 Hz, 7 records lost"
        );
        report.lost_samples = 0;
        assert_eq!(summary(&report), "15 samples over 2.50 s at 100 Hz");
    }

    #[test]
    fn format_from_path_uses_the_suffix() {
        let f = |p: &str| OutputFormat::from_path(Path::new(p)).ok();
        assert_eq!(f("out/profile.pb.gz"), Some(OutputFormat::Pprof));
        assert_eq!(f("PROFILE.PB.GZ"), Some(OutputFormat::Pprof));
        assert_eq!(f("a.folded"), Some(OutputFormat::Folded));
        assert_eq!(f("/tmp/flame.svg"), Some(OutputFormat::Svg));
        assert_eq!(f("profile.gz"), None);
        assert_eq!(f("profile.pb"), None);
        assert_eq!(f("profile.otlp"), Some(OutputFormat::Otlp));
        assert_eq!(f("profile.json"), None);
        assert_eq!(f(".svg"), None);
        assert_eq!(f("svg"), None);
        assert_eq!(f(""), None);
    }

    #[test]
    fn unsupported_extension_error_lists_the_choices() {
        let err = OutputFormat::from_path(Path::new("x.txt")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("x.txt"), "{msg}");
        for f in OutputFormat::ALL {
            assert!(msg.contains(f.extension()), "{msg}");
        }
    }

    #[test]
    fn write_report_dispatches_on_format() {
        let report = testdata::two_processes();

        let mut folded = Vec::new();
        write_report(&report, OutputFormat::Folded, &mut folded).unwrap();
        assert_eq!(
            String::from_utf8(folded).unwrap(),
            folded_lines(&report).join("\n") + "\n"
        );

        let mut gz = Vec::new();
        write_report(&report, OutputFormat::Pprof, &mut gz).unwrap();
        assert_eq!(&gz[..2], &[0x1f, 0x8b], "gzip magic");

        let mut svg = Vec::new();
        write_report(&report, OutputFormat::Svg, &mut svg).unwrap();
        assert!(String::from_utf8(svg).unwrap().contains("</svg>"));
    }
}
