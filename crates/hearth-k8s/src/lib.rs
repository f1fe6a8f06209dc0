//! Kubernetes metadata for the pods of this node.
//!
//! * [`meta`]: the few fields of a Pod that Hearth uses, extracted from the
//!   API object (everything else, managedFields included, is dropped).
//! * [`store`]: pods by UID and by container id, with deleted pods kept for
//!   a grace period so that late samples still resolve.
//! * [`workload`]: the owning workload, derived without watching
//!   ReplicaSets or Jobs.
//! * [`attributes`]: OpenTelemetry resource attributes of a container,
//!   `service.*` included, and the opt-in export of labels and annotations.
//! * [`watch`]: the list/watch of this node's pods that feeds the store,
//!   with quiet, summarized logging.
//! * [`retry`]: when the watch tries again after a failure.

pub mod attributes;
pub mod meta;
pub mod retry;
pub mod store;
pub mod watch;
pub mod workload;
