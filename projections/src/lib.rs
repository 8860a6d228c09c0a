//! seatledger's read models, each a pure fold over events: the service feeds them from the
//! global log and stores their rows; replay feeds them the same events and gets the same rows.

#![deny(missing_docs)]

pub mod licenses;
