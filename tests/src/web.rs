//! The web UI as a browser without JavaScript drives it, for raw-HTTP tests: a session cookie
//! kept by hand, forms posted url-encoded, redirects never followed.

use reqwest::{Method, StatusCode};

use crate::tenants::World;

/// A browser without JavaScript: keeps its session cookie by hand (so the tests see every
/// `Set-Cookie`) and never follows redirects.
pub struct Browser {
    http: reqwest::Client,
    base: String,
    pub session: Option<String>,
}

pub struct Answer {
    pub status: StatusCode,
    pub set_cookies: Vec<String>,
    pub location: Option<String>,
    pub body: String,
}

impl Answer {
    /// The value of the first hidden `authenticity_token` field.
    pub fn csrf(&self) -> String {
        hidden_value(&self.body, "authenticity_token")
            .unwrap_or_else(|| panic!("no authenticity_token in the page:\n{}", self.body))
    }

    pub fn cookie(&self, name: &str) -> Option<&String> {
        self.set_cookies.iter().find(|c| c.starts_with(&format!("{name}=")))
    }
}

/// The value of the first hidden field `name` of a page.
pub fn hidden_value(body: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = body.find(&marker)? + marker.len();
    let end = body[start..].find('"')?;
    Some(body[start..start + end].to_string())
}

/// The value of a `Set-Cookie` header.
pub fn cookie_value(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().split_once('=').unwrap().1.to_string()
}

impl Browser {
    pub fn new(world: &World) -> Browser {
        let http =
            reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Browser { http, base: world.server.base.clone(), session: None }
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        form: Option<&[(&str, &str)]>,
        extra_cookie: Option<&str>,
    ) -> Answer {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        let mut cookies: Vec<String> = Vec::new();
        if let Some(s) = &self.session {
            cookies.push(format!("_stowage_session={s}"));
        }
        if let Some(c) = extra_cookie {
            cookies.push(c.to_string());
        }
        if !cookies.is_empty() {
            req = req.header("cookie", cookies.join("; "));
        }
        if let Some(form) = form {
            let body = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(form.iter())
                .finish();
            req = req.header("content-type", "application/x-www-form-urlencoded").body(body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let set_cookies = resp
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect();
        let location = resp.headers().get("location").map(|v| v.to_str().unwrap().to_string());
        Answer { status, set_cookies, location, body: resp.text().await.unwrap() }
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send(Method::GET, path, None, None).await
    }

    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> Answer {
        self.send(Method::POST, path, Some(form), None).await
    }

    /// Signs in through the form; panics unless it works. Answers the sign-in response.
    pub async fn sign_in(&mut self, username: &str, password: &str) -> Answer {
        let answer = self.try_sign_in(username, password).await;
        assert_eq!(answer.status, StatusCode::SEE_OTHER, "sign-in as {username}: {}", answer.body);
        let cookie = answer.cookie("_stowage_session").expect("a session cookie");
        self.session = Some(cookie_value(cookie));
        answer
    }

    pub async fn try_sign_in(&self, username: &str, password: &str) -> Answer {
        let form = self.get("/users/sign_in").await;
        assert_eq!(form.status, StatusCode::OK);
        let login = cookie_value(form.cookie("_stowage_login_csrf").expect("login CSRF cookie"));
        let token = form.csrf();
        assert_eq!(token, login, "the form repeats its cookie");
        let fields =
            [("username", username), ("password", password), ("authenticity_token", &token)];
        self.send(
            Method::POST,
            "/users/sign_in",
            Some(&fields),
            Some(&format!("_stowage_login_csrf={login}")),
        )
        .await
    }

    /// The CSRF token of the signed-in layout (the sign-out form on every page).
    pub async fn csrf(&self) -> String {
        self.get("/").await.csrf()
    }
}
