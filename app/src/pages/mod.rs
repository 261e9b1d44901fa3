//! One module a route: `/`, `/login`, `/batches/{id}`, and the not-found page.

pub mod batch;
pub mod home;
pub mod login;
pub mod not_found;
