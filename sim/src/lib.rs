//! odradek's deterministic simulator (issue 4): three simulated nodes, each a driver pumping
//! the real `core` state machines (Raft + Controller + Replica), with a simulated disk, skewed
//! clocks, a faulty network and clients, all from one seed. See `docs/testing.md`.
//!
//! The event loop is the simulator's own (a discrete-event queue over simulated time); under
//! `--cfg madsim` [`runner`] hosts each run in madsim's seeded runtime.

/// The history checker, shared with `jepsen/`.
pub use odradek_checker as checker;
pub mod acls;
pub mod disk;
pub mod node;
pub mod options;
pub mod runner;
pub mod sim;
