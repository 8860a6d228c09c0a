//! Runs the `projections` crate's read models over the global log: each projection is a
//! consumer with its own checkpoint, and every batch's row changes are written in the same
//! transaction that moves that checkpoint, so a crash at any point neither loses nor repeats
//! an event. The rows a batch reads are fetched once, in one query, before it is folded; a
//! batch taken into several projections at once reads and writes all of theirs together.
//!
//! [`replay`] rebuilds every projection from the start of the log beside the live rows and
//! compares them (`compare`). `runner` takes batches in, `rows` reads and writes the rows,
//! `queries` answers the HTTP reads.

mod compare;
mod queries;
pub mod replay;
mod rows;
mod runner;

pub use compare::*;
pub use queries::*;
pub use rows::*;
pub use runner::*;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use projections::rows::Writes;
use projections::{LoggedEvent, Projection, ProjectionError, Row, RowSet};

use crate::copy_text::escape_into;
use crate::log::{Checkpoint, ADVANCE_CHECKPOINT};
use crate::store::{sql_literal, PlanKind, Store};

/// How many rows one statement reads or writes.
const ROWS_PER_STATEMENT: usize = 500;

pub use crate::log::ConsumerError;

/// Where a projection's rows live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// The rows the API serves.
    Live,
    /// The rows `seatledger replay` rebuilds beside them.
    Replay,
}

impl Table {
    /// The table's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Live => "read_models",
            Self::Replay => "read_models_replay",
        }
    }

    fn consumer(self, projection: &str) -> String {
        match self {
            Self::Live => projection.to_owned(),
            Self::Replay => format!("replay:{projection}"),
        }
    }
}
