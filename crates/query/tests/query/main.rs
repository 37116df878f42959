//! Behaviour of the query language through its public API.

mod aggregates;
mod errors;
mod examples;
mod fixtures;
mod index;
mod logic;
mod ordering;
mod properties;
