//! Who is signed in, and the pure rules around signing in: which origins may post with a
//! session cookie, where a sign-in may send the browser next, and the rate-limit window.

use serde::{Deserialize, Serialize};

use crate::{Millis, status::text_enum};

/// The signed-in person as the pages see them: shown in the header, and the owner every batch
/// read or write is checked against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Viewer {
    pub user_id: String,
    pub name: String,
}

/// The address a request came from, as the server saw it: what sign-in attempts are counted
/// against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAddress(pub String);

/// A sign-in that ended, announced to every server on the control channel so that the streams
/// it opened end at once rather than at their next keep-alive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum Ended {
    /// A token was revoked (by its id): its own streams and its sessions' end.
    Token(String),
    /// A session was signed out (by the SHA-256 of its cookie).
    Session(String),
}

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Creates batches and sees its own.
    User,
    /// Reports item status for any batch, and nothing else.
    Worker,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Worker => "worker",
        }
    }
}

text_enum!(Role, "role", [User, Worker]);

/// Whether a request's `Origin` (or, when a browser sent none, its `Referer`) names the host
/// the request was sent to. Only the authority is compared: behind a TLS proxy the browser's
/// origin is `https://host` while the server sees plain HTTP.
pub fn same_origin(origin: &str, host: &str) -> bool {
    let Some((scheme, rest)) = origin.split_once("://") else { return false };
    if !matches!(scheme, "http" | "https") {
        return false;
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    !authority.is_empty() && authority.eq_ignore_ascii_case(host)
}

/// Where to go after signing in: a path on this site, or `/`. Anything else (`//evil.example`,
/// `https://...`, `/\evil`) would make the sign-in form an open redirect.
pub fn local_path(next: &str) -> &str {
    let local = next.starts_with('/')
        && !next.starts_with("//")
        && !next.starts_with("/\\")
        && !next.chars().any(|c| c.is_control());
    if local { next } else { "/" }
}

/// A fixed rate-limit window: the one `now` falls in, and the whole seconds until it ends
/// (at least 1), which is what `Retry-After` says when the window is full.
pub fn window(now: Millis, window_ms: Millis) -> (Millis, u64) {
    let window_ms = window_ms.max(1);
    let start = now - now.rem_euclid(window_ms);
    let left_ms = start + window_ms - now;
    (start, (left_ms as u64).div_ceil(1000).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip() {
        for role in [Role::User, Role::Worker] {
            assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
        }
        assert!(matches!("admin".parse::<Role>(), Err(crate::Error::Unknown { what: "role", .. })));
    }

    #[test]
    fn same_origin_compares_the_authority() {
        assert!(same_origin("http://127.0.0.1:3000", "127.0.0.1:3000"));
        assert!(same_origin("https://watch.example", "watch.example"));
        assert!(same_origin("http://127.0.0.1:3000/batches/x?y", "127.0.0.1:3000"));
        assert!(same_origin("http://Watch.Example", "watch.example"));
        assert!(!same_origin("http://127.0.0.1:3001", "127.0.0.1:3000"));
        assert!(!same_origin("https://evil.example", "watch.example"));
        assert!(!same_origin("https://watch.example.evil.example", "watch.example"));
        assert!(!same_origin("null", "watch.example"));
        assert!(!same_origin("", "watch.example"));
        assert!(!same_origin("ftp://watch.example", "watch.example"));
        assert!(!same_origin("http://", ""));
    }

    #[test]
    fn only_local_paths_are_followed() {
        assert_eq!(local_path("/batches/1"), "/batches/1");
        assert_eq!(local_path("/?a=b"), "/?a=b");
        assert_eq!(local_path("//evil.example"), "/");
        assert_eq!(local_path("/\\evil.example"), "/");
        assert_eq!(local_path("https://evil.example"), "/");
        assert_eq!(local_path("batches"), "/");
        assert_eq!(local_path("/a\nb"), "/");
        assert_eq!(local_path(""), "/");
    }

    #[test]
    fn windows_start_on_their_boundary() {
        assert_eq!(window(60_000, 60_000), (60_000, 60));
        assert_eq!(window(119_999, 60_000), (60_000, 1));
        assert_eq!(window(61_500, 60_000), (60_000, 59));
        assert_eq!(window(500, 1_000), (0, 1));
        assert_eq!(window(5, 0), (5, 1));
    }
}
