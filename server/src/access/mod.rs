//! Who may do what: who is asking ([`auth`]), the users and tokens behind them ([`accounts`]),
//! browser sessions ([`sessions`]), the limits every caller meets ([`limits`]), and which site
//! a request was made to behind proxies ([`site`]).

pub mod accounts;
pub mod auth;
pub mod limits;
pub mod sessions;
pub mod site;
