//! Who is asking, and the rules every request meets before its handler runs.
//!
//! [`identify`] runs on every route (the static files are open to all): an `Authorization:
//! Bearer` token (the API, workers) or the session cookie (the browser) names a [`Principal`],
//! stored in the request's extensions. State-changing requests not carrying a token must come
//! from this site's own pages (`Origin` check: a cross-site form cannot ride the cookie), and
//! each authenticated write counts against its token's rate limit. Handlers then take
//! [`Caller`] or [`User`]; pages take the [`Viewer`] through [`pages_need_sign_in`].

use std::{net::SocketAddr, sync::Arc};

use axum::{
    Extension,
    extract::{ConnectInfo, FromRequestParts, Request, State},
    http::{HeaderMap, HeaderValue, Method, header, request::Parts},
    middleware::Next,
    response::{IntoResponse, Redirect, Response},
};
use batchwatch_core::{
    Role, Viewer,
    account::{ClientAddress, Ended, local_path},
    source::{BoxFuture, SignInSource, SourceError},
};
use cookie::{Cookie, SameSite};
use serde::Deserialize;
use tokio::sync::broadcast;

use crate::{
    access::{
        accounts::{Accounts, Principal, hash},
        limits::Limits,
        sessions::Sessions,
        site::RequestSite,
    },
    error::{Error, Result},
    extract::Form,
    state::AppState,
};

/// Runs the rules every routed request meets, each its own step: who is asking, whether a
/// cookie write comes from our own pages, and the caller's write limit.
pub async fn identify(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    // Served by `start`, every request knows its peer; a router driven in-process may not.
    let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(peer)| peer.ip());
    let site = RequestSite::of(&state.site, peer, request.headers());
    request.extensions_mut().insert(ClientAddress(site.client.clone()));
    let checked = async {
        let caller = caller(&state, &site, request.headers()).await?;
        check_origin(&site, &request)?;
        if let Some((credential, principal)) = caller {
            if writes(&request) {
                state.limits.write(&principal).await?;
            }
            if principal.role == Role::User {
                request.extensions_mut().insert(principal.viewer.clone());
            }
            request.extensions_mut().insert(principal);
            request.extensions_mut().insert(credential);
        }
        request.extensions_mut().insert(site);
        Ok::<_, Error>(())
    };
    match checked.await {
        Ok(()) => next.run(request).await,
        Err(error) => error.into_response(),
    }
}

/// Who is asking: the bearer token when there is one (a bad one is a 401), else the session
/// cookie's user, else nobody. A session whose token was revoked, or that expired, ends here.
async fn caller(
    state: &AppState,
    site: &RequestSite,
    headers: &HeaderMap,
) -> Result<Option<(Credential, Principal)>> {
    if let Some(authorization) = headers.get(header::AUTHORIZATION) {
        let token = authorization
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or(Error::Unauthorized("expected `Authorization: Bearer <token>`"))?;
        let principal = state.accounts.authenticate(token.trim()).await?;
        let principal = principal.ok_or(Error::Unauthorized("the token is not valid, or was revoked"))?;
        return Ok(Some((Credential::Token(principal.token_id.clone()), principal)));
    }
    let Some(session) = session_cookie(site, headers) else { return Ok(None) };
    let credential = Credential::Session(session.clone());
    let principal = credential.principal(&state.accounts, &state.sessions).await?;
    if principal.is_none() {
        state.sessions.end(&session).await?;
    }
    Ok(principal.map(|p| (credential, p)))
}

/// The cookie rides along on any request the browser makes, whichever site started it: a write
/// carrying it (or signing in) must come from our own pages. A token is never sent by a browser
/// on its own, so token requests are exempt; without either there is nobody to act for, and
/// the handler answers 401.
fn check_origin(site: &RequestSite, request: &Request) -> Result<()> {
    let headers = request.headers();
    let cookie_write = writes(request)
        && !headers.contains_key(header::AUTHORIZATION)
        && (session_cookie(site, headers).is_some() || request.uri().path() == "/login");
    if cookie_write && !from_this_site(site, headers) {
        return Err(Error::Forbidden("a cross-site request cannot change anything here"));
    }
    Ok(())
}

fn writes(request: &Request) -> bool {
    !matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS)
}

/// What a request was signed in with, kept so that a long-lived stream can ask again later.
#[derive(Debug, Clone)]
pub enum Credential {
    /// A bearer token, by its id.
    Token(String),
    /// A session, by its cookie's value.
    Session(String),
}

impl Credential {
    /// Whom it names now: `None` once its token is revoked or its session ended.
    async fn principal(&self, accounts: &Accounts, sessions: &Sessions) -> Result<Option<Principal>> {
        let token_id = match self {
            Credential::Token(id) => Some(id.clone()),
            Credential::Session(secret) => sessions.token(secret).await?,
        };
        match token_id {
            Some(id) => accounts.principal(&id).await,
            None => Ok(None),
        }
    }
}

/// Asks again whether a credential still stands: a stream outlives the request that opened it,
/// and revoking its token or signing out must end it too. Both are announced on the control
/// channel (`Hub::announce_ended`), which ends the stream at once; the stream also asks at each
/// keep-alive, for what an announcement missed (Redis away, a `memory://` process).
pub struct Recheck {
    accounts: Accounts,
    sessions: Sessions,
    credential: Credential,
    /// The token it was signed in with, and the session's hash when it is a session.
    token_id: String,
    session_hash: Option<String>,
    ended: broadcast::Receiver<Arc<Ended>>,
}

impl Recheck {
    pub fn new(state: &AppState, principal: &Principal, credential: Credential) -> Self {
        let session_hash = match &credential {
            Credential::Session(secret) => Some(hash(secret)),
            Credential::Token(_) => None,
        };
        Self {
            accounts: state.accounts.clone(),
            sessions: state.sessions.clone(),
            credential,
            token_id: principal.token_id.clone(),
            session_hash,
            ended: state.batches.hub().ended(),
        }
    }

    /// `false` once the token is revoked or the session ended. A failed lookup counts as
    /// standing: Redis or the database being away is no reason to cut a viewer off.
    pub async fn holds(&self) -> bool {
        self.credential.principal(&self.accounts, &self.sessions).await.map_or(true, |p| p.is_some())
    }

    /// Completes when this sign-in is announced as ended (or, having missed announcements,
    /// when asking finds it ended); never otherwise.
    pub async fn ended(&mut self) {
        loop {
            match self.ended.recv().await {
                Ok(ended) => {
                    let this = match &*ended {
                        Ended::Token(id) => *id == self.token_id,
                        Ended::Session(hash) => self.session_hash.as_ref() == Some(hash),
                    };
                    if this {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Boxed: this future is part of every open stream's task.
                    if !Box::pin(self.holds()).await {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
            }
        }
    }
}

/// The session cookie of this site's name: over HTTPS only the `__Host-` one, which no other
/// site of the domain can have set.
fn session_cookie(site: &RequestSite, headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == site.cookie_name())
        .map(|c| c.value().to_owned())
}

/// Browsers send `Origin` with every POST; `Referer` is the fallback for the few that do not.
/// A request with neither is refused: nothing but a browser uses the cookie.
fn from_this_site(site: &RequestSite, headers: &HeaderMap) -> bool {
    let origin = headers.get(header::ORIGIN).or_else(|| headers.get(header::REFERER));
    origin.and_then(|o| o.to_str().ok()).is_some_and(|o| site.admits(o))
}

/// Pages and server functions need a signed-in user: a page sends the browser to `/login`
/// (and back afterwards), a server function answers 401.
pub async fn pages_need_sign_in(request: Request, next: Next) -> Response {
    let path = request.uri().path();
    // The sign-in page, and the one question it asks before anyone is signed in.
    let open = path == "/login" || path == <app::api::TokenOwner as leptos::server_fn::ServerFn>::PATH;
    if request.extensions().get::<Viewer>().is_some() || open {
        return next.run(request).await;
    }
    if path.starts_with("/leptos/") {
        return Error::Unauthorized("sign in first").into_response();
    }
    let here = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let query = serde_urlencoded::to_string([("next", here)]).unwrap_or_default();
    Redirect::to(&format!("/login?{query}")).into_response()
}

/// Any authenticated caller: 401 without one.
pub struct Caller(pub Principal);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .map(Caller)
            .ok_or(Error::Unauthorized("sign in or send a token"))
    }
}

/// A user (not a worker): 401 without a caller, 403 for a worker token.
pub struct User(pub Viewer);

impl<S: Send + Sync> FromRequestParts<S> for User {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self> {
        let Caller(principal) = Caller::from_request_parts(parts, state).await?;
        match principal.role {
            Role::User => Ok(User(principal.viewer)),
            Role::Worker => Err(Error::Forbidden("a worker token may only report item status")),
        }
    }
}

/// A user and what they signed in with, for a stream that checks it again as it goes.
pub struct SignedUser(pub Principal, pub Credential);

impl<S: Send + Sync> FromRequestParts<S> for SignedUser {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self> {
        User::from_request_parts(parts, state).await?;
        let principal = parts.extensions.get::<Principal>().cloned();
        let credential = parts.extensions.get::<Credential>().cloned();
        match (principal, credential) {
            (Some(principal), Some(credential)) => Ok(SignedUser(principal, credential)),
            _ => Err(Error::Unauthorized("sign in first")),
        }
    }
}

#[derive(Deserialize)]
pub struct SignIn {
    token: String,
    #[serde(default)]
    next: String,
}

/// `POST /login` (the sign-in form): a user's token starts a session, replacing the one this
/// browser had. A failure goes back to the form with the reason in the query, for the page to
/// show. Attempts are limited per client address and per token, before the token is looked
/// up.
pub async fn login(
    State(state): State<AppState>,
    Extension(site): Extension<RequestSite>,
    headers: HeaderMap,
    Form(form): Form<SignIn>,
) -> Result<Response> {
    let next = local_path(&form.next);
    let back = |reason: &str| {
        let query = serde_urlencoded::to_string([("error", reason), ("next", next)]).unwrap_or_default();
        Ok(Redirect::to(&format!("/login?{query}")).into_response())
    };
    let token = form.token.trim();
    match state.limits.sign_in(&site.client, &hash(token)).await {
        Err(Error::TooMany { .. }) => return back("limit"),
        other => other?,
    }
    let principal = match state.accounts.authenticate(token).await? {
        None => return back("invalid"),
        Some(p) if p.role == Role::Worker => return back("worker"),
        Some(p) => p,
    };
    if let Some(previous) = session_cookie(&site, &headers) {
        state.sessions.end(&previous).await?;
    }
    let session = state.sessions.start(&principal.token_id).await?;
    tracing::info!(user = %principal.viewer.name, "signed in");
    let max_age = cookie::time::Duration::seconds(state.sessions.ttl().as_secs() as i64);
    let cookie = session_cookie_builder(&site, session).max_age(max_age).build();
    Ok(with_cookie(Redirect::to(next), &cookie))
}

/// `POST /logout`: ends the session at once and clears the cookie.
pub async fn logout(
    State(state): State<AppState>,
    Extension(site): Extension<RequestSite>,
    headers: HeaderMap,
) -> Result<Response> {
    if let Some(session) = session_cookie(&site, &headers) {
        state.sessions.end(&session).await?;
        state.batches.hub().announce_ended(&Ended::Session(hash(&session))).await;
    }
    let cookie = session_cookie_builder(&site, String::new()).max_age(cookie::time::Duration::ZERO).build();
    Ok(with_cookie(Redirect::to("/login"), &cookie))
}

/// HttpOnly (no script reads it), SameSite=Lax (not sent on cross-site POSTs), and over HTTPS
/// Secure under its `__Host-` name (`access::site`).
fn session_cookie_builder(site: &RequestSite, value: String) -> cookie::CookieBuilder<'static> {
    Cookie::build((site.cookie_name(), value))
        .path("/")
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(site.https())
}

fn with_cookie(redirect: Redirect, cookie: &Cookie<'_>) -> Response {
    let mut response = redirect.into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie.to_string()) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

/// What the sign-in page asks before a person presses "Sign in as …": whose a link's token is.
/// Counted like a sign-in attempt, so it is no faster a way to try tokens.
pub struct SignInCheck {
    pub accounts: Accounts,
    pub limits: Limits,
}

impl SignInSource for SignInCheck {
    fn user_of<'a>(
        &'a self,
        client: &'a str,
        token: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, SourceError>> {
        Box::pin(async move {
            let token = token.trim();
            let checked = match self.limits.sign_in(client, &hash(token)).await {
                Err(Error::TooMany { .. }) => {
                    return Err(SourceError::Invalid("too many sign-in attempts: wait a minute".into()));
                }
                Err(error) => Err(error),
                Ok(()) => self.accounts.authenticate(token).await,
            };
            match checked {
                Ok(principal) => Ok(principal.filter(|p| p.role == Role::User).map(|p| p.viewer.name)),
                Err(error) => {
                    tracing::error!(%error, "sign-in check failed");
                    Err(SourceError::Internal)
                }
            }
        })
    }
}
