//! Authentication of HTTP requests, and the dashboard's login and logout.
//!
//! Every route under `/api/` needs a caller: an API token in `Authorization: Bearer
//! <token>`, or the dashboard's session cookie. A request without one, or with one that
//! is malformed, unknown, expired or revoked, gets `401` with the reason and
//! `WWW-Authenticate: Bearer`; the handler then finds the [`Caller`] in the request.
//!
//! The dashboard's own routes stay open, since they are how one gets a session:
//! - `GET /` serves the page, which shows a login form when `/api/v1/me` answers 401;
//! - `POST /login` with `{"user", "password"}` sets the session cookie;
//! - `GET /login?token=fwl_...` trades a one-time login link (what `furrow up` prints)
//!   for the cookie and redirects to `/`;
//! - `POST /logout` ends the session.
//!
//! The cookie is `HttpOnly` (scripts cannot read it), `SameSite=Strict` (other sites'
//! pages cannot send it) and expires with the session, twelve hours after login.

use std::future::{Ready, ready};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::{StatusCode, header};
use actix_web::middleware::Next;
use actix_web::{FromRequest, HttpMessage, HttpRequest, HttpResponse, web};
use furrow_protocol::ApiError;
use serde::Deserialize;

use super::{HttpError, error_response};
use crate::auth::{Caller, SESSION_MS};
use crate::service::Service;

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "furrow_session";

/// The token a request carries: its bearer token, or else its session cookie.
fn presented(request: &HttpRequest) -> Result<Option<String>, String> {
    if let Some(value) = request.headers().get(header::AUTHORIZATION) {
        let text = value
            .to_str()
            .map_err(|_| "Authorization: not readable text".to_string())?;
        let (scheme, token) = text.trim().split_once(' ').unwrap_or((text.trim(), ""));
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(format!(
                "Authorization: expected `Bearer <token>`, got the {scheme:?} scheme"
            ));
        }
        let token = token.trim();
        if token.is_empty() {
            return Err("Authorization: `Bearer` without a token".into());
        }
        return Ok(Some(token.to_string()));
    }
    Ok(request
        .cookie(SESSION_COOKIE)
        .map(|cookie| cookie.value().to_string())
        .filter(|value| !value.is_empty()))
}

fn peer_of(request: &HttpRequest) -> String {
    request
        .peer_addr()
        .map(|addr| addr.ip().to_string())
        .unwrap_or_default()
}

/// A 401 with the reason and the `WWW-Authenticate` challenge.
pub fn unauthorized(message: &str) -> HttpResponse {
    let mut response = error_response(StatusCode::UNAUTHORIZED, message);
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer realm=\"furrow\""),
    );
    response
}

/// The middleware: every `/api/` request must name a caller.
pub async fn authenticate(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    if !request.path().starts_with("/api/") {
        return next.call(request).await.map(|r| r.map_into_boxed_body());
    }
    let Some(service) = request.app_data::<web::Data<Service>>().cloned() else {
        return Ok(request.into_response(unauthorized("the master is starting")));
    };
    let verdict = match presented(request.request()) {
        Err(reason) => Err(reason),
        Ok(None) => Err(
            "no credentials: send `Authorization: Bearer <token>` (see `furrow token create`), or log in to the dashboard"
                .into(),
        ),
        Ok(Some(token)) => service
            .auth()
            .authenticate(&token, &peer_of(request.request())),
    };
    match verdict {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.call(request).await.map(|r| r.map_into_boxed_body())
        }
        Err(reason) => Ok(request.into_response(unauthorized(&reason))),
    }
}

impl FromRequest for Caller {
    type Error = HttpError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(request: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        ready(
            request
                .extensions()
                .get::<Caller>()
                .cloned()
                .ok_or_else(|| HttpError(ApiError::unauthorized("no credentials"))),
        )
    }
}

/// The session cookie; `Secure` when the page came over HTTPS.
fn session_cookie(token: &str, request: &HttpRequest) -> String {
    let secure = if request.connection_info().scheme() == "https" {
        "; Secure"
    } else {
        ""
    };
    format!(
        "{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        SESSION_MS / 1000
    )
}

/// The body of `POST /login`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginForm {
    user: String,
    password: String,
}

/// `POST /login`: a session cookie for a user name and password.
pub async fn login(
    service: web::Data<Service>,
    request: HttpRequest,
    body: web::Json<serde_json::Value>,
) -> Result<HttpResponse, HttpError> {
    let form: LoginForm = super::api::decode(body.into_inner())?;
    let token = service
        .auth()
        .login(&form.user, form.password, &peer_of(&request))
        .await?;
    let caller = service.auth().authenticate(&token, &peer_of(&request));
    let me = caller
        .map(|c| service.auth().who_am_i(&c))
        .map_err(|e| HttpError(ApiError::internal(format!("a new session failed: {e}"))))?;
    Ok(HttpResponse::Ok()
        .insert_header((header::SET_COOKIE, session_cookie(&token, &request)))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(me))
}

/// `GET /login?token=fwl_...`: a one-time link traded for a session cookie, then the
/// dashboard. Without a token: the dashboard (which shows its login form).
pub async fn login_link(
    service: web::Data<Service>,
    request: HttpRequest,
    query: web::Query<std::collections::HashMap<String, String>>,
) -> HttpResponse {
    let Some(link) = query.get("token") else {
        return redirect_home(None);
    };
    match service
        .auth()
        .redeem_login_link(link, &peer_of(&request))
        .await
    {
        Ok(token) => redirect_home(Some(&session_cookie(&token, &request))),
        Err(e) => {
            // A page, not JSON: this is a link a person clicked.
            let text = format!(
                "<!doctype html><meta charset=utf-8><title>furrow: login link</title>\
                 <p>This login link does not work: {}.</p><p><a href=\"/\">Log in with a password</a> \
                 or ask for a new link (<code>furrow token create --login</code>).</p>",
                html_escape(&e.message)
            );
            HttpResponse::Unauthorized()
                .content_type("text/html; charset=utf-8")
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .body(text)
        }
    }
}

fn redirect_home(cookie: Option<&str>) -> HttpResponse {
    let mut response = HttpResponse::SeeOther();
    response
        .insert_header((header::LOCATION, "/"))
        .insert_header((header::CACHE_CONTROL, "no-store"));
    if let Some(cookie) = cookie {
        response.insert_header((header::SET_COOKIE, cookie.to_string()));
    }
    response.finish()
}

/// `POST /logout`: ends the session and clears the cookie.
pub async fn logout(service: web::Data<Service>, request: HttpRequest) -> HttpResponse {
    if let Some(cookie) = request.cookie(SESSION_COOKIE)
        && let Err(e) = service.auth().logout(cookie.value()).await
    {
        return HttpError(e).error_response_json();
    }
    HttpResponse::NoContent()
        .insert_header((
            header::SET_COOKIE,
            format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
        ))
        .finish()
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

impl HttpError {
    fn error_response_json(&self) -> HttpResponse {
        actix_web::ResponseError::error_response(self)
    }
}
