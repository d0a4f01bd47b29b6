//! The load generator's HTTP/1.1 client: keep-alive connections, one
//! request at a time on each, requests written whole and responses parsed
//! with `httparse` on the worker's own task.
//!
//! The load generator shares the machine with the server it measures, so
//! its CPU per request is taken from the server. A general client (reqwest:
//! URL parsing, a connection pool keyed by host, a connection task and a
//! channel to it per request, a timer per request) costs about 24 µs of CPU
//! per request; this one, about 11 µs: one write and usually one read
//! (docs/performance.md, "The bench's own HTTP/1.1 client"). It speaks only
//! what the API answers: `Content-Length` bodies, no chunked encoding, no
//! TLS, no redirects.

use axum::http::{Method, Uri};
use std::io;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A response head larger than this is refused (the API's are a few hundred bytes).
const HEAD_BYTES_MAX: usize = 16 * 1024;
/// A response body larger than this is refused.
const BODY_BYTES_MAX: usize = 16 * 1024 * 1024;
const HEADERS_MAX: usize = 32;

/// Why an exchange failed; the request may or may not have been acted on.
#[derive(Debug)]
pub enum ExchangeError {
    Timeout,
    Transport(io::Error),
}

/// A pool of keep-alive connections to one server.
pub struct HttpClient {
    /// `host:port` to connect to.
    authority: String,
    /// The base URL's path, put before every request's path ("" for none).
    base_path: String,
    timeout: Duration,
    idle: Mutex<Vec<Connection>>,
}

struct Connection {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// A response: status and body.
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

impl HttpClient {
    /// `base` is `http://host[:port][/path]`: requests go to its path
    /// followed by theirs. Only plain HTTP is spoken.
    pub fn new(base: &str, timeout: Duration) -> Result<HttpClient, String> {
        let uri: Uri = base
            .parse()
            .map_err(|e| format!("--url {base:?} is not a URL: {e}"))?;
        if uri.scheme_str() != Some("http") {
            return Err(format!("--url {base:?}: only http:// is supported"));
        }
        let host = uri
            .host()
            .ok_or_else(|| format!("--url {base:?} has no host"))?;
        let port = uri.port_u16().unwrap_or(80);
        Ok(HttpClient {
            authority: format!("{host}:{port}"),
            base_path: uri.path().trim_end_matches('/').to_owned(),
            timeout,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// Sends one request (`path_and_query` below the base URL's path) and
    /// reads its response, on an idle connection or a
    /// new one; the connection is kept for the next request unless the
    /// server asked to close it or anything went wrong.
    pub async fn send(
        &self,
        method: &Method,
        path_and_query: &str,
        bearer: Option<&str>,
        json_body: Option<&[u8]>,
    ) -> Result<Answer, ExchangeError> {
        self.send_keyed(method, path_and_query, bearer, None, json_body)
            .await
    }

    /// [`send`](HttpClient::send), with an `Idempotency-Key` when `key` is given.
    pub async fn send_keyed(
        &self,
        method: &Method,
        path_and_query: &str,
        bearer: Option<&str>,
        key: Option<&str>,
        json_body: Option<&[u8]>,
    ) -> Result<Answer, ExchangeError> {
        let mut request = Vec::with_capacity(160 + json_body.map_or(0, <[u8]>::len));
        request.extend_from_slice(method.as_str().as_bytes());
        request.push(b' ');
        request.extend_from_slice(self.base_path.as_bytes());
        request.extend_from_slice(path_and_query.as_bytes());
        request.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        request.extend_from_slice(self.authority.as_bytes());
        request.extend_from_slice(b"\r\n");
        if let Some(token) = bearer {
            request.extend_from_slice(b"Authorization: Bearer ");
            request.extend_from_slice(token.as_bytes());
            request.extend_from_slice(b"\r\n");
        }
        if let Some(key) = key {
            request.extend_from_slice(b"Idempotency-Key: ");
            request.extend_from_slice(key.as_bytes());
            request.extend_from_slice(b"\r\n");
        }
        match json_body {
            Some(body) => {
                request.extend_from_slice(b"Content-Type: application/json\r\nContent-Length: ");
                request.extend_from_slice(body.len().to_string().as_bytes());
                request.extend_from_slice(b"\r\n\r\n");
                request.extend_from_slice(body);
            }
            None => request.extend_from_slice(b"\r\n"),
        }
        let pooled = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let exchange = async {
            let mut conn = match pooled {
                Some(c) => c,
                None => {
                    let stream = TcpStream::connect(&self.authority).await?;
                    stream.set_nodelay(true)?;
                    Connection {
                        stream,
                        buf: Vec::with_capacity(4096),
                    }
                }
            };
            let (answer, keep) = conn.exchange(&request).await?;
            Ok::<_, io::Error>((answer, keep.then_some(conn)))
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Err(_) => Err(ExchangeError::Timeout),
            Ok(Err(e)) => Err(ExchangeError::Transport(e)),
            Ok(Ok((answer, keep))) => {
                if let Some(conn) = keep {
                    self.idle
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(conn);
                }
                Ok(answer)
            }
        }
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

impl Connection {
    /// Writes the request, reads one response; true if the connection may be reused.
    async fn exchange(&mut self, request: &[u8]) -> io::Result<(Answer, bool)> {
        self.stream.write_all(request).await?;
        self.buf.clear();
        loop {
            self.buf.reserve(4096);
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
            let mut head = httparse::Response::new(&mut headers);
            let head_len = match head.parse(&self.buf) {
                Ok(httparse::Status::Complete(n)) => n,
                Ok(httparse::Status::Partial) if self.buf.len() <= HEAD_BYTES_MAX => continue,
                Ok(httparse::Status::Partial) => return Err(invalid("response head too large")),
                Err(e) => return Err(invalid(&format!("malformed response: {e}"))),
            };
            let status = head.code.ok_or_else(|| invalid("no status"))?;
            let mut length = None;
            let mut close = head.version == Some(0);
            for h in head.headers.iter() {
                if h.name.eq_ignore_ascii_case("content-length") {
                    let n = std::str::from_utf8(h.value)
                        .ok()
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .ok_or_else(|| invalid("bad content-length"))?;
                    length = Some(n);
                } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                    return Err(invalid("chunked bodies are not spoken"));
                } else if h.name.eq_ignore_ascii_case("connection") {
                    close = h.value.eq_ignore_ascii_case(b"close");
                }
            }
            let length = length.ok_or_else(|| invalid("no content-length"))?;
            if length > BODY_BYTES_MAX {
                return Err(invalid("response body too large"));
            }
            let total = head_len + length;
            while self.buf.len() < total {
                self.buf.reserve(total - self.buf.len());
                if self.stream.read_buf(&mut self.buf).await? == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
            }
            if self.buf.len() > total {
                return Err(invalid("bytes after the response"));
            }
            let body = self.buf[head_len..total].to_vec();
            return Ok((Answer { status, body }, !close));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A server that answers each request on a connection with the next canned reply.
    async fn canned(
        replies: Vec<&'static [u8]>,
    ) -> (String, tokio::task::JoinHandle<Vec<Vec<u8>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut seen = Vec::new();
            for reply in replies {
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.expect("read");
                seen.push(buf[..n].to_vec());
                // Split the reply in two writes so the client reads it in parts.
                let (a, b) = reply.split_at(reply.len() / 2);
                s.write_all(a).await.expect("write");
                tokio::time::sleep(Duration::from_millis(5)).await;
                s.write_all(b).await.expect("write");
            }
            seen
        });
        (format!("http://{addr}"), task)
    }

    #[tokio::test]
    async fn requests_reuse_one_connection_and_responses_read_in_parts_are_whole() {
        // proves keep-alive reuse, request framing, and reassembly of a response split across reads
        let (base, server) = canned(vec![
            b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: 8\r\n\r\n{\"id\":7}",
            b"HTTP/1.1 409 Conflict\r\ncontent-length: 2\r\n\r\n{}",
        ])
        .await;
        let client = HttpClient::new(&base, Duration::from_secs(5)).expect("client");
        let a = client
            .send(
                &Method::POST,
                "/api/v1/users",
                Some("t"),
                Some(b"{\"name\":\"x\"}"),
            )
            .await
            .expect("first");
        assert_eq!((a.status, a.body.as_slice()), (201, &b"{\"id\":7}"[..]));
        let b = client
            .send(&Method::GET, "/api/v1/users/7", None, None)
            .await
            .expect("second, on the same connection");
        assert_eq!((b.status, b.body.as_slice()), (409, &b"{}"[..]));
        let seen = server.await.expect("server");
        let first = String::from_utf8(seen[0].clone()).expect("utf8");
        assert!(first.starts_with("POST /api/v1/users HTTP/1.1\r\nHost: 127.0.0.1:"));
        assert!(first.contains("\r\nAuthorization: Bearer t\r\n"));
        assert!(first.ends_with("Content-Length: 12\r\n\r\n{\"name\":\"x\"}"));
        assert!(String::from_utf8(seen[1].clone())
            .expect("utf8")
            .starts_with("GET /api/v1/users/7 HTTP/1.1\r\n"));
    }

    #[tokio::test]
    async fn a_base_url_with_a_path_goes_before_every_request_path() {
        // proves `--url http://host:port/shop/` sends `GET /shop/...`
        let (base, server) = canned(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"]).await;
        let client =
            HttpClient::new(&format!("{base}/shop/"), Duration::from_secs(5)).expect("client");
        let a = client
            .send(&Method::GET, "/api/v1/health", None, None)
            .await
            .expect("answer");
        assert_eq!(a.status, 200);
        let seen = server.await.expect("server");
        assert!(String::from_utf8(seen[0].clone())
            .expect("utf8")
            .starts_with("GET /shop/api/v1/health HTTP/1.1\r\n"));
    }

    #[tokio::test]
    async fn a_connection_the_server_closes_is_not_reused_and_a_bad_reply_is_an_error() {
        // proves `connection: close` is honoured and malformed or truncated replies are transport errors
        let (base, _server) = canned(vec![
            b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok",
        ])
        .await;
        let client = HttpClient::new(&base, Duration::from_secs(5)).expect("client");
        let a = client
            .send(&Method::GET, "/", None, None)
            .await
            .expect("answer");
        assert_eq!(a.status, 200);
        assert!(client.idle.lock().expect("lock").is_empty());

        let (base, _server) = canned(vec![
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
        ])
        .await;
        let client = HttpClient::new(&base, Duration::from_secs(5)).expect("client");
        assert!(matches!(
            client.send(&Method::GET, "/", None, None).await,
            Err(ExchangeError::Transport(_))
        ));
        assert!(HttpClient::new("https://example.com", Duration::from_secs(1)).is_err());
    }
}
