//! A router that remembers what it serves: every `/api/v4` route is registered through
//! [`Routes`], which records each method and path as it hands them to axum. The OpenAPI table
//! ([`crate::registry_api::ROUTES`]) is checked against that record, so a route cannot be
//! served without being documented, nor documented without being served.

use axum::handler::Handler;
use axum::routing::MethodFilter;
use axum::Router;

use crate::ApiState;

/// Routes of the API, with the list of `(method, path)` they serve.
#[derive(Default)]
pub struct Routes {
    router: Router<ApiState>,
    served: Vec<(&'static str, &'static str)>,
}

macro_rules! method {
    ($($name:ident => $filter:ident),* $(,)?) => {
        $(
            pub fn $name<H, T>(self, path: &'static str, handler: H) -> Routes
            where
                H: Handler<T, ApiState>,
                T: 'static,
            {
                self.on(stringify!($name), MethodFilter::$filter, path, handler)
            }
        )*
    };
}

impl Routes {
    pub fn new() -> Routes {
        Routes::default()
    }

    method!(get => GET, post => POST, put => PUT, patch => PATCH, delete => DELETE);

    fn on<H, T>(
        mut self,
        method: &'static str,
        filter: MethodFilter,
        path: &'static str,
        handler: H,
    ) -> Routes
    where
        H: Handler<T, ApiState>,
        T: 'static,
    {
        // axum merges the methods of one path registered in several calls.
        self.router = self.router.route(path, axum::routing::on(filter, handler));
        self.served.push((method, path));
        self
    }

    pub fn merge(mut self, other: Routes) -> Routes {
        self.router = self.router.merge(other.router);
        self.served.extend(other.served);
        self
    }

    /// What these routes serve: `(method, path)`, lower-case methods, `{param}` placeholders.
    pub fn served(&self) -> &[(&'static str, &'static str)] {
        &self.served
    }

    pub fn into_router(self) -> Router<ApiState> {
        self.router
    }
}
