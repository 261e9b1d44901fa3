//! axum's extractors with batchwatch's JSON errors as their rejections, so a bad id, body or
//! query gets the same error shape as every other failure.

use axum::extract::{FromRequest, FromRequestParts};

use crate::error::Error;

/// A JSON body: 415 without the JSON content type, 413 over the body limit, 422 otherwise.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(Error))]
pub struct Json<T>(pub T);

/// Path parameters: a malformed id is a 400.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(Error))]
pub struct Path<T>(pub T);

/// Query parameters: a bad value is a 422.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(Error))]
pub struct Query<T>(pub T);

/// A form body (the sign-in form): 415 without the form content type, 422 otherwise.
#[derive(FromRequest)]
#[from_request(via(axum::Form), rejection(Error))]
pub struct Form<T>(pub T);
