//! The live path: one Redis subscription per process ([`hub`]), fanned out to every open
//! stream ([`stream`]) at a bounded pace ([`pace`]), each event framed once for all of them
//! ([`frame`]) and written by a few writers per batch to the streams that are caught up
//! ([`parked`], [`socket`]), and the database read again wherever events were lost ([`catch_up`]).

pub mod catch_up;
pub mod frame;
pub mod hub;
pub mod pace;
pub mod parked;
pub mod socket;
pub mod stream;
