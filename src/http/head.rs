//! A validated response head, whichever interface produced it, and how it becomes a
//! hyper response.

use http::header::{HeaderValue, SERVER};
use http::{HeaderMap, Response, StatusCode};
use hyper::ext::ReasonPhrase;

use super::{ResponseBody, SERVER_NAME};

/// Status, reason and headers an application asked for.
pub struct Head {
    pub status: StatusCode,
    /// A non-standard reason phrase to send instead of the canonical one.
    pub reason: Option<ReasonPhrase>,
    pub headers: HeaderMap,
    /// The Content-Length the application declared, if any.
    pub content_length: Option<u64>,
}

impl Head {
    /// The hyper response for this head and `body`; adds `Server` when asked to and
    /// the application did not set one.
    pub fn into_response(self, body: ResponseBody, server_header: bool) -> Response<ResponseBody> {
        let mut resp = Response::new(body);
        *resp.status_mut() = self.status;
        *resp.headers_mut() = self.headers;
        if let Some(reason) = self.reason {
            resp.extensions_mut().insert(reason);
        }
        if server_header && !resp.headers().contains_key(SERVER) {
            resp.headers_mut().insert(SERVER, SERVER_NAME);
        }
        resp
    }

    /// Declare the body length when the application did not.
    pub fn set_length_if_missing(&mut self, len: u64) {
        if self.content_length.is_none() {
            self.headers
                .insert(http::header::CONTENT_LENGTH, HeaderValue::from(len));
            self.content_length = Some(len);
        }
    }
}
