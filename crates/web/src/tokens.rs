//! `/-/user_settings/personal_access_tokens`: the signed-in user's personal access tokens —
//! listed (name, scopes, expiry, last use), created (the secret is shown once, on the page
//! that answers the form, and never again) and revoked. The rules are `service::tokens`', the
//! ones `POST /api/v4/users/:id/personal_access_tokens` and
//! `DELETE /api/v4/personal_access_tokens/:id` apply; a token of someone else is a 404 here.

use askama::Template;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use service::settings::SettingsError;
use service::tokens::{NewToken, PAT_SCOPES};

use crate::format::relative_time;
use crate::pages::{html, redirect, Fields, Layout};
use crate::session::{self, Viewer, CSRF_FIELD};
use crate::{PageError, WebState};

type Page = Result<Response, PageError>;

pub const PATH: &str = "/-/user_settings/personal_access_tokens";

struct TokenRow {
    id: i64,
    name: String,
    scopes: String,
    expires: String,
    last_used: String,
    created: String,
    active: bool,
    state: &'static str,
}

/// The form's values as typed, for showing a refused form again.
#[derive(Default)]
struct TokenForm {
    name: String,
    scopes: Vec<String>,
    expires_at: String,
}

#[derive(Template)]
#[template(path = "tokens.html")]
struct TokensPage {
    layout: Layout,
    action: String,
    tokens: Vec<TokenRow>,
    all_scopes: Vec<&'static str>,
    form: TokenForm,
    /// The secret of the token just created: shown this once.
    created: Option<(String, String)>,
    notice: Option<String>,
    error: Option<String>,
}

/// What a page shows besides the list.
#[derive(Default)]
struct Shown {
    form: TokenForm,
    created: Option<(String, String)>,
    notice: Option<String>,
    error: Option<String>,
}

async fn render(
    state: &WebState,
    viewer: &Viewer,
    user: &meta::User,
    shown: Shown,
    status: StatusCode,
) -> Page {
    let now = meta::now_millis();
    let day = |at: i64| meta::rfc3339(at)[..10].to_string();
    let tokens = state
        .store()
        .list_personal_access_tokens(user.id)
        .await?
        .into_iter()
        .map(|t| {
            let expired = t.expires_at.is_some_and(|at| at <= now);
            TokenRow {
                id: t.id,
                scopes: t.scopes.join(", "),
                expires: t.expires_at.map(day).unwrap_or_else(|| "never".into()),
                last_used: t
                    .last_used_at
                    .map(|at| relative_time(at, now))
                    .unwrap_or_else(|| "never".into()),
                created: day(t.created_at),
                active: !t.revoked && !expired,
                state: if t.revoked {
                    "revoked"
                } else if expired {
                    "expired"
                } else {
                    "active"
                },
                name: t.name,
            }
        })
        .collect();
    let page = TokensPage {
        layout: Layout::new("Personal access tokens", viewer),
        action: PATH.to_string(),
        tokens,
        all_scopes: PAT_SCOPES.to_vec(),
        form: shown.form,
        created: shown.created,
        notice: shown.notice,
        error: shown.error,
    };
    Ok(html(status, page.render()))
}

/// `GET`: the list and the form; signed-out viewers are sent to sign in.
pub async fn show(State(state): State<WebState>, headers: HeaderMap) -> Page {
    let viewer = session::viewer(&state, &headers).await?;
    let Some(user) = viewer.user.clone() else { return Ok(redirect("/users/sign_in")) };
    render(&state, &viewer, &user, Shown::default(), StatusCode::OK).await
}

/// `POST`: `action=create` (`name`, `scopes` repeated, `expires_at`) or `action=revoke`
/// (`token_id`).
pub async fn submit(State(state): State<WebState>, request: Request) -> Page {
    let (parts, body) = request.into_parts();
    let viewer = session::viewer(&state, &parts.headers).await?;
    let body = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map_err(|_| PageError::BadRequest("the form is too large".into()))?;
    let form = Fields::parse(&body);
    viewer.check_csrf(form.get(CSRF_FIELD))?;
    let user = viewer.user.clone().ok_or(PageError::Csrf)?;
    let ctx = crate::settings::request_context(&viewer, &parts);
    match form.get("action").unwrap_or("") {
        "create" => {
            let typed = TokenForm {
                name: form.get("name").unwrap_or("").to_string(),
                scopes: form.all("scopes").into_iter().map(str::to_string).collect(),
                expires_at: form.get("expires_at").unwrap_or("").to_string(),
            };
            let new = NewToken {
                name: typed.name.clone(),
                scopes: typed.scopes.clone(),
                expires_at: Some(typed.expires_at.clone()),
            };
            match service::tokens::create_personal_access_token(state.store(), user.id, new, &ctx)
                .await
            {
                Ok((token, secret)) => {
                    let shown = Shown { created: Some((token.name, secret)), ..Shown::default() };
                    render(&state, &viewer, &user, shown, StatusCode::CREATED).await
                }
                Err(SettingsError::Meta(e)) => Err(PageError::Database(e)),
                Err(e) => {
                    let shown =
                        Shown { form: typed, error: Some(e.to_string()), ..Shown::default() };
                    render(&state, &viewer, &user, shown, StatusCode::BAD_REQUEST).await
                }
            }
        }
        "revoke" => {
            let id = form
                .get("token_id")
                .and_then(|id| id.parse::<i64>().ok())
                .ok_or(PageError::NotFound)?;
            // This page manages the viewer's own tokens, admins included.
            let token = service::tokens::managed_personal_access_token(
                state.store(),
                false,
                Some(user.id),
                id,
            )
            .await
            .map_err(|e| match e {
                SettingsError::Meta(e) => PageError::Database(e),
                _ => PageError::NotFound,
            })?;
            service::tokens::revoke_personal_access_token(state.store(), &token, &ctx)
                .await
                .map_err(|e| match e {
                    SettingsError::Meta(e) => PageError::Database(e),
                    _ => PageError::NotFound,
                })?;
            let notice = Some(format!("Token {} revoked: it no longer works.", token.name));
            let shown = Shown { notice, ..Shown::default() };
            render(&state, &viewer, &user, shown, StatusCode::OK).await
        }
        other => Err(PageError::BadRequest(format!(
            "{} is not a token action: use the page's buttons",
            oci::preview(other)
        ))),
    }
}
