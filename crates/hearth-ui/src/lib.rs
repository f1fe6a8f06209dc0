//! The agent's local profile page.
//!
//! With no collector and no cluster, `hearth agent` keeps its recent
//! reports itself ([`history`]) and serves a page on loopback that shows
//! where CPU goes: what uses it (pods, containers, processes), a flame
//! graph and top functions of any selection and time range, the comparison
//! of two ranges, and a pprof download ([`query`], [`server`]). The page's
//! HTML, script and style are compiled into the binary (`src/assets/`),
//! so it needs nothing from the internet.

pub mod history;
pub mod listener;
pub mod query;
pub mod server;

pub use history::{History, HistoryConfig, HistoryStats, Snapshot};
pub use listener::{default_max_connections, serve_limited, ServeLimits, ServerStats};
pub use server::{
    router, router_with_limits, serve, serve_with_limits, PageInfo, QueryLimits, QueryStats,
    SharedHistory, RETRY_AFTER_SECS,
};
