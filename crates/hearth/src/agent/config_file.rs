//! The agent's configuration file (TOML).
//!
//! Every key is optional; flags and `OTEL_*` variables override the file.
//! Unknown keys are errors, so that a typo is not silently ignored.
//!
//! ```toml
//! frequency = 19
//! interval_seconds = 5
//! metrics_listen = "127.0.0.1:9464"
//! memory_mib = 128             # the budget the parts below share
//!
//! [ui]
//! listen = "127.0.0.1:7070"   # or "off"
//! allow_remote = false        # required to listen beyond loopback
//! history_minutes = 15
//! memory_mib = 32             # default: a quarter of the budget
//!
//! [kubernetes]
//! node_name = "node-1"
//! labels = ["team=owner.team"]
//! annotations = []
//! well_known_labels = false
//! delete_grace_seconds = 120
//!
//! [otlp]
//! endpoint = "https://collector.example:4317"
//! protocol = "grpc"            # or "http/protobuf"
//! headers = { "x-api-key" = "secret" }
//! compression = "gzip"         # or "none"
//! timeout_seconds = 10
//! ca_cert = "/etc/hearth/ca.pem"
//! client_cert = "/etc/hearth/client.pem"
//! client_key = "/etc/hearth/client.key"
//! queue_mib = 16              # default: an eighth of the budget
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub frequency: Option<u64>,
    pub interval_seconds: Option<f64>,
    pub metrics_listen: Option<String>,
    pub memory_mib: Option<u64>,
    #[serde(default)]
    pub kubernetes: KubernetesSection,
    #[serde(default)]
    pub otlp: OtlpSection,
    #[serde(default)]
    pub ui: UiSection,
}

/// The local profile page.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UiSection {
    pub listen: Option<String>,
    pub allow_remote: Option<bool>,
    pub history_minutes: Option<f64>,
    pub memory_mib: Option<usize>,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KubernetesSection {
    pub node_name: Option<String>,
    pub kubeconfig: Option<PathBuf>,
    #[serde(default)]
    pub labels: Vec<String>,
    #[serde(default)]
    pub annotations: Vec<String>,
    pub well_known_labels: Option<bool>,
    pub delete_grace_seconds: Option<f64>,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OtlpSection {
    pub endpoint: Option<String>,
    pub protocol: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub compression: Option<String>,
    pub timeout_seconds: Option<f64>,
    pub ca_cert: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub queue_mib: Option<usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum FileConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<FileConfig, FileConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| FileConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| FileConfigError::Parse {
            path: path.display().to_string(),
            message: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example_and_rejects_typos() {
        let doc = include_str!("config_file.rs")
            .lines()
            .filter_map(|l| l.strip_prefix("//! "))
            .skip_while(|l| !l.starts_with("```toml"))
            .skip(1)
            .take_while(|l| !l.starts_with("```"))
            .collect::<Vec<_>>()
            .join("\n");
        let c: FileConfig = toml::from_str(&doc).unwrap();
        assert_eq!(c.frequency, Some(19));
        assert_eq!(c.otlp.protocol.as_deref(), Some("grpc"));
        assert_eq!(
            c.otlp.headers.get("x-api-key").map(String::as_str),
            Some("secret")
        );
        assert_eq!(c.kubernetes.labels, vec!["team=owner.team"]);
        assert_eq!(c.ui.history_minutes, Some(15.0));
        assert_eq!(c.ui.listen.as_deref(), Some("127.0.0.1:7070"));
        assert!(toml::from_str::<FileConfig>("frequncy = 19").is_err());
        assert!(toml::from_str::<FileConfig>("[otlp]\nendpont = \"x\"").is_err());
        assert_eq!(
            toml::from_str::<FileConfig>("").unwrap(),
            FileConfig::default()
        );
    }
}
