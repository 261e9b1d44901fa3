pub mod batch;
pub mod home;
pub mod not_found;
pub mod login;
