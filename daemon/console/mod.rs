//! The web console under `/ui/` on the registry's listeners: server-rendered pages (maud),
//! a little JavaScript, everything in the binary.
//!
//! Sign-in takes a login token (`ecrl get-login-password [--user NAME]`) or an access key and
//! its secret, checked as the registry checks them (failures count toward the same
//! throttle); the browser then holds a signed token in an HttpOnly, SameSite=Strict cookie.
//! Every page and action asks the same policies as the CLI and the AWS API, with the same
//! IAM action names; forms carry a token bound to the session, so another site cannot post
//! them. With `--anonymous all` there is no sign-in: everyone may do everything anyway.

mod assets;
mod pages;

use crate::app::AppState;
use crate::auth::Principal;
use crate::registry::RequestBody;
use axum::http::{header, request::Parts, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use ecrl::config::Anonymous;
use futures_util::StreamExt;
use std::net::IpAddr;
use std::sync::Arc;

/// The session cookie.
const COOKIE: &str = "ecrl_console";
/// The most a form may send.
const MAX_FORM: usize = 16 * 1024;

pub fn is_console(path: &str) -> bool {
    path == "/ui" || path.starts_with("/ui/")
}

/// Who is looking, and the session's token (none with authentication off).
pub struct Viewer {
    pub principal: Principal,
    session: Option<String>,
    /// The form token of this session.
    pub csrf: String,
}

impl Viewer {
    pub fn name(&self) -> String {
        match &self.principal {
            Principal::Owner => "owner".into(),
            Principal::User(user) => user.to_string(),
            Principal::Anonymous => "anonymous".into(),
        }
    }

    pub fn signed_in(&self) -> bool {
        self.session.is_some()
    }
}

/// Whether `viewer` may perform the IAM action on a repository (`None`: the registry).
pub fn may(
    state: &AppState,
    viewer: &Viewer,
    action: &'static str,
    repo: Option<&ecrl::names::RepoName>,
) -> bool {
    state
        .auth
        .may(state, &viewer.principal, action, repo)
        .is_ok()
}

/// Whether `viewer` may perform the IAM action on an ECS resource (`*` for listings).
pub fn may_arn(state: &AppState, viewer: &Viewer, action: &'static str, arn: &str) -> bool {
    state
        .auth
        .may_arn(state, &viewer.principal, action, arn)
        .is_ok()
}

/// The registry owner, or everyone when authentication is off: who sees users and settings.
pub fn is_owner(state: &AppState, viewer: &Viewer) -> bool {
    viewer.principal == Principal::Owner || state.config.anonymous == Anonymous::All
}

pub async fn handle(
    state: Arc<AppState>,
    parts: &Parts,
    body: &mut RequestBody,
    client: Option<IpAddr>,
    https: bool,
) -> Response {
    let mut response = route(&state, parts, body, client, https).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

async fn route(
    state: &Arc<AppState>,
    parts: &Parts,
    body: &mut RequestBody,
    client: Option<IpAddr>,
    https: bool,
) -> Response {
    let path = parts.uri.path();
    let query = parts.uri.query().unwrap_or("");
    let method = &parts.method;
    match (method, path) {
        (&Method::GET, "/ui" | "/ui/") => return redirect("/ui/repositories"),
        (&Method::GET, "/ui/assets/app.css") => return asset("text/css", assets::CSS),
        (&Method::GET, "/ui/assets/app.js") => return asset("text/javascript", assets::JS),
        (&Method::GET, "/ui/login") => {
            let next = form_value(query, "next");
            return html(StatusCode::OK, pages::login(&safe_next(&next), None));
        }
        (&Method::POST, "/ui/login") => {
            return sign_in(state, body, client, https).await;
        }
        (&Method::POST, "/ui/logout") => {
            let mut response = redirect("/ui/login");
            response.headers_mut().insert(
                header::SET_COOKIE,
                cookie_header("", 0, https).unwrap_or(HeaderValue::from_static("")),
            );
            return response;
        }
        _ => {}
    }
    let viewer = match viewer(state, &parts.headers, client) {
        Some(viewer) => viewer,
        None => {
            let next = match parts.uri.query() {
                Some(q) => format!("{path}?{q}"),
                None => path.to_string(),
            };
            return redirect(&format!(
                "/ui/login?next={}",
                form_encode(&safe_next(&next))
            ));
        }
    };
    if method == Method::POST {
        let form = match read_form(body).await {
            Ok(form) => form,
            Err(response) => return response,
        };
        if form_value(&form, "csrf") != viewer.csrf {
            return html(
                StatusCode::FORBIDDEN,
                pages::problem(
                    &viewer,
                    "This form is out of date or came from another site: reload the page and try again.",
                ),
            );
        }
        return pages::act(state, &viewer, path, &form).await;
    }
    if method != Method::GET && method != Method::HEAD {
        return html(
            StatusCode::METHOD_NOT_ALLOWED,
            pages::problem(&viewer, "Not a page."),
        );
    }
    pages::show(state, &viewer, path, query).await
}

/// The signed-in (or, with authentication off, anonymous) viewer; `None`: sign in first.
fn viewer(state: &AppState, headers: &HeaderMap, client: Option<IpAddr>) -> Option<Viewer> {
    let session = cookie(headers);
    let principal = session.as_ref().and_then(|token| {
        let mut presented = HeaderMap::new();
        presented.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).ok()?,
        );
        state.auth.authenticate(state, &presented, client).ok()
    });
    let (principal, session) = match principal {
        Some(Principal::Anonymous) | None => {
            if state.config.anonymous != Anonymous::All {
                return None;
            }
            (Principal::Anonymous, None)
        }
        Some(p) => (p, session),
    };
    let csrf = csrf_token(state, session.as_deref().unwrap_or(""));
    Some(Viewer {
        principal,
        session,
        csrf,
    })
}

/// The form token of a session: an HMAC of its cookie under the registry's token secret.
fn csrf_token(state: &AppState, session: &str) -> String {
    use aws_lc_rs::hmac;
    let key = hmac::Key::new(hmac::HMAC_SHA256, state.meta.token_secret());
    let tag = hmac::sign(&key, format!("console-form:{session}").as_bytes());
    tag.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn sign_in(
    state: &Arc<AppState>,
    body: &mut RequestBody,
    client: Option<IpAddr>,
    https: bool,
) -> Response {
    let form = match read_form(body).await {
        Ok(form) => form,
        Err(response) => return response,
    };
    let next = safe_next(&form_value(&form, "next"));
    let token = form_value(&form, "token");
    let key_id = form_value(&form, "key_id");
    let secret_key = form_value(&form, "secret");
    let basic = if !token.trim().is_empty() {
        format!("AWS:{}", token.trim())
    } else if !key_id.trim().is_empty() && !secret_key.is_empty() {
        format!("{}:{}", key_id.trim(), secret_key)
    } else {
        return html(
            StatusCode::BAD_REQUEST,
            pages::login(
                &next,
                Some("Give a login token, or an access key id and its secret."),
            ),
        );
    };
    let mut presented = HeaderMap::new();
    let encoded = base64::engine::general_purpose::STANDARD.encode(basic.as_bytes());
    let Ok(value) = HeaderValue::from_str(&format!("Basic {encoded}")) else {
        return html(
            StatusCode::BAD_REQUEST,
            pages::login(&next, Some("Those credentials cannot be sent.")),
        );
    };
    presented.insert(header::AUTHORIZATION, value);
    let principal = match state.auth.authenticate(state, &presented, client) {
        // The token endpoint's anonymous tokens are no one's.
        Ok(Principal::Anonymous) => {
            return html(
                StatusCode::UNAUTHORIZED,
                pages::login(
                    &next,
                    Some("That token is an anonymous one: it signs no one in."),
                ),
            )
        }
        Ok(principal) => principal,
        Err(e) => {
            let status = match e {
                crate::auth::AuthError::TooManyFailures { .. } => StatusCode::TOO_MANY_REQUESTS,
                _ => StatusCode::UNAUTHORIZED,
            };
            return html(status, pages::login(&next, Some(&e.to_string())));
        }
    };
    // A session of its own, bound to the access key proved (or the token's), as the
    // registry's token endpoint issues them.
    let (session, expires) = state.auth.bearer_for(state, &principal, &presented);
    let lifetime = expires.saturating_sub(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    );
    tracing::info!(principal = %principal, "console sign-in");
    let mut response = redirect(&next);
    if let Some(cookie) = cookie_header(&session.0, lifetime, https) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

fn cookie_header(value: &str, max_age: u64, https: bool) -> Option<HeaderValue> {
    let secure = if https { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path=/ui; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"
    ))
    .ok()
}

fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, value)| *name == COOKIE && !value.is_empty())
        .map(|(_, value)| value.to_string())
}

/// Where to go after signing in: a console path only (never another site).
fn safe_next(next: &str) -> String {
    if next.starts_with("/ui/") && !next.starts_with("//") && !next.contains('\\') {
        next.to_string()
    } else {
        "/ui/repositories".into()
    }
}

async fn read_form(body: &mut RequestBody) -> Result<String, Response> {
    let mut bytes = Vec::new();
    while let Some(chunk) = body.next().await {
        let Ok(chunk) = chunk else {
            return Err(plain(
                StatusCode::BAD_REQUEST,
                "the form did not arrive whole",
            ));
        };
        if bytes.len() + chunk.len() > MAX_FORM {
            return Err(plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the form is too large",
            ));
        }
        bytes.extend_from_slice(&chunk);
    }
    String::from_utf8(bytes).map_err(|_| plain(StatusCode::BAD_REQUEST, "the form is not UTF-8"))
}

/// One field of a form or query string (`""` when absent).
pub fn form_value(form: &str, name: &str) -> String {
    form_urlencoded_pairs(form)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
        .unwrap_or_default()
}

fn form_urlencoded_pairs(form: &str) -> Vec<(String, String)> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(form).unwrap_or_default()
}

pub fn form_encode(value: &str) -> String {
    serde_urlencoded::to_string([("", value)])
        .map(|s| s.trim_start_matches('=').to_string())
        .unwrap_or_default()
}

pub fn html(status: StatusCode, markup: maud::Markup) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        markup.into_string(),
    )
        .into_response()
}

pub fn plain(status: StatusCode, text: &'static str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text,
    )
        .into_response()
}

pub fn redirect(to: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(to) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

fn asset(kind: &'static str, text: &'static str) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        text,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_sign_in_only_console_paths_are_followed() {
        assert_eq!(safe_next("/ui/tasks"), "/ui/tasks");
        for bad in [
            "https://evil.example/",
            "//evil.example/ui/",
            "/v2/",
            "",
            "/ui\\x",
        ] {
            assert_eq!(safe_next(bad), "/ui/repositories", "{bad}");
        }
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; ecrl_console=tok.en; b=2"),
        );
        assert_eq!(cookie(&headers).as_deref(), Some("tok.en"));
        headers.insert(header::COOKIE, HeaderValue::from_static("ecrl_console="));
        assert_eq!(cookie(&headers), None);
    }

    #[test]
    fn form_fields_decode() {
        assert_eq!(form_value("a=1&next=%2Fui%2Fx+y", "next"), "/ui/x y");
        assert_eq!(form_value("a=1", "b"), "");
        assert_eq!(form_encode("/ui/a b&c"), "%2Fui%2Fa+b%26c");
    }
}
