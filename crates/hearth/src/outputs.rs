//! The output files of `hearth record`.
//!
//! Each output is claimed before recording starts: a temporary file is
//! created next to it (same directory, so same file system), which proves
//! the directory writable before any time is spent sampling. After the
//! recording the report is written into that file, which is renamed over
//! the output only once it is complete: a full disk or any other write
//! error leaves no truncated output behind, only the error, and the other
//! outputs are still written.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};

use hearth_export::{ExportError, OutputFormat};
use hearth_profile::Report;

/// The cause is part of each message (not a `source`), so that the error
/// is one line however it is printed.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("{path} is a directory")]
    IsDirectory { path: PathBuf },
    #[error("cannot write {path}: {reason}")]
    Create { path: PathBuf, reason: io::Error },
    #[error("writing {path}: {reason}; nothing was written there")]
    Write { path: PathBuf, reason: ExportError },
    #[error("writing {path}: {reason}; nothing was written there")]
    Finish { path: PathBuf, reason: io::Error },
}

/// An output claimed before recording: its temporary file is open.
#[derive(Debug)]
pub struct PendingOutput {
    pub path: PathBuf,
    pub format: OutputFormat,
    temp: PathBuf,
    file: Option<File>,
}

/// `dir/.name.hearth-<pid>.tmp` for `dir/name`.
fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.hearth-{}.tmp", std::process::id()))
}

impl PendingOutput {
    /// Creates the temporary file of `path`, failing if the directory
    /// cannot be written (or `path` is a directory).
    pub fn claim(path: &Path, format: OutputFormat) -> Result<PendingOutput, OutputError> {
        if path.is_dir() {
            return Err(OutputError::IsDirectory { path: path.into() });
        }
        let temp = temp_path(path);
        // A stale temporary file of an earlier run with the same pid is
        // ours to replace; create_new would refuse it.
        let _ = std::fs::remove_file(&temp);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(|reason| OutputError::Create {
                path: path.into(),
                reason,
            })?;
        Ok(PendingOutput {
            path: path.into(),
            format,
            temp,
            file: Some(file),
        })
    }

    /// Writes `report`, then puts the file in place. On any error the
    /// temporary file is removed and the output path left as it was.
    pub fn write(mut self, report: &Report) -> Result<(), OutputError> {
        let Some(file) = self.file.take() else {
            return Err(OutputError::Finish {
                path: self.path.clone(),
                reason: io::Error::other("already written"),
            });
        };
        let mut w = BufWriter::new(file);
        hearth_export::write_report(report, self.format, &mut w).map_err(|reason| {
            OutputError::Write {
                path: self.path.clone(),
                reason,
            }
        })?;
        let finish = |w: BufWriter<File>| -> io::Result<()> {
            let file = w.into_inner().map_err(|e| e.into_error())?;
            // Errors of delayed allocation (a full disk) show here at the
            // latest, before the rename makes the file visible.
            file.sync_all()
        };
        finish(w)
            .and_then(|()| std::fs::rename(&self.temp, &self.path))
            .map_err(|reason| OutputError::Finish {
                path: self.path.clone(),
                reason,
            })
    }
}

impl Drop for PendingOutput {
    fn drop(&mut self) {
        // Written and renamed: the temporary path is gone and this fails
        // harmlessly. Otherwise the partial file goes.
        self.file.take();
        let _ = std::fs::remove_file(&self.temp);
    }
}

/// Claims every output, in order; the first that cannot be is the error
/// (and the ones claimed before it are released).
pub fn claim_all(outputs: &[(PathBuf, OutputFormat)]) -> Result<Vec<PendingOutput>, OutputError> {
    outputs
        .iter()
        .map(|(path, format)| PendingOutput::claim(path, *format))
        .collect()
}

/// Writes `report` to every output, each independently of the others.
/// Returns the outputs written and the errors of the others.
pub fn write_all(outputs: Vec<PendingOutput>, report: &Report) -> (Vec<PathBuf>, Vec<OutputError>) {
    let mut written = Vec::new();
    let mut failed = Vec::new();
    for output in outputs {
        let path = output.path.clone();
        match output.write(report) {
            Ok(()) => written.push(path),
            Err(e) => failed.push(e),
        }
    }
    (written, failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("hearth-outputs-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn an_output_appears_only_when_complete() {
        let dir = scratch_dir("complete");
        let path = dir.join("p.folded");
        let out = PendingOutput::claim(&path, OutputFormat::Folded).unwrap();
        assert!(!path.exists(), "nothing at the output path before writing");
        let report = hearth_profile::Report::default();
        out.write(&report).unwrap();
        assert!(path.exists());
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
        assert_eq!(left.len(), 1, "temporary file left: {left:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_unclaimable_output_fails_at_once_and_releases_the_others() {
        let dir = scratch_dir("claim");
        let outputs = vec![
            (dir.join("a.svg"), OutputFormat::Svg),
            (dir.join("no/such/dir/b.svg"), OutputFormat::Svg),
        ];
        let err = claim_all(&outputs).unwrap_err();
        assert!(err.to_string().contains("no/such/dir/b.svg"), "{err}");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        let err = PendingOutput::claim(&dir, OutputFormat::Svg).unwrap_err();
        assert!(matches!(err, OutputError::IsDirectory { .. }), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
