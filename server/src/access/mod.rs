//! Who may do what: who is asking ([`auth`]), the users and tokens behind them ([`accounts`]),
//! browser sessions ([`sessions`]) and the limits every caller meets ([`limits`]).

pub mod accounts;
pub mod auth;
pub mod limits;
pub mod sessions;
