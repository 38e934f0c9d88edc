//! Cedar: loading, validating and evaluating the policy set.
//!
//! The entity model of the shipped example (see `policies/schema.cedarschema`):
//!
//! ```text
//! User ──owner──◄ Account          Anonymous (no verified identity)
//! Application (login)              actions: login, view_balance, list_transactions ∈ read
//!                                           withdraw, transfer, update_profile ∈ write
//! ```

pub mod engine;
pub mod load;
pub mod slice;
pub mod snapshot;

pub use engine::{
    ContextInput, EvalError, FactValue, History, PolicyAnswer, PolicyInput, PolicySnapshot,
    RequestFacts, Transaction, Workload, NO_FACTS,
};
pub use load::{PolicyError, PolicyProblem};
pub use snapshot::{load_snapshot, LoadError, Snapshot};
