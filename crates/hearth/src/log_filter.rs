//! The tracing filter of the `hearth` binary.
//!
//! Libraries that Hearth talks to the network through log per request:
//! kube's client logs an ERROR line for every failed request (every 2.5–5 s
//! while the API server is down), hyper and rustls their connection
//! details. Hearth reports those failures itself, once and then
//! summarized, so the libraries' own lines are kept for debugging: they
//! pass only when the filter asks for debug or trace everywhere, or names
//! the library (`RUST_LOG=kube_client=info`, `--log-level warn,hyper=debug`).

/// Targets of the client libraries (a directive's target matches every
/// target it is a prefix of: `hyper` covers `hyper_util` and
/// `hyper_rustls`, `tower` covers `tower_http`).
pub const CLIENT_LIBRARY_TARGETS: &[&str] = &[
    "kube_client",
    "kube_runtime",
    "hyper",
    "tower",
    "rustls",
    "h2",
];

/// `spec` (a `RUST_LOG`-style filter) with the client libraries silenced
/// unless it asks for them.
pub fn with_client_libraries_quiet(spec: &str) -> String {
    let directives: Vec<&str> = spec
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .collect();
    if directives.iter().any(|d| verbose_level(d)) {
        return spec.to_string();
    }
    let named: Vec<&str> = directives.iter().filter_map(|d| target(d)).collect();
    let mut out = directives.join(",");
    for quiet in CLIENT_LIBRARY_TARGETS {
        let asked = named
            .iter()
            .any(|t| quiet.starts_with(t) || t.starts_with(quiet));
        if !asked {
            if !out.is_empty() {
                out.push(',');
            }
            out.push_str(quiet);
            out.push_str("=off");
        }
    }
    out
}

/// A bare `debug` or `trace` (or 4, 5): everything at that level.
fn verbose_level(directive: &str) -> bool {
    ["debug", "trace", "4", "5"]
        .iter()
        .any(|l| directive.eq_ignore_ascii_case(l))
}

/// The target a directive names, if any (`kube_client=debug`,
/// `hyper[span]=trace`, a bare `kube_client`); `None` for a bare level.
fn target(directive: &str) -> Option<&str> {
    let head = directive.split('=').next().unwrap_or("");
    let head = head.split('[').next().unwrap_or("").trim();
    let is_level = ["off", "error", "warn", "info", "debug", "trace"]
        .iter()
        .any(|l| head.eq_ignore_ascii_case(l))
        || head.parse::<u8>().is_ok();
    if head.is_empty() || (is_level && !directive.contains('=')) {
        None
    } else {
        Some(head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_levels_silence_the_client_libraries() {
        for level in ["warn", "info", "error"] {
            let spec = with_client_libraries_quiet(level);
            assert!(spec.starts_with(level), "{spec}");
            for t in CLIENT_LIBRARY_TARGETS {
                assert!(spec.contains(&format!("{t}=off")), "{spec}");
            }
            assert!(
                tracing_subscriber::EnvFilter::try_new(&spec).is_ok(),
                "{spec}"
            );
        }
    }

    #[test]
    fn a_named_library_or_debug_everywhere_lets_them_through() {
        let spec = with_client_libraries_quiet("warn,kube_client=debug");
        assert!(spec.contains("kube_client=debug"), "{spec}");
        assert!(!spec.contains("kube_client=off"), "{spec}");
        assert!(spec.contains("kube_runtime=off"), "{spec}");
        // `kube` names both kube crates; `hyper` its companions.
        let spec = with_client_libraries_quiet("info,kube=info,hyper_util=trace");
        assert!(!spec.contains("kube_client=off") && !spec.contains("kube_runtime=off"));
        assert!(!spec.contains("hyper=off"), "{spec}");
        assert!(spec.contains("rustls=off"), "{spec}");
        for verbose in ["debug", "warn,trace", "DEBUG"] {
            assert_eq!(with_client_libraries_quiet(verbose), verbose);
        }
        // Hearth's own targets do not count as naming a library.
        let spec = with_client_libraries_quiet("hearth_k8s=debug");
        assert!(spec.contains("kube_client=off"), "{spec}");
    }
}
